"""The runner's settings: typed, frozen views of a resolved config, with every default in one place.

A run's config is read once from ``integrations/<name>/configs/<dataset>.toml`` (plus ``--set`` overrides and the
command-line flags) into a plain dict: that dict is the record written to ``config.json`` and compared by
``rundir.fingerprint``. :meth:`RunSettings.from_config` turns it into the dataclasses below, which the runner reads
instead of the dict; a key a TOML file leaves out takes the default given here, and nowhere else.

Three tables stay open mappings because their keys belong to someone else: ``[model]`` (the baseline's constructor
keywords), ``[ftcl]`` (``FTCL``'s options, see :class:`FTCLSettings`) and ``[localization]`` (the fields of
``ftcl_plugin.localization.LocalizationConfig``, built by :meth:`RunSettings.localization_config`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ftcl_plugin.data.sampling import SAMPLINGS
from ftcl_plugin.evaluation import PRESETS
from ftcl_plugin.localization import LocalizationConfig

__all__ = ["BATCH_SAMPLERS", "SECTIONS", "CompareSettings", "DataSettings", "EvaluationSettings", "FTCLSettings",
           "MetaSettings", "OptimSettings", "PlotSettings", "RunSettings", "TrainSettings", "UpstreamSettings",
           "check_settings", "default_values"]

#: The batch constructions ``data.sampler`` names: shuffled batches; batches holding at least one same-class pair
#: (``ClassPairSampler``); W-TALC's batches, same-class pairs at (0, 1), (2, 3), ... then random videos
#: (``SimilarPairSampler``).
BATCH_SAMPLERS = ("random", "class_pair", "similar_pairs")
#: The stream the STPN reproduction trains in one ``--upstream`` run.
STREAMS = ("rgb", "flow")


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{key} must be one of {', '.join(allowed)}, but got {value!r}.")


@dataclass(frozen=True)
class DataSettings:
    """``[data]``: which data, how videos are sampled in time, how batches are drawn.

    Attributes:
        builtin: the built-in synthetic dataset used without ``--data``.
        size: its size preset.
        difficulty: its difficulty preset.
        train_segments: ``T`` of a training clip.
        train_sampling: how a training clip is sampled in time (``ftcl_plugin.data.sampling``).
        test_segments: ``T`` of a test video (ignored with ``"full"`` sampling).
        test_sampling: how a test video is sampled in time.
        sampler: how training batches are drawn (:data:`BATCH_SAMPLERS`).
        similar_pairs: same-class pairs at the head of each batch with ``sampler = "similar_pairs"``.
        input_scale: factor applied to the features before the model.
        skip_missing: leave out videos whose feature files are missing instead of stopping.
    """

    builtin: str = "thumos14-like"
    size: str = "small"
    difficulty: str = "standard"
    train_segments: int = 750
    train_sampling: str = "random"
    test_segments: int = 750
    test_sampling: str = "uniform"
    sampler: str = "random"
    similar_pairs: int = 3
    input_scale: float = 1.0
    skip_missing: bool = False

    def __post_init__(self) -> None:
        _choice("data.train_sampling", self.train_sampling, SAMPLINGS)
        _choice("data.test_sampling", self.test_sampling, SAMPLINGS)
        _choice("data.sampler", self.sampler, BATCH_SAMPLERS)


@dataclass(frozen=True)
class OptimSettings:
    """``[optim]``: Adam with L2-coupled weight decay and an optional step decay of the learning rate.

    Attributes:
        lr: the learning rate.
        batch_size: videos per batch (the global batch under DDP).
        weight_decay: Adam's weight decay.
        betas: Adam's betas.
        lr_decay_at: fractions of the run's epochs at which the rate is multiplied by ``lr_decay_factor``.
        lr_decay_factor: that factor.
    """

    lr: float
    batch_size: int
    weight_decay: float = 0.0
    betas: tuple[float, ...] = (0.9, 0.999)
    lr_decay_at: tuple[float, ...] = ()
    lr_decay_factor: float = 0.1


@dataclass(frozen=True)
class TrainSettings:
    """``[train]``: length, seed and evaluation schedule of a run.

    Attributes:
        epochs: training epochs.
        seed: seeds model init, dropout, batch order and temporal sampling.
        iterations: cap on optimizer steps (0: none).
        eval_every: evaluate every this many epochs (0: after the last one only).
    """

    epochs: int
    seed: int = 0
    iterations: int = 0
    eval_every: int = 0


@dataclass(frozen=True)
class CompareSettings:
    """``[compare]``: the paired protocol's lengths.

    Attributes:
        pretrain_epochs: epochs of the baseline pre-training both arms start from.
        finetune_epochs: epochs of each arm's fine-tuning.
    """

    pretrain_epochs: int = 1
    finetune_epochs: int = 1


@dataclass(frozen=True)
class EvaluationSettings:
    """``[evaluation]``.

    Attributes:
        preset: the tIoU thresholds and averages of ``ftcl_plugin.evaluation.detection_map``.
    """

    preset: str = "thumos14"

    def __post_init__(self) -> None:
        _choice("evaluation.preset", self.preset, tuple(PRESETS))


@dataclass(frozen=True)
class PlotSettings:
    """``[plot]``.

    Attributes:
        videos: test videos shown in ``plot.png``.
    """

    videos: int = 3


@dataclass(frozen=True)
class UpstreamSettings:
    """``[upstream]``: what only the ``--upstream`` drivers read.

    Attributes:
        dataset_name: W-TALC's dataset name (its files are ``<name>-I3D-JOINTFeatures.npy`` and ``<name>-Annotations``).
        stream: the stream the STPN reproduction trains (one per run, as its own code does).
    """

    dataset_name: str = "Thumos14reduced"
    stream: Literal["rgb", "flow"] = "rgb"

    def __post_init__(self) -> None:
        _choice("upstream.stream", self.stream, STREAMS)


@dataclass(frozen=True)
class FTCLSettings:
    """``[ftcl]``: whether FTCL is added, and the keywords of ``FTCL(feature_dim=E, **options)``.

    Attributes:
        enabled: add FTCL.
        options: every other key of the table, as it is (``variant``, ``fsd_weight``, ``warmup_steps``, the
            sub-tables ``fsd_loss`` / ``lcs_loss``, ...); FTCL's own defaults apply to what is absent.
    """

    enabled: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MetaSettings:
    """``[meta]``: where a run came from, set by the command line (not a TOML table).

    Attributes:
        baseline: the baseline's directory name.
        dataset: ``"thumos14"`` or ``"activitynet"`` (the config file).
        device: ``"cpu"`` or ``"cuda"``.
        data: the data as typed (``--data``) or ``builtin:<name>``.
        layout: the feature layout.
        data_root: the resolved data folder (set once the data is opened).
        upstream: the ``--upstream`` checkout.
        init_from: ``--init-from`` in ``--upstream`` mode.
    """

    baseline: str = ""
    dataset: str = "thumos14"
    device: str = "cpu"
    data: str = ""
    layout: str = "acmnet"
    data_root: str | None = None
    upstream: str | None = None
    init_from: str | None = None

    @property
    def synthetic(self) -> bool:
        """Whether the run uses the built-in synthetic dataset."""
        return self.data.startswith("builtin:")


#: The typed tables, by name.
SECTIONS: dict[str, type] = {"data": DataSettings, "optim": OptimSettings, "train": TrainSettings,
                             "compare": CompareSettings, "evaluation": EvaluationSettings, "plot": PlotSettings,
                             "upstream": UpstreamSettings, "meta": MetaSettings}
#: Tables kept as mappings (their keys belong to the baseline, FTCL and LocalizationConfig).
OPEN_SECTIONS = ("model", "ftcl", "localization")


@dataclass(frozen=True)
class RunSettings:
    """A resolved config, typed: one attribute per table.

    Build it with :meth:`from_config`; the dict it was built from stays the run's record (``config.json``).

    Example:
        >>> settings = RunSettings.from_config({"optim": {"lr": 1e-3, "batch_size": 8}, "train": {"epochs": 2}})
        >>> settings.optim.lr, settings.train.seed, settings.data.test_sampling, settings.ftcl.enabled
        (0.001, 0, 'uniform', True)
    """

    data: DataSettings
    optim: OptimSettings
    train: TrainSettings
    compare: CompareSettings
    evaluation: EvaluationSettings
    plot: PlotSettings
    upstream: UpstreamSettings
    meta: MetaSettings
    ftcl: FTCLSettings
    model: Mapping[str, Any]
    localization: Mapping[str, Any]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RunSettings:
        """The settings of a resolved config (TOML tables, overrides and flags applied; a ``run`` table is ignored).

        Args:
            config: the config dict.

        Returns:
            The settings.

        Raises:
            ValueError: naming the key, for an unknown key or table, a missing required key (``optim.lr``,
                ``optim.batch_size``, ``train.epochs``), a value of the wrong type, or a value outside a closed set.
        """
        unknown = sorted(set(config) - set(SECTIONS) - set(OPEN_SECTIONS) - {"run"})
        if unknown:
            raise ValueError(f"unknown config table(s) {', '.join(map(repr, unknown))}; the tables are "
                             f"{', '.join(sorted([*SECTIONS, *OPEN_SECTIONS]))}.")
        tables = {name: _table(config, name) for name in (*SECTIONS, *OPEN_SECTIONS)}
        typed = {name: _build(section, tables[name], name) for name, section in SECTIONS.items()}
        ftcl = dict(tables["ftcl"])
        enabled = ftcl.pop("enabled", FTCLSettings.enabled)
        if not isinstance(enabled, bool):
            raise ValueError(f"ftcl.enabled must be true or false, but got {enabled!r}.")
        return cls(**typed, ftcl=FTCLSettings(enabled=enabled, options=types.MappingProxyType(ftcl)),
                   model=types.MappingProxyType(dict(tables["model"])),
                   localization=types.MappingProxyType(dict(tables["localization"])))

    def localization_config(self, **overrides: Any) -> LocalizationConfig:
        """``LocalizationConfig`` of the ``[localization]`` table, with ``overrides`` laid over it.

        Args:
            **overrides: fields a baseline's inference fixes (``Baseline.localization_overrides``).

        Returns:
            The localization settings.

        Raises:
            ValueError, TypeError: from ``LocalizationConfig`` for an unknown or invalid field.
        """
        return LocalizationConfig(**(dict(self.localization) | overrides))


def _table(config: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    table = config.get(name, {})
    if not isinstance(table, Mapping):
        raise ValueError(f"{name} must be a table, but got {table!r}.")
    return table


def _build(section: type, table: Mapping[str, Any], name: str) -> Any:
    hints = typing.get_type_hints(section)
    fields = {item.name: item for item in dataclasses.fields(section)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ValueError(f"unknown config key(s) {', '.join(f'{name}.{key}' for key in unknown)}; [{name}] has "
                         f"{', '.join(fields)}.")
    values = {}
    for key, item in fields.items():
        if key in table:
            values[key] = _coerce(f"{name}.{key}", hints[key], table[key])
        elif item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING:
            raise ValueError(f"{name}.{key} is missing; every config must set it.")
    return section(**values)


def _coerce(key: str, annotation: Any, value: Any) -> Any:
    """``value`` as the field's type: an integer is accepted where a float is expected, a list where a tuple is."""
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key} must be a list, but got {value!r}.")
        return tuple(_coerce(key, arguments[0], item) for item in value)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in arguments:
            return None
        return _coerce(key, next(a for a in arguments if a is not type(None)), value)
    if origin is Literal:
        return value  # checked against its set by the section's __post_init__
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if annotation in (str, bool) and type(value) is annotation:
        return value
    kind = {float: "a number", int: "an integer", str: "a string", bool: "true or false"}[annotation]
    raise ValueError(f"{key} must be {kind}, but got {value!r}.")


def default_values() -> dict[str, Any]:
    """``{"section.key": default}`` for every typed key that has a default (the keys ``--set`` may add).

    ``[meta]`` is left out: the command line sets it, not the user.

    Returns:
        The defaults, tuples as lists (as TOML and ``config.json`` hold them).
    """
    values: dict[str, Any] = {"ftcl.enabled": FTCLSettings.enabled}
    for name, section in SECTIONS.items():
        if name == "meta":
            continue
        for item in dataclasses.fields(section):
            if item.default is not dataclasses.MISSING:
                default = item.default
                values[f"{name}.{item.name}"] = list(default) if isinstance(default, tuple) else default
    return values


def check_settings(config: Mapping[str, Any]) -> RunSettings:
    """Check a resolved config before a run starts, including what is read only late (sampling, evaluation
    preset, localization).

    Args:
        config: the resolved config.

    Returns:
        Its settings.

    Raises:
        ValueError: naming the setting, its allowed values and what it got.
    """
    settings = RunSettings.from_config(config)
    try:
        settings.localization_config()
    except (ValueError, TypeError) as error:
        raise ValueError(f"the [localization] settings are not valid: {error}") from None
    return settings
