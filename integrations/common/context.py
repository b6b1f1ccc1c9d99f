"""The run context shared by training, evaluation and the command line: names, data, model factory, device.

``prepare`` opens the data, imports the baseline and sets up the (optional) process group; ``make_contrastive``
builds FTCL from the ``[ftcl]`` settings; :class:`RunResult` is what one training run hands to the outputs and the
paired protocol.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ftcl_plugin import (
    FTCL,
    ActionSelector,
    FSDLoss,
    FSDSimilarity,
    LCSLoss,
    LCSSimilarity,
    SoftDTWSimilarity,
)
from ftcl_plugin.data import builtin, open_dataset

from .baseline import Baseline
from .files import RunError
from .settings import DataSettings, FTCLSettings, RunSettings

__all__ = ["BUILTIN_NAMES", "DISPLAY_NAMES", "Context", "DataError", "RunResult", "build_ftcl", "builtin_root",
           "make_contrastive", "prepare"]

DISPLAY_NAMES = {"acmnet": "ACM-Net", "cola": "CoLA", "wtalc": "W-TALC", "stpn": "STPN"}
BUILTIN_NAMES = {"thumos14": "thumos14-like", "activitynet": "activitynet-like"}


class DataError(RunError):
    """A ``--data`` folder that cannot be read as the chosen layout."""


@dataclass
class Context:
    """Everything a training run needs besides its output folder: config, data, model factory, device.

    Attributes:
        name: the baseline's directory name.
        config: the resolved config: the record written to ``config.json``; read it through :attr:`settings`.
        root: the feature root (the built-in dataset's cache folder or ``--data``).
        layout: the feature layout.
        test: the test split (uniform sampling).
        class_names: the dataset's class names.
        feature_dim: ``D``.
        device: the torch device.
        rank: this process's rank (0 without DDP).
        world: the number of processes (1 without DDP).
        ddp_gather: mine FTCL pairs across ranks.
        build_model: ``integrations.<name>.model.build_model``.
    """

    name: str
    config: dict[str, Any]
    root: Path
    layout: str
    test: Any
    class_names: list[str]
    feature_dim: int
    device: torch.device
    rank: int = 0
    world: int = 1
    ddp_gather: bool = False
    build_model: Callable[..., Baseline] | None = None
    _train: Any = None

    @property
    def settings(self) -> RunSettings:
        """The typed view of :attr:`config` (:class:`~integrations.common.settings.RunSettings`).

        Parsed on each access, so it always reflects the record (a caller may set a key of ``config`` after
        :func:`prepare`, as ``run_experiments.py`` does for ``compare.finetune_epochs``); read it once per function.
        """
        return RunSettings.from_config(self.config)

    def train_split(self, epoch: int) -> Any:
        """The training split, its random temporal sampling seeded by (seed, epoch, video) so runs resume exactly.

        Args:
            epoch: the epoch number (0-based).

        Returns:
            The dataset object (opened once, re-seeded per epoch).
        """
        if self._train is None:
            settings = self.settings
            self._train = open_dataset(
                self.root, "train", layout=self.layout, num_segments=settings.data.train_segments,
                sampling=settings.data.train_sampling, seed=settings.train.seed,
                skip_missing=settings.data.skip_missing,
            )
        self._train.set_epoch(epoch)
        return self._train


def prepare(name: str, config: dict[str, Any], *, data: Path | None, layout: str | None, device: str,
            ddp_gather: bool = False) -> Context:
    """Open the data, import the baseline and set up the (optional) process group.

    Args:
        name: the baseline's directory name.
        config: the resolved config.
        data: a real dataset's feature root, or ``None`` for the built-in synthetic dataset.
        layout: the layout of ``data``.
        device: ``"cpu"`` or ``"cuda"``.
        ddp_gather: mine FTCL pairs across ranks.

    Returns:
        The run context.

    Raises:
        DataError: if ``data`` cannot be opened as ``layout`` (the loader's message, with the folder and layout).
    """
    data_settings = RunSettings.from_config(config).data
    if data is None:
        layout = "acmnet"
        root = builtin_root(data_settings, layout)
    else:
        root, layout = data, layout or "acmnet"
    try:
        test = open_dataset(root, "test", layout=layout, num_segments=data_settings.test_segments,
                            sampling=data_settings.test_sampling, skip_missing=data_settings.skip_missing)
        feature_dim = int(test[0].features.shape[-1])
    except (OSError, ValueError, KeyError, IndexError) as error:
        if data is None:
            raise
        raise DataError(f"argument --data: cannot read {data} as the {layout} layout: {error}") from None
    # The resolved root names the built-in dataset's generator version, so a run (and the reuse of a shared
    # pre-training) is tied to the exact data it saw.
    config.setdefault("meta", {})["data_root"] = str(Path(root).resolve())
    rank, world = _init_distributed(device)
    module = importlib.import_module(f"integrations.{name}.model")
    if device == "cuda":
        torch_device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    else:
        torch_device = torch.device("cpu")
    return Context(name=name, config=config, root=root, layout=layout, test=test,
                   class_names=list(test.class_names), feature_dim=feature_dim, device=torch_device,
                   rank=rank, world=world, ddp_gather=ddp_gather, build_model=module.build_model)


def _init_distributed(device: str) -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def builtin_root(data: DataSettings, layout: str) -> Path:
    """The built-in synthetic dataset named by the ``[data]`` settings, in ``layout`` (generated on first use).

    Args:
        data: the ``[data]`` settings (``builtin``, ``size``, ``difficulty``).
        layout: the feature layout to write it in.

    Returns:
        Its cache folder.
    """
    return Path(builtin(data.builtin, size=data.size, difficulty=data.difficulty, layout=layout))


#: FTCL's own default variant, which the ``fsd_loss`` / ``lcs_loss`` sub-tables follow when ``variant`` is not set.
_DEFAULT_VARIANT = inspect.signature(FTCL).parameters["variant"].default


def build_ftcl(settings: FTCLSettings, embedding_dim: int) -> nn.Module:
    """The FTCL module of the ``[ftcl]`` settings: ``FTCL(feature_dim=E, **settings.options)``.

    Every option goes to ``FTCL`` as it is (``variant``, ``fsd_weight``, ``lcs_weight``, ``warmup_steps``,
    ``max_grad_ratio``, ...), except the sub-tables ``fsd_loss`` and ``lcs_loss``, which become
    ``FSDLoss(E, variant=..., **fsd_loss)`` and ``LCSLoss(variant=..., **lcs_loss)`` (e.g. the paper's exact
    equations: ``fsd_loss = {length_normalized = false}``, ``lcs_loss = {min_match_fraction = 0.0}``), and
    ``lcs_selector``, which becomes ``ActionSelector(**lcs_selector)`` (the paper's top-10 snippets on
    ActivityNet: ``lcs_selector = {k = 10}``). TOML has no null, so ``max_grad_ratio = 0`` stands for ``None``
    (no cap).

    Args:
        settings: the ``[ftcl]`` settings.
        embedding_dim: ``E``.

    Returns:
        ``FTCL(feature_dim=E, ...)``.
    """
    options = dict(settings.options)
    variant = options.get("variant", _DEFAULT_VARIANT)
    if "fsd_loss" in options:
        options["fsd_loss"] = FSDLoss(embedding_dim, variant=variant, **_with_measure(options["fsd_loss"]))
    if "lcs_loss" in options:
        options["lcs_loss"] = LCSLoss(variant=variant, **_with_measure(options["lcs_loss"]))
    if "lcs_selector" in options:  # e.g. the paper's top-10 on ActivityNet: lcs_selector = {k = 10}
        options["lcs_selector"] = ActionSelector(**options["lcs_selector"])
    if options.get("max_grad_ratio") == 0:
        options["max_grad_ratio"] = None
    return FTCL(feature_dim=embedding_dim, **options)


def _with_measure(table: dict[str, Any]) -> dict[str, Any]:
    """A loss's settings with ``similarity = "fsd" | "lcs" | "soft_dtw"`` turned into that measure.

    The LCS measure keeps the liveness floor of FTCL's own LCS term (``min_match_fraction``, read off a default
    ``FTCL``), so a measure swap changes only the measure; the others take their defaults.
    """
    floor = FTCL(feature_dim=1, fsd_weight=0.0).lcs_loss.min_match_fraction
    measures = {"fsd": FSDSimilarity, "lcs": lambda: LCSSimilarity(min_match_fraction=floor),
                "soft_dtw": SoftDTWSimilarity}
    if "similarity" not in table:
        return table
    name = table["similarity"]
    if name not in measures:
        raise ValueError(f"`similarity` must be one of {', '.join(map(repr, measures))}, but got {name!r}.")
    return table | {"similarity": measures[name]()}


def make_contrastive(ctx: Context, embedding_dim: int) -> nn.Module:
    """The FTCL module of the run's ``[ftcl]`` settings (:func:`build_ftcl`).

    Args:
        ctx: the run context.
        embedding_dim: ``E``.

    Returns:
        ``FTCL(feature_dim=E, ...)``.
    """
    return build_ftcl(ctx.settings.ftcl, embedding_dim)


@dataclass
class RunResult:
    """What one training run produced.

    Attributes:
        out: its output folder.
        last: the last epoch's evaluation (``detection_map`` result plus ``"cmap"``).
        best: the best-on-test evaluation and its epoch, when asked for.
        history: the per-epoch metrics rows.
        steps: the number of optimizer steps taken.
        seconds: wall time of training and evaluation.
        label: the row name.
        activity: FTCL's per-step values averaged over the run (``ftcl_grad_ratio``, ``lcs_active_fraction``, ...;
            the activity fractions over the steps with positive pairs); empty without FTCL.
    """

    out: Path
    last: dict[str, Any]
    best: dict[str, Any] | None
    history: list[dict[str, Any]]
    steps: int
    seconds: float
    label: str = ""
    activity: dict[str, float] = field(default_factory=dict)
