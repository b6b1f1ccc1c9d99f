"""Reading and validating ground truth and predictions into flat numpy columns.

Every message names the video and the field at fault, so a bad results file never ends in a bare traceback.
JSON has to be walked once per prediction to flatten it; everything after the flattening is vectorised.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple, Union

import numpy as np
import pandas as pd

GroundTruthLike = Union[str, "os.PathLike[str]", Mapping[str, Any]]
PredictionsLike = Union[str, "os.PathLike[str]", Mapping[str, Any], pd.DataFrame]
UnknownVideos = Literal["false_positive", "error", "ignore"]

PREDICTION_COLUMNS = ("video", "t_start", "t_end", "label", "score")
# ActivityNet's own DataFrame spells three of the columns differently; accept both spellings.
_REFERENCE_COLUMN_NAMES = {"video-id": "video", "t-start": "t_start", "t-end": "t_end"}


class GroundTruth(NamedTuple):
    """One subset of a gt.json, flattened (one row per annotation, in file order)."""

    subset: str
    classes: list[str]  # in order of first appearance, as ActivityNet's evaluator indexes them
    videos: list[str]  # every video of the subset, annotated or not
    video: np.ndarray  # (G,) int64 index into ``videos``
    label: np.ndarray  # (G,) int64 index into ``classes``
    t_start: np.ndarray  # (G,) float64 seconds
    t_end: np.ndarray  # (G,) float64 seconds


class Predictions(NamedTuple):
    """Predictions flattened to columns (one row per prediction, in input order)."""

    video: np.ndarray  # (N,) object (str)
    t_start: np.ndarray  # (N,) float64
    t_end: np.ndarray  # (N,) float64
    label: np.ndarray  # (N,) object (str)
    score: np.ndarray  # (N,) float64


def _read_json(source: str | os.PathLike[str], name: str) -> Any:
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"`{name}`: cannot read {str(path)!r} ({error.strerror or error}).") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"`{name}`: {str(path)!r} is not valid JSON ({error}).") from None


def load_ground_truth(ground_truth: GroundTruthLike, subset: str) -> GroundTruth:
    """Flatten the ``subset`` of a gt.json (path or already-loaded dict)."""
    data = _read_json(ground_truth, "ground_truth") if isinstance(ground_truth, (str, os.PathLike)) else ground_truth
    if not isinstance(data, Mapping) or not isinstance(data.get("database"), Mapping):
        raise ValueError("`ground_truth` must be in the gt.json layout {'database': {video: {...}}}, "
                         "but it has no 'database' mapping.")
    database = data["database"]
    videos, video_idx, labels, starts, ends = [], [], [], [], []
    subsets_seen: set[str] = set()
    for video, entry in database.items():
        if not isinstance(entry, Mapping) or "subset" not in entry:
            raise ValueError(f"`ground_truth`: video {video!r} has no 'subset' field.")
        subsets_seen.add(str(entry["subset"]))
        if entry["subset"] != subset:
            continue
        annotations = entry.get("annotations", [])
        if not isinstance(annotations, Sequence):
            raise ValueError(f"`ground_truth`: 'annotations' of video {video!r} must be a list.")
        index = len(videos)
        videos.append(video)
        for position, annotation in enumerate(annotations):
            try:
                segment, label = annotation["segment"], annotation["label"]
                start, end = float(segment[0]), float(segment[1])
            except (KeyError, TypeError, IndexError, ValueError):
                raise ValueError(f"`ground_truth`: annotation {position} of video {video!r} must have a "
                                 f"'segment' [start, end] of numbers and a 'label'.") from None
            if not (np.isfinite(start) and np.isfinite(end)) or end < start:
                raise ValueError(f"`ground_truth`: annotation {position} of video {video!r} has segment "
                                 f"[{start}, {end}]; it must be finite with end >= start.")
            video_idx.append(index)
            labels.append(str(label))
            starts.append(start)
            ends.append(end)
    if not videos:
        available = ", ".join(repr(s) for s in sorted(subsets_seen)) or "none"
        raise ValueError(f"`ground_truth` has no videos in subset {subset!r}; subsets present: {available}.")
    if not labels:
        raise ValueError(f"`ground_truth` subset {subset!r} has no annotations, so mAP is undefined.")
    codes, classes = pd.factorize(np.asarray(labels, dtype=object), sort=False)
    return GroundTruth(subset, [str(c) for c in classes], videos, np.asarray(video_idx, dtype=np.int64),
                       codes.astype(np.int64), np.asarray(starts, dtype=np.float64),
                       np.asarray(ends, dtype=np.float64))


def _numeric(values: list[Any], name: str, videos: list[str], field: str) -> np.ndarray:
    """``values`` as float64, or an error naming the first video whose ``field`` is not a number."""
    try:
        array = np.asarray(values)
    except ValueError:  # ragged segments
        array = np.asarray(values, dtype=object)
    if array.dtype.kind not in "fiu" or array.dtype == np.bool_:
        for row, value in enumerate(values):
            ok = np.asarray(value, dtype=object)
            if ok.shape != array.shape[1:] or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in ok.reshape(-1)
            ):
                expected = "a [start, end] pair of numbers" if field == "segment" else "a number"
                raise ValueError(f"`{name}`: prediction {row} (video {videos[row]!r}) has {field!r} "
                                 f"{value!r}; expected {expected}.")
        array = array.astype(np.float64)
    return array.astype(np.float64, copy=False)


def _flatten_results(data: Any, name: str) -> Predictions:
    if not isinstance(data, Mapping) or not isinstance(data.get("results"), Mapping):
        raise ValueError(f"`{name}` must be in the ActivityNet results layout {{'results': {{video: [...]}}}}, "
                         "but it has no 'results' mapping.")
    videos: list[str] = []
    segments: list[Any] = []
    labels: list[Any] = []
    scores: list[Any] = []
    for video, items in data["results"].items():
        if not isinstance(items, Sequence) or isinstance(items, str):
            raise ValueError(f"`{name}`: results of video {video!r} must be a list of "
                             f"{{'segment', 'label', 'score'}} entries.")
        try:
            segments.extend([item["segment"] for item in items])
            labels.extend([item["label"] for item in items])
            scores.extend([item["score"] for item in items])
        except (KeyError, TypeError):
            for position, item in enumerate(items):
                missing = [f for f in ("segment", "label", "score") if not isinstance(item, Mapping) or f not in item]
                if missing:
                    raise ValueError(f"`{name}`: entry {position} of video {video!r} lacks field "
                                     f"{missing[0]!r}.") from None
            raise
        videos.extend([video] * len(items))
    segment_array = _numeric(segments, name, videos, "segment")
    if len(videos) and (segment_array.ndim != 2 or segment_array.shape[1] != 2):
        row = next(i for i, segment in enumerate(segments) if np.shape(segment) != (2,))
        raise ValueError(f"`{name}`: prediction {row} (video {videos[row]!r}) has 'segment' {segments[row]!r}; "
                         "expected a [start, end] pair of numbers.")
    segment_array = segment_array.reshape(-1, 2)
    for row, label in enumerate(labels):
        if not isinstance(label, str):
            raise ValueError(f"`{name}`: prediction {row} (video {videos[row]!r}) has 'label' {label!r}; "
                             "expected a class name.")
    return Predictions(np.asarray(videos, dtype=object), segment_array[:, 0].copy(), segment_array[:, 1].copy(),
                       np.asarray(labels, dtype=object), _numeric(scores, name, videos, "score"))


def _from_frame(frame: pd.DataFrame, name: str) -> Predictions:
    frame = frame.rename(columns=_REFERENCE_COLUMN_NAMES)
    missing = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"`{name}` DataFrame must have columns {', '.join(PREDICTION_COLUMNS)}, "
                         f"but lacks {', '.join(missing)}.")
    videos = frame["video"].astype(str).to_numpy(dtype=object)
    columns = {}
    for column in ("t_start", "t_end", "score"):
        try:
            columns[column] = pd.to_numeric(frame[column], errors="raise").to_numpy(dtype=np.float64)
        except (ValueError, TypeError):
            bad = pd.to_numeric(frame[column], errors="coerce").isna() & frame[column].notna()
            row = int(np.flatnonzero(bad.to_numpy())[0]) if bad.any() else 0
            raise ValueError(f"`{name}`: column {column!r} must be numeric, but row {row} "
                             f"(video {videos[row]!r}) holds {frame[column].iloc[row]!r}.") from None
    labels = frame["label"].to_numpy(dtype=object)
    return Predictions(videos, columns["t_start"], columns["t_end"], labels, columns["score"])


def load_predictions(predictions: PredictionsLike, name: str = "predictions") -> Predictions:
    """Flatten predictions given as a results-JSON path or dict, or a DataFrame, and check their values."""
    if isinstance(predictions, pd.DataFrame):
        flat = _from_frame(predictions, name)
    elif isinstance(predictions, (str, os.PathLike)):
        flat = _flatten_results(_read_json(predictions, name), name)
    elif isinstance(predictions, Mapping):
        flat = _flatten_results(predictions, name)
    else:
        raise TypeError(f"`{name}` must be a path, a results-JSON dict or a pandas DataFrame, "
                        f"but got {type(predictions).__name__}.")
    _check_values(flat, name)
    return flat


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _check_values(flat: Predictions, name: str) -> None:
    if np.isnan(flat.score).any():
        row = _first_bad(np.isnan(flat.score))
        raise ValueError(f"`{name}`: prediction {row} (video {flat.video[row]!r}) has a NaN 'score'.")
    finite = np.isfinite(flat.t_start) & np.isfinite(flat.t_end)
    if not finite.all():
        row = _first_bad(~finite)
        raise ValueError(f"`{name}`: prediction {row} (video {flat.video[row]!r}) has a non-finite 'segment' "
                         f"[{flat.t_start[row]}, {flat.t_end[row]}].")
    if (flat.t_end < flat.t_start).any():
        row = _first_bad(flat.t_end < flat.t_start)
        raise ValueError(f"`{name}`: prediction {row} (video {flat.video[row]!r}) has 'segment' "
                         f"[{flat.t_start[row]}, {flat.t_end[row]}] with end < start.")


def concatenate(parts: Sequence[Predictions]) -> Predictions:
    """Join flattened predictions in order (the metric object's accumulated updates)."""
    if not parts:
        empty = np.empty(0, dtype=np.float64)
        return Predictions(np.empty(0, dtype=object), empty, empty, np.empty(0, dtype=object), empty)
    return Predictions(*(np.concatenate([getattr(p, f) for p in parts]) for f in Predictions._fields))


def load_ambiguous(ambiguous: str | os.PathLike[str] | Mapping[str, Sequence[Sequence[float]]]
                   ) -> dict[str, np.ndarray]:
    """THUMOS14 "Ambiguous" intervals per video, from the toolkit's text file or a mapping.

    The text file has one interval per line: ``video start end`` (seconds), as in THUMOS14's
    ``Ambiguous_test.txt``.
    """
    intervals: dict[str, list[tuple[float, float]]] = {}
    if isinstance(ambiguous, (str, os.PathLike)):
        path = Path(ambiguous)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise ValueError(f"`ambiguous`: cannot read {str(path)!r} ({error.strerror or error}).") from None
        for number, line in enumerate(lines, start=1):
            fields = line.split()
            if not fields:
                continue
            try:
                video, start, end = fields[0], float(fields[1]), float(fields[2])
            except (IndexError, ValueError):
                raise ValueError(f"`ambiguous`: line {number} of {str(path)!r} must read "
                                 f"'video start end', but got {line!r}.") from None
            intervals.setdefault(video, []).append((start, end))
    elif isinstance(ambiguous, Mapping):
        for video, segments in ambiguous.items():
            try:
                intervals[str(video)] = [(float(s), float(e)) for s, e in segments]
            except (TypeError, ValueError):
                raise ValueError(f"`ambiguous`: intervals of video {video!r} must be [start, end] pairs.") from None
    else:
        raise TypeError(f"`ambiguous` must be a path or a mapping video -> [[start, end], ...], "
                        f"but got {type(ambiguous).__name__}.")
    return {video: np.asarray(segments, dtype=np.float64).reshape(-1, 2) for video, segments in intervals.items()}


def drop_ambiguous(flat: Predictions, intervals: Mapping[str, np.ndarray]) -> Predictions:
    """Remove every prediction that overlaps (positive intersection) an Ambiguous interval of its video."""
    if not len(flat.video) or not intervals:
        return flat
    rows = [(video, s, e) for video, segments in intervals.items() for s, e in segments]
    table = pd.DataFrame(rows, columns=["video", "a_start", "a_end"])
    preds = pd.DataFrame({"video": flat.video, "row": np.arange(len(flat.video)),
                          "t_start": flat.t_start, "t_end": flat.t_end})
    pairs = preds.merge(table, on="video", how="inner")
    overlap = np.minimum(pairs["t_end"], pairs["a_end"]) - np.maximum(pairs["t_start"], pairs["a_start"]) > 0
    keep = np.ones(len(flat.video), dtype=bool)
    keep[pairs["row"].to_numpy()[overlap.to_numpy()]] = False
    return Predictions(*(getattr(flat, f)[keep] for f in Predictions._fields))
