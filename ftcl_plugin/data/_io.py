"""File-level helpers shared by the loaders, writers and ``ftcl-data check``: ground truth, splits, arrays.

Every failure here raises ``ValueError`` naming the file or video, so a bad dataset never surfaces as an
unreadable traceback from deep inside numpy or json.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .npy import load_npy, npy_header, open_regular

SECONDS_PER_SNIPPET = 16 / 25  # 16-frame snippets at 25 fps, the I3D time base of every baseline
SPLITS = ("train", "test")
FLOAT_KINDS = ("f",)


def load_ground_truth(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a ``gt.json`` (ActivityNet layout); return the parsed dict."""
    data = read_ground_truth_json(path)
    validate_ground_truth(data, str(path))
    return data


def read_ground_truth_json(path: str | os.PathLike) -> Any:
    """Parse a ``gt.json`` without validating it; ``ValueError`` naming the file if it cannot be read or parsed."""
    path = Path(path)
    try:
        with open_regular(path, "Ground truth file") as handle:
            return json.loads(handle.read().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ValueError(f"Ground truth file {path} is not valid JSON: {error}") from None


def validate_ground_truth(data: Any, source: str) -> None:
    """Raise ``ValueError`` naming ``source`` and the video unless ``data`` follows the gt.json layout.

    The message is the first problem, with a count of the others (``ftcl-data check`` lists them all).
    """
    problems = ground_truth_problems(data, source)
    if problems:
        more = len(problems) - 1
        suffix = f" ({more} more problem(s) in {source}; `ftcl-data check` lists them all.)" if more else ""
        raise ValueError(problems[0][1] + suffix)


def ground_truth_problems(data: Any, source: str) -> list[tuple[str | None, str]]:
    """Every way ``data`` departs from the gt.json layout, as ``(video or None, message)`` pairs (empty if valid)."""
    if not isinstance(data, Mapping) or not isinstance(data.get("database"), Mapping):
        return [(None, f"{source} must be a JSON object with a 'database' object of videos.")]
    problems: list[tuple[str | None, str]] = []
    for video, entry in data["database"].items():
        where = f"{source}: video {video!r}"
        if not isinstance(entry, Mapping):
            problems.append((video, f"{where} must be an object with 'subset', 'duration' and 'annotations'."))
            continue
        if not isinstance(entry.get("subset"), str):
            problems.append((video, f"{where} has no string 'subset' (e.g. 'validation' or 'test')."))
        duration = entry.get("duration")
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not duration > 0 \
                or not math.isfinite(duration):
            problems.append((video, f"{where} must have a positive 'duration' in seconds, but got {duration!r}."))
        annotations = entry.get("annotations", [])
        if not isinstance(annotations, list):
            problems.append((video, f"{where} has 'annotations' that is not a list."))
            continue
        for annotation in annotations:
            segment = annotation.get("segment") if isinstance(annotation, Mapping) else None
            label = annotation.get("label") if isinstance(annotation, Mapping) else None
            if (not isinstance(segment, (list, tuple)) or len(segment) != 2
                    or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                               for x in segment)):
                problems.append((video, f"{where} has an annotation without a finite [start, end] 'segment': "
                                        f"{annotation!r}."))
            if not isinstance(label, str) or not label:
                problems.append((video, f"{where} has an annotation without a string 'label': {annotation!r}."))
    return problems


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
    try:
        with open_regular(path, "Split file") as handle:
            text = handle.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"Split file {path} cannot be read: {error}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def write_split(path: Path, videos: Iterable[str]) -> None:
    path.write_text("".join(f"{v}\n" for v in videos), encoding="utf-8")


def write_json(path: Path, data: Any) -> None:
    # No indent: the C encoder only runs without one, and ActivityNet-sized ground truths are large.
    path.write_text(json.dumps(data), encoding="utf-8")


def feature_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a ``.npy`` file read from its header only (no data read, nothing unpickled)."""
    return npy_header(path, kind="Feature file")


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
    array = load_npy(path, kind="Feature file")
    return check_feature_array(array, f"Feature file {path}", feature_dim=feature_dim)


def load_object_array(path: Path) -> np.ndarray:
    """Load a W-TALC array (object arrays through the restricted unpickler of :func:`load_npy`)."""
    # latin1: W-TALC's files were pickled by Python 2, whose str this reads as text
    return load_npy(path, allow_objects=True, encoding="latin1", kind="W-TALC file")


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
