"""Reading and validating ground truth and predictions into flat numpy columns.

Every message names the argument (and the file, when it was read from one), the video and the entry at fault
(``entry 3 of video 'v1'``, counted from 0 inside that video's list, or ``row 3`` of a DataFrame), what was
expected and what was found. JSON has to be walked once per prediction to flatten it; the checks run on whole
columns at a time and look for the first culprit only once something is known to be wrong.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any, Literal, NamedTuple, Union

import numpy as np
import pandas as pd

from . import ground_truth as shipped
from ._files import read_json, where

GroundTruthLike = Union[str, "os.PathLike[str]", Mapping[str, Any]]
PredictionsLike = Union[str, "os.PathLike[str]", Mapping[str, Any], pd.DataFrame]
UnknownVideos = Literal["false_positive", "error", "ignore"]

PREDICTION_COLUMNS = ("video", "t_start", "t_end", "label", "score")
# ActivityNet's own DataFrame spells three of the columns differently; accept both spellings.
_REFERENCE_COLUMN_NAMES = {"video-id": "video", "t-start": "t_start", "t-end": "t_end"}
_PLAIN_NUMBERS = frozenset({int, float})
_ENTRY_FIELDS = ("segment", "label", "score")


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
    score: np.ndarray  # (N,) int64 when every score is an integer (as the reference's DataFrame), else float64
    entry: np.ndarray  # (N,) int64 position inside its video's list (results JSON) or row (DataFrame)


class Source(NamedTuple):
    """How messages name a prediction: the argument, its file, and whether positions are DataFrame rows."""

    subject: str
    rows: bool

    def at(self, flat: Predictions, row: int) -> str:
        video, entry = flat.video[row], int(flat.entry[row])
        place = f"row {entry} (video {video!r})" if self.rows else f"entry {entry} of video {video!r}"
        return f"{self.subject}: {place}"


def _object_under(data: Any, key: str, subject: str, layout: str) -> Mapping:
    """``data[key]`` when ``data`` is a JSON object whose ``key`` holds an object; else ``ValueError`` naming
    ``subject``, the expected ``layout`` and what was found instead."""
    part = data.get(key) if isinstance(data, Mapping) else None
    if not isinstance(part, Mapping):
        found = (f"it is {_kind(data)}" if not isinstance(data, Mapping) else f"it has no '{key}' key"
                 if key not in data else f"its '{key}' is {_kind(part)}")
        raise ValueError(f"{subject} must be in {layout}, but {found}.")
    return part


def _kind(value: Any) -> str:
    """What a JSON value is, in JSON's words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, numbers.Number):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def _show(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 1024:
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_number(value: Any) -> bool:
    """A real number that fits a float64 (booleans are not numbers here, though Python counts them as ints)."""
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _is_pair(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        value = value.tolist() if value.shape == (2,) else None
    return isinstance(value, (list, tuple)) and len(value) == 2 and _is_number(value[0]) and _is_number(value[1])


# ----------------------------------------------------------------------------------------------------------------
# ground truth
# ----------------------------------------------------------------------------------------------------------------


def load_ground_truth(ground_truth: GroundTruthLike, subset: str) -> GroundTruth:
    """Flatten the ``subset`` of a gt.json (path, a shipped name such as ``"thumos14"``, or a loaded dict)."""
    if not isinstance(subset, str):
        raise TypeError(f"`subset` must be a string such as 'test' or 'validation', but got "
                        f"{type(subset).__name__} {subset!r}.")
    if isinstance(ground_truth, str) and ground_truth in shipped.NAMES:
        subject, data = f"`ground_truth` (shipped {ground_truth!r})", shipped.load(ground_truth)
    elif isinstance(ground_truth, (str, os.PathLike)):
        subject, data = where("ground_truth", ground_truth), read_json(ground_truth, "ground_truth")
    elif isinstance(ground_truth, Mapping):
        subject, data = where("ground_truth"), ground_truth
    else:
        raise TypeError(f"`ground_truth` must be a gt.json path, a shipped name ({', '.join(shipped.NAMES)}) or "
                        f"a gt.json dict, but got {type(ground_truth).__name__}.")
    database = _object_under(data, "database", subject, "the gt.json layout {'database': {video: {...}}}")
    videos, video_idx, labels, starts, ends = [], [], [], [], []
    subsets_seen: set[str] = set()
    for video, entry in database.items():
        if not isinstance(entry, Mapping) or "subset" not in entry:
            found = "has no 'subset' field" if isinstance(entry, Mapping) else f"is {_kind(entry)}"
            raise ValueError(f"{subject}: video {video!r} {found}; expected an object with 'subset' and "
                             "'annotations'.")
        if not isinstance(entry["subset"], str):
            raise ValueError(f"{subject}: video {video!r} has 'subset' {_show(entry['subset'])}; expected a "
                             "string such as 'test' or 'validation'.")
        subsets_seen.add(entry["subset"])
        if entry["subset"] != subset:
            continue
        if not isinstance(video, str):
            raise ValueError(f"{subject}: video key {video!r} must be a string.")
        annotations = entry.get("annotations", [])
        if not isinstance(annotations, (list, tuple)):
            raise ValueError(f"{subject}: 'annotations' of video {video!r} must be a list, but it is "
                             f"{_kind(annotations)}.")
        index = len(videos)
        videos.append(video)
        for position, annotation in enumerate(annotations):
            at = f"{subject}: annotation {position} of video {video!r}"
            if not isinstance(annotation, Mapping) or "segment" not in annotation or "label" not in annotation:
                raise ValueError(f"{at} is {_show(annotation)}; expected an object with 'segment' and 'label'.")
            segment, label = annotation["segment"], annotation["label"]
            if not _is_pair(segment):
                raise ValueError(f"{at} has 'segment' {_show(segment)}; expected [start, end], two numbers.")
            start, end = float(segment[0]), float(segment[1])
            if not (math.isfinite(start) and math.isfinite(end)) or end < start:
                raise ValueError(f"{at} has 'segment' [{start}, {end}]; it must be finite with end >= start.")
            if not isinstance(label, str) or not label:
                raise ValueError(f"{at} has 'label' {_show(label)}; expected a class name (a non-empty string).")
            video_idx.append(index)
            labels.append(label)
            starts.append(start)
            ends.append(end)
    if not videos:
        available = ", ".join(repr(s) for s in sorted(subsets_seen)) or "none"
        raise ValueError(f"{subject} has no videos in subset {subset!r}; subsets present: {available}.")
    if not labels:
        raise ValueError(f"{subject} subset {subset!r} has no annotations, so mAP is undefined.")
    codes, classes = pd.factorize(np.asarray(labels, dtype=object), sort=False)
    return GroundTruth(subset, [str(c) for c in classes], videos, np.asarray(video_idx, dtype=np.int64),
                       codes.astype(np.int64), np.asarray(starts, dtype=np.float64),
                       np.asarray(ends, dtype=np.float64))


# ----------------------------------------------------------------------------------------------------------------
# predictions
# ----------------------------------------------------------------------------------------------------------------


def _segments(segments: list[Any]) -> np.ndarray | int:
    """(N, 2) float64 segments, or the position of the first one that is not a pair of numbers."""
    if set(map(type, segments)) <= {list} and set(map(len, segments)) <= {2} and \
            set(map(type, chain.from_iterable(segments))) <= _PLAIN_NUMBERS:
        try:
            return np.array(segments, dtype=np.float64).reshape(-1, 2)
        except OverflowError:  # an integer past float64's range; the loop below finds it
            pass
    for row, segment in enumerate(segments):
        if not _is_pair(segment):
            return row
    return np.array([(float(s[0]), float(s[1])) for s in segments], dtype=np.float64).reshape(-1, 2)


def _scores(scores: Sequence[Any]) -> np.ndarray | int:
    """Scores in the dtype the reference's DataFrame column would get, or the position of the first non-number."""
    types = set(map(type, scores))
    if not types <= _PLAIN_NUMBERS:
        for row, score in enumerate(scores):
            if not _is_number(score):
                return row
        scores = [score.item() if isinstance(score, np.generic) else score for score in scores]
        types = set(map(type, scores))
    try:
        if types <= {int}:  # every score an integer: pandas builds an int64 column, and so do we
            try:
                return np.array(scores, dtype=np.int64)
            except OverflowError:
                pass
        return np.array(scores, dtype=np.float64)
    except OverflowError:
        return next(row for row, score in enumerate(scores) if not _is_number(score))


def _flatten_results(data: Any, source: Source) -> Predictions:
    results = _object_under(data, "results", source.subject,
                            "the ActivityNet results layout {'results': {video: [...]}}")
    videos: list[str] = []
    counts: list[int] = []
    segments: list[Any] = []
    labels: list[Any] = []
    scores: list[Any] = []
    for video, items in results.items():
        if not isinstance(video, str):
            raise ValueError(f"{source.subject}: video key {video!r} of 'results' must be a string.")
        if not isinstance(items, (list, tuple)):
            raise ValueError(f"{source.subject}: 'results' of video {video!r} must be a list of "
                             f"{{'segment', 'label', 'score'}} objects, but it is {_kind(items)}.")
        try:
            segments.extend([item["segment"] for item in items])
            labels.extend([item["label"] for item in items])
            scores.extend([item["score"] for item in items])
        except (KeyError, TypeError, IndexError):
            for position, item in enumerate(items):
                at = f"{source.subject}: entry {position} of video {video!r}"
                if not isinstance(item, Mapping):
                    raise ValueError(f"{at} is {_show(item)}; expected an object with 'segment', 'label' and "
                                     "'score'.") from None
                missing = [field for field in _ENTRY_FIELDS if field not in item]
                if missing:
                    raise ValueError(f"{at} lacks field {missing[0]!r}.") from None
            raise
        videos.append(video)
        counts.append(len(items))
    count = np.asarray(counts, dtype=np.int64)
    starts = np.cumsum(count) - count
    entry = np.arange(int(count.sum()), dtype=np.int64) - np.repeat(starts, count)
    video = np.repeat(np.asarray(videos, dtype=object), count)
    located = Predictions(video, *([np.empty(0)] * 4), entry)

    segment_array = _segments(segments)
    if isinstance(segment_array, int):
        row = segment_array
        raise ValueError(f"{source.at(located, row)} has 'segment' {_show(segments[row])}; expected "
                         "[start, end], two numbers.")
    if not set(map(type, labels)) <= {str}:
        row = next(i for i, label in enumerate(labels) if not isinstance(label, str))
        raise ValueError(f"{source.at(located, row)} has 'label' {_show(labels[row])}; expected a class name "
                         "(a string).")
    score_array = _scores(scores)
    if isinstance(score_array, int):
        row = score_array
        raise ValueError(f"{source.at(located, row)} has 'score' {_show(scores[row])}; expected a number.")
    return Predictions(video, segment_array[:, 0].copy(), segment_array[:, 1].copy(),
                       np.asarray(labels, dtype=object), score_array, entry)


def _numeric_column(frame: pd.DataFrame, column: str, source: Source, located: Predictions) -> np.ndarray:
    series = frame[column]
    if series.dtype.kind in "iu" and not series.isna().any():
        return series.to_numpy(dtype=np.int64 if column == "score" else np.float64)
    if series.dtype.kind in "iuf":
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    values = series.tolist()  # booleans, strings, objects: every cell must be a number (or missing)
    for row, value in enumerate(values):
        if value is not None and not _is_number(value):
            raise ValueError(f"{source.at(located, row)} has {column!r} {_show(value)}; expected a number.")
    if column == "score" and None not in values:
        return np.asarray(_scores(values))
    return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)


