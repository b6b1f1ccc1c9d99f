"""Config files of the integrations: TOML read with the standard library, overlays and checked dotted overrides."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import inspect
import math
from pathlib import Path
from typing import Any

import tomllib

from ftcl_plugin import FTCL, FSDLoss, LCSLoss
from ftcl_plugin.localization import LocalizationConfig

from .settings import default_values

__all__ = ["INTEGRATIONS_ROOT", "apply_overrides", "check_override", "config_path", "deep_merge",
           "known_keys", "load_config", "parse_override", "set_dotted"]

INTEGRATIONS_ROOT = Path(__file__).resolve().parent.parent


def config_path(name: str, dataset: str) -> Path:
    """Path of ``integrations/<name>/configs/<dataset>.toml``.

    Args:
        name: the baseline's directory name (``"acmnet"``, ...).
        dataset: ``"thumos14"`` or ``"activitynet"``.

    Returns:
        The path (which may not exist).
    """
    return INTEGRATIONS_ROOT / name / "configs" / f"{dataset}.toml"


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """A new dict with ``overlay`` merged into ``base`` table by table (neither input is changed).

    Args:
        base: the base config.
        overlay: tables and values that replace or extend ``base``.

    Returns:
        The merged config.
    """
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_config(name: str, dataset: str, *, builtin_data: bool) -> dict[str, Any]:
    """Read a baseline's config and apply its ``[builtin]`` overlay when training on the built-in dataset.

    The top level of each config holds the paper's recipe for real features; the ``[builtin]`` table holds the
    few settings (training length, T, input scale) that make the built-in synthetic benchmark fit a CPU budget.

    Args:
        name: the baseline's directory name.
        dataset: ``"thumos14"`` or ``"activitynet"``.
        builtin_data: whether the run uses the built-in synthetic dataset.

    Returns:
        The config dict (without the ``builtin`` table).

    Raises:
        FileNotFoundError: if the config file does not exist.
    """
    path = config_path(name, dataset)
    if not path.is_file():
        raise FileNotFoundError(f"no config for baseline {name!r} and dataset {dataset!r}: {path} does not exist.")
    with path.open("rb") as handle:
        config = tomllib.load(handle)
    overlay = config.pop("builtin", {})
    if builtin_data:
        config = deep_merge(config, overlay)
    return config


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse one ``--set section.key=value`` override; the value is read as TOML (falling back to a string).

    Args:
        text: ``"section.key=value"``.

    Returns:
        ``(path, value)`` with ``path`` the list of keys.

    Raises:
        ValueError: if the text has no ``=`` or an empty key.
    """
    key, sep, raw = text.partition("=")
    path = [part.strip() for part in key.split(".")]
    if not sep or not all(path):
        raise ValueError(f"an override must look like section.key=value, but got {text!r}.")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return path, value


