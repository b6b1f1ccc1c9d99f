"""File-level helpers shared by the loaders, writers and ``ftcl-data check``: ground truth, splits, arrays.

Every failure here raises ``ValueError`` naming the file or video, so a bad dataset never surfaces as an
unreadable traceback from deep inside numpy or json.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

SECONDS_PER_SNIPPET = 16 / 25  # 16-frame snippets at 25 fps, the I3D time base of every baseline
SPLITS = ("train", "test")
FLOAT_KINDS = ("f",)


def load_ground_truth(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a ``gt.json`` (ActivityNet layout); return the parsed dict."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Ground truth file {path} does not exist.")
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"Ground truth file {path} is not valid JSON: {error}") from None
    validate_ground_truth(data, str(path))
    return data


def validate_ground_truth(data: Any, source: str) -> None:
    """Raise ``ValueError`` naming ``source`` and the video unless ``data`` follows the gt.json layout."""
    if not isinstance(data, Mapping) or not isinstance(data.get("database"), Mapping):
        raise ValueError(f"{source} must be a JSON object with a 'database' object of videos.")
    for video, entry in data["database"].items():
        where = f"{source}: video {video!r}"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where} must be an object with 'subset', 'duration' and 'annotations'.")
        if not isinstance(entry.get("subset"), str):
            raise ValueError(f"{where} has no string 'subset' (e.g. 'validation' or 'test').")
        duration = entry.get("duration")
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not duration > 0 \
                or not math.isfinite(duration):
            raise ValueError(f"{where} must have a positive 'duration' in seconds, but got {duration!r}.")
        annotations = entry.get("annotations", [])
        if not isinstance(annotations, list):
            raise ValueError(f"{where} has 'annotations' that is not a list.")
        for annotation in annotations:
            segment = annotation.get("segment") if isinstance(annotation, Mapping) else None
            label = annotation.get("label") if isinstance(annotation, Mapping) else None
            if (not isinstance(segment, (list, tuple)) or len(segment) != 2
                    or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                               for x in segment)):
                raise ValueError(f"{where} has an annotation without a finite [start, end] 'segment': {annotation!r}.")
            if not isinstance(label, str) or not label:
                raise ValueError(f"{where} has an annotation without a string 'label': {annotation!r}.")


def class_names_of(ground_truth: Mapping[str, Any]) -> list[str]:
    """Sorted class names of every annotation in the ground truth (all subsets), so ids agree across layouts."""
    return sorted({a["label"] for entry in ground_truth["database"].values() for a in entry.get("annotations", [])})


def labels_of(ground_truth: Mapping[str, Any], videos: Iterable[str], class_names: list[str]) -> np.ndarray:
    """(N, C) float32 multi-hot labels from every annotation of each video."""
    index = {name: i for i, name in enumerate(class_names)}
    videos = list(videos)
    labels = np.zeros((len(videos), len(class_names)), dtype=np.float32)
    for row, video in enumerate(videos):
        for annotation in ground_truth["database"][video].get("annotations", []):
            labels[row, index[annotation["label"]]] = 1.0
    return labels


def read_split(path: Path) -> list[str]:
    """Video names of a split file, one per line; blank lines and surrounding spaces ignored."""
    if not path.is_file():
        raise ValueError(f"Split file {path} does not exist.")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"Split file {path} cannot be read: {error}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def write_split(path: Path, videos: Iterable[str]) -> None:
    path.write_text("".join(f"{v}\n" for v in videos), encoding="utf-8")


def write_json(path: Path, data: Any) -> None:
    # No indent: the C encoder only runs without one, and ActivityNet-sized ground truths are large.
    path.write_text(json.dumps(data), encoding="utf-8")


def feature_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a ``.npy`` file read from its header only (memory-mapped, no data read)."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"Feature file {path} does not exist.") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"Feature file {path} is not a readable .npy array: {error}") from None
    if not isinstance(array, np.ndarray):
        raise ValueError(f"Feature file {path} must hold one array, but holds {type(array).__name__}.")
    return tuple(array.shape), array.dtype


def check_feature_array(array: Any, source: str, *, feature_dim: int | None = None) -> np.ndarray:
    """Validate a (L, D) floating feature array with L >= 1 and finite values; return it as float32."""
    if not isinstance(array, np.ndarray) or array.dtype.kind not in FLOAT_KINDS:
        kind = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
        raise ValueError(f"{source} must hold floating-point features, but has dtype {kind}.")
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"{source} must have shape (T, D) with T >= 1, but has shape {tuple(array.shape)}.")
    if feature_dim is not None and array.shape[1] != feature_dim:
        raise ValueError(f"{source} must have feature dim D={feature_dim} like the other videos, "
                         f"but has shape {tuple(array.shape)}.")
    array = np.asarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        rows = np.flatnonzero(~np.isfinite(array).all(axis=1))
        raise ValueError(f"{source} contains NaN or inf (first bad snippet {int(rows[0])} of {array.shape[0]}).")
    return array


def load_features(path: Path, *, feature_dim: int | None = None) -> np.ndarray:
    """Load one (L, D) ``.npy`` file as float32, never unpickling; every failure names the file."""
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"Feature file {path} does not exist.") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"Feature file {path} is not a readable .npy array: {error}") from None
    return check_feature_array(array, f"Feature file {path}", feature_dim=feature_dim)


def load_pickled(path: Path) -> np.ndarray:
    """Load a W-TALC object array. ``allow_pickle=True`` is used only here, for files the user points at."""
    if not path.is_file():
        raise ValueError(f"W-TALC file {path} does not exist.")
    try:
        return np.load(path, allow_pickle=True, encoding="latin1")
    except Exception as error:  # unpickling can raise nearly anything on a corrupt file
        raise ValueError(f"W-TALC file {path} is not a readable .npy array: {error}") from None


def as_text(value: Any) -> str:
    """W-TALC stores names as bytes or str; return str."""
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8")
    return str(value)


def atomic_save(path: Path, array: np.ndarray) -> None:
    """``np.save`` through a temporary name then rename, so a crash never leaves a truncated file."""
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array, allow_pickle=array.dtype == object)
    os.replace(tmp, path)