def _from_frame(frame: pd.DataFrame, source: Source) -> Predictions:
    frame = frame.rename(columns=_REFERENCE_COLUMN_NAMES)
    missing = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{source.subject} DataFrame must have columns {', '.join(PREDICTION_COLUMNS)}, "
                         f"but lacks {', '.join(missing)}.")
    entry = np.arange(len(frame), dtype=np.int64)
    absent = frame["video"].isna().to_numpy()
    videos = frame["video"].astype(str).to_numpy(dtype=object)
    located = Predictions(videos, *([np.empty(0)] * 4), entry)
    if absent.any():
        row = int(np.flatnonzero(absent)[0])
        raise ValueError(f"{source.subject}: row {row} has no 'video' ({frame['video'].iloc[row]!r}).")
    columns = {c: _numeric_column(frame, c, source, located) for c in ("t_start", "t_end", "score")}
    labels = frame["label"].to_numpy(dtype=object)
    if not set(map(type, labels)) <= {str}:
        row = next(i for i, label in enumerate(labels) if not isinstance(label, str))
        raise ValueError(f"{source.at(located, row)} has 'label' {_show(labels[row])}; expected a class name "
                         "(a string).")
    return Predictions(videos, columns["t_start"], columns["t_end"], labels, columns["score"], entry)