def set_dotted(config: dict[str, Any], path: list[str], value: Any) -> None:
    """Set ``config[path[0]][path[1]]... = value`` in place, creating tables as needed.

    Args:
        config: the config being built (owned by the caller).
        path: the keys.
        value: the value.

    Raises:
        ValueError: if a key on the way names a value, not a table.
    """
    node = config
    for key in path[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ValueError(f"cannot set {'.'.join(path)}: {key!r} is a value, not a table.")
        node = child
    node[path[-1]] = value


# --------------------------------------------------------------------------------------------------
# which keys an override may set, and with which type


#: Lower bounds of the numbers whose out-of-range values would otherwise fail deep inside training.
LOWER_BOUNDS: dict[str, tuple[float, bool]] = {  # key -> (bound, inclusive)
    "optim.lr": (0.0, False), "optim.weight_decay": (0.0, True), "optim.batch_size": (1, True),
    "train.epochs": (1, True), "train.iterations": (0, True), "train.eval_every": (0, True),
    "ftcl.warmup_steps": (0, True), "ftcl.max_grad_ratio": (0.0, True), "compare.pretrain_epochs": (1, True),
    "compare.finetune_epochs": (1, True),
}


def _example_of(annotation: Any) -> Any:
    """An example value for a parameter whose default is ``None``, from its annotation text (``"float | None"``)."""
    text = str(annotation)
    for word, example in (("bool", False), ("float", 0.0), ("int", 0), ("str", ""), ("Literal", "")):
        if word in text:
            return example
    return None


def _library_keys() -> dict[str, Any]:
    """``ftcl.*`` from the ``FTCL`` constructor (``ftcl.fsd_loss.*`` / ``ftcl.lcs_loss.*`` from the losses'), and
    ``localization.*`` from ``LocalizationConfig``'s fields."""
    keys: dict[str, Any] = {}
    for prefix, callable_, skip in (("ftcl.", FTCL, 2), ("ftcl.fsd_loss.", FSDLoss, 2), ("ftcl.lcs_loss.", LCSLoss, 1)):
        for parameter in list(inspect.signature(callable_.__init__).parameters.values())[skip:]:
            example = parameter.default if parameter.default is not None else _example_of(parameter.annotation)
            if example is not None and example is not inspect.Parameter.empty:
                keys[f"{prefix}{parameter.name}"] = example
    for field in dataclasses.fields(LocalizationConfig):
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        example = default if default is not None else _example_of(field.type)
        keys[f"localization.{field.name}"] = list(example) if isinstance(example, tuple) else example
    return keys


def known_keys(config: dict[str, Any]) -> dict[str, Any]:
    """Every ``section.key`` an override may set, with the value that gives its type.

    The keys are those of the baseline's TOML (with their values), the typed settings' other keys with their
    defaults (:func:`~integrations.common.settings.default_values`), the ``FTCL`` constructor's options under
    ``ftcl.`` and the fields of ``LocalizationConfig`` under ``localization.``.

    Args:
        config: a config as :func:`load_config` returns it (before overrides).

    Returns:
        ``{"section.key": example value}``.
    """
    keys = {**default_values(), **_library_keys()}

    def walk(table: dict[str, Any], prefix: str) -> None:
        for key, value in table.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                keys[f"{prefix}{key}"] = value

    walk({k: v for k, v in config.items() if isinstance(v, dict)}, "")
    return keys


def _kind(example: Any) -> str:
    if isinstance(example, bool):
        return "true or false"
    if isinstance(example, int):
        return "an integer"
    if isinstance(example, float):
        return "a number"
    if isinstance(example, str):
        return "a string"
    return "a list"


def _fits(example: Any, value: Any) -> bool:
    if isinstance(example, bool):
        return isinstance(value, bool)
    if isinstance(example, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(example, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(example, str):
        return isinstance(value, str)
    if isinstance(example, (list, tuple)):
        # Items are checked against the first default item (the lists here are homogeneous).
        return isinstance(value, list) and (not example or all(_fits(example[0], item) for item in value))
    return True


def check_override(known: dict[str, Any], path: list[str], value: Any) -> Any:
    """Check one override against the known keys and the type of their values; return the value to set.

    Args:
        known: :func:`known_keys` of the config.
        path: the dotted key as a list.
        value: the parsed value.

    Returns:
        The value, with integers turned into floats where the key holds a float.

    Raises:
        ValueError: for an unknown key (with the closest known keys), a table set as a value, a value of the
            wrong type, or a number out of range.

    Example:
        >>> check_override({"optim.lr": 1e-3}, ["optim", "lr"], 1)
        1.0
        >>> check_override({"optim.lr": 1e-3}, ["optim", "lr"], "abc")
        Traceback (most recent call last):
        ...
        ValueError: optim.lr must be a number (like its default 0.001), but got 'abc'.
    """
    key = ".".join(path)
    if key not in known:
        below = sorted(k for k in known if k.startswith(key + "."))
        if below:
            raise ValueError(f"{key} is a table, not a value; set one of its keys ({', '.join(below[:6])}).")
        section = path[0]
        siblings = sorted(k for k in known if k.startswith(section + "."))
        if siblings:  # a known section: compare the key alone, or the shared prefix makes everything "close"
            names = {k[len(section) + 1:]: k for k in siblings}
            close = [names[n] for n in difflib.get_close_matches(".".join(path[1:]), list(names), n=3, cutoff=0.6)]
        else:
            close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.6)
        hint = (f"did you mean {' or '.join(close)}?" if close else
                f"[{section}] has {', '.join(k[len(section) + 1:] for k in siblings)}." if siblings else
                f"the sections are {', '.join(sorted({k.split('.')[0] for k in known}))}.")
        raise ValueError(f"unknown config key {key!r}; {hint}")
    example = known[key]
    if not _fits(example, value):
        raise ValueError(f"{key} must be {_kind(example)} (like its default {_show(example)}), but got "
                         f"{_show(value)}.")
    if isinstance(example, float) and not isinstance(example, bool):
        value = float(value)
    if key in LOWER_BOUNDS and isinstance(value, (int, float)):
        bound, inclusive = LOWER_BOUNDS[key]
        ok = math.isfinite(value) and (value >= bound if inclusive else value > bound)
        if not ok:
            relation = ">=" if inclusive else ">"
            raise ValueError(f"{key} must be a finite number {relation} {bound}, but got {_show(value)}.")
    return value


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value).replace("True", "true").replace("False", "false")


def apply_overrides(config: dict[str, Any], texts: list[str]) -> None:
    """Apply ``--set section.key=value`` overrides in order, each checked by :func:`check_override`.

    Args:
        config: the config (changed in place; owned by the caller).
        texts: the overrides as typed.

    Raises:
        ValueError: naming the override, for any malformed, unknown or ill-typed one.
    """
    known = known_keys(config)
    for text in texts:
        path, value = parse_override(text)
        try:
            value = check_override(known, path, value)
        except ValueError as error:
            raise ValueError(f"{text!r}: {error}") from None
        set_dotted(config, path, value)
