"""Config files of the integrations: TOML read with the standard library, overlays and dotted overrides."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import tomllib

__all__ = ["INTEGRATIONS_ROOT", "config_path", "deep_merge", "load_config", "parse_override", "set_dotted"]

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


def dump_config(config: dict[str, Any], path: Path) -> None:
    """Write the resolved config as JSON (the standard library reads TOML but does not write it).

    Args:
        config: the resolved config.
        path: the output file.
    """
    path.write_text(json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")