def load_predictions(predictions: PredictionsLike, name: str = "predictions") -> tuple[Predictions, Source]:
    """Flatten predictions given as a results-JSON path or dict, or a DataFrame, and check their values.

    Returns the columns and the :class:`Source` that names their entries in later messages.
    """
    if isinstance(predictions, pd.DataFrame):
        source = Source(where(name), rows=True)
        flat = _from_frame(predictions, source)
    elif isinstance(predictions, (str, os.PathLike)):
        source = Source(where(name, predictions), rows=False)
        flat = _flatten_results(read_json(predictions, name), source)
    elif isinstance(predictions, Mapping):
        source = Source(where(name), rows=False)
        flat = _flatten_results(predictions, source)
    else:
        raise TypeError(f"`{name}` must be a path, a results-JSON dict or a pandas DataFrame, "
                        f"but got {type(predictions).__name__}.")
    _check_values(flat, source)
    return flat, source


def _check_values(flat: Predictions, source: Source) -> None:
    if flat.score.dtype.kind == "f" and np.isnan(flat.score).any():
        row = int(np.flatnonzero(np.isnan(flat.score))[0])
        raise ValueError(f"{source.at(flat, row)} has 'score' NaN; expected a number (any real value, "
                         "infinite included: only the order matters).")
    finite = np.isfinite(flat.t_start) & np.isfinite(flat.t_end)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"{source.at(flat, row)} has 'segment' [{flat.t_start[row]}, {flat.t_end[row]}]; "
                         "expected finite times.")
    reversed_ = flat.t_end < flat.t_start
    if reversed_.any():
        row = int(np.flatnonzero(reversed_)[0])
        raise ValueError(f"{source.at(flat, row)} has 'segment' [{flat.t_start[row]}, {flat.t_end[row]}]; "
                         "expected end >= start.")


