"""THUMOS14 "Ambiguous" intervals: reading them, and dropping the predictions that overlap one."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Union

import numpy as np
import pandas as pd

from ._files import read_text, where
from ._inputs import Predictions, select

AmbiguousLike = Union[str, "os.PathLike[str]", Mapping[str, Sequence[Sequence[float]]]]


def _interval(start: float, end: float) -> bool:
    return math.isfinite(start) and math.isfinite(end) and start <= end


def load_ambiguous(ambiguous: AmbiguousLike) -> dict[str, np.ndarray]:
    """THUMOS14 "Ambiguous" intervals per video, from the toolkit's text file or a mapping.

    The text file has one interval per line: ``video start end`` (seconds), as in THUMOS14's
    ``Ambiguous_test.txt``. Every interval must be finite with start <= end (a NaN or reversed interval
    would silently drop nothing).
    """
    intervals: dict[str, list[tuple[float, float]]] = {}
    if isinstance(ambiguous, (str, os.PathLike)):
        subject = where("ambiguous", ambiguous)
        for number, line in enumerate(read_text(ambiguous, "ambiguous").splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            try:
                video, start, end = fields[0], float(fields[1]), float(fields[2])
            except (IndexError, ValueError):
                raise ValueError(f"{subject}: line {number} must read 'video start end', but got "
                                 f"{line[:80]!r}.") from None
            if len(fields) != 3 or not _interval(start, end):
                raise ValueError(f"{subject}: line {number} must read 'video start end' with finite times and "
                                 f"start <= end, but got {line[:80]!r}.")
            intervals.setdefault(video, []).append((start, end))
    elif isinstance(ambiguous, Mapping):
        for video, segments in ambiguous.items():
            try:
                pairs = [(float(s), float(e)) for s, e in segments]
            except (TypeError, ValueError, OverflowError):
                raise ValueError(f"`ambiguous`: intervals of video {video!r} must be [start, end] pairs of "
                                 f"numbers, but got {segments!r:.80}.") from None
            bad = next((pair for pair in pairs if not _interval(*pair)), None)
            if bad is not None:
                raise ValueError(f"`ambiguous`: video {video!r} has interval {list(bad)}; expected finite times "
                                 "with start <= end.")
            intervals[str(video)] = pairs
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
    return select(flat, keep)