def check_labels(flat: Predictions, source: Source, classes: pd.Index, subset: str) -> np.ndarray:
    """Class code of every prediction, or a ``ValueError`` naming the first label outside ``classes``."""
    codes = classes.get_indexer(flat.label)
    if (codes < 0).any():
        row = int(np.flatnonzero(codes < 0)[0])
        label = flat.label[row]
        by_lower = {str(c).lower(): str(c) for c in classes}  # "highjump" should find "HighJump"
        close = difflib.get_close_matches(label.lower(), list(by_lower), n=1)
        hint = f" Did you mean {by_lower[close[0]]!r}?" if close else ""
        shown = ", ".join(repr(c) for c in classes[:8]) + (f", ... ({len(classes)} classes)" if len(classes) > 8
                                                            else "")
        raise ValueError(f"{source.at(flat, row)} has 'label' {label!r}, which is not a class of the "
                         f"ground-truth subset {subset!r} ({shown}).{hint}")
    return codes.astype(np.int64)


def select(flat: Predictions, keep: np.ndarray) -> Predictions:
    """The rows of ``flat`` where ``keep`` is true."""
    return Predictions(*(column[keep] for column in flat))


def concatenate(parts: Sequence[Predictions]) -> Predictions:
    """Join flattened predictions in order (the metric object's accumulated updates)."""
    if not parts:
        empty = np.empty(0, dtype=np.float64)
        return Predictions(np.empty(0, dtype=object), empty, empty, np.empty(0, dtype=object), empty,
                           np.empty(0, dtype=np.int64))
    return Predictions(*(np.concatenate([getattr(p, f) for p in parts]) for f in Predictions._fields))
