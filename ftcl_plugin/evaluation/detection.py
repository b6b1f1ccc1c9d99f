"""Detection mAP per t-IoU threshold, as ActivityNet's reference evaluator computes it.

References:
    Caba Heilbron et al., "ActivityNet: A Large-Scale Video Benchmark for Human Activity Understanding",
    CVPR 2015 (detection mAP at t-IoU thresholds); the challenge's ``ANETdetection`` evaluator
    (``Evaluation/eval_detection.py``), which ACM-Net, CoLA and the FTCL release all use.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .._checks import check_choice
from . import _inputs
from ._ambiguous import AmbiguousLike, drop_ambiguous, load_ambiguous
from ._inputs import GroundTruthLike, PredictionsLike, UnknownVideos
from ._matching import average_precision


@dataclass(frozen=True)
class Preset:
    """t-IoU thresholds, the default ground-truth subset and the summary averages of one reporting protocol."""

    thresholds: tuple[float, ...]
    subset: str
    averages: tuple[tuple[float, float], ...]  # (low, high) inclusive threshold ranges, one "Avg" column each


def _linspace(start: float, stop: float, num: int) -> tuple[float, ...]:
    # np.linspace, as the reference scripts build their thresholds: 0.1:0.9 in 9 steps gives
    # 0.30000000000000004, and a t-IoU of exactly 0.3 fails that threshold there too
    return tuple(float(t) for t in np.linspace(start, stop, num))


PRESETS: dict[str, Preset] = {
    # FTCL Table 1: mAP@0.1..0.7 with Avg over 0.1:0.5, 0.3:0.7 and 0.1:0.7
    "thumos14": Preset(_linspace(0.1, 0.7, 7), "test", ((0.1, 0.5), (0.3, 0.7), (0.1, 0.7))),
    # FTCL Table 2 / ActivityNet challenge: 0.5:0.05:0.95 with their Avg
    "activitynet": Preset(_linspace(0.5, 0.95, 10), "validation", ((0.5, 0.95),)),
    # ACM-Net's own script: mean over nine thresholds 0.1:0.9 (not comparable with the 0.1:0.7 Avg)
    "thumos14-acmnet": Preset(_linspace(0.1, 0.9, 9), "test", ((0.1, 0.9),)),
}


def _label(value: float) -> str:
    return f"{round(value, 6):g}"


def _summary(thresholds: np.ndarray, mean_ap: np.ndarray, averages: Sequence[tuple[float, float]]
             ) -> dict[str, float]:
    summary = {_label(t): float(v) for t, v in zip(thresholds, mean_ap)}
    for low, high in averages:
        inside = (thresholds >= low - 1e-9) & (thresholds <= high + 1e-9)
        summary[f"Avg {_label(low)}:{_label(high)}"] = float(mean_ap[inside].mean())
    return summary


def _default_preset(ground_truth: GroundTruthLike, preset: str | None) -> str:
    # the shipped ActivityNet1.3 ground truth has only a "validation" subset: its own preset by default
    if preset is None:
        return "activitynet" if isinstance(ground_truth, str) and ground_truth == "activitynet" else "thumos14"
    return preset


def _resolve(preset: str, subset: str | None, tiou_thresholds: Sequence[float] | None
             ) -> tuple[np.ndarray, str, tuple[tuple[float, float], ...]]:
    check_choice(preset, "preset", tuple(PRESETS))
    chosen = PRESETS[preset]
    if tiou_thresholds is None:
        return np.asarray(chosen.thresholds), chosen.subset if subset is None else subset, chosen.averages
    if isinstance(tiou_thresholds, (str, bytes)):
        raise TypeError(f"`tiou_thresholds` must be a sequence of numbers, but got the string {tiou_thresholds!r}.")
    try:
        thresholds = np.asarray(tiou_thresholds, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise TypeError("`tiou_thresholds` must be a sequence of numbers.") from None
    if thresholds.size == 0 or not np.all((thresholds > 0) & (thresholds <= 1)):
        raise ValueError(f"`tiou_thresholds` must be non-empty with every value in (0, 1], "
                         f"but got {thresholds.tolist()}.")
    return thresholds, chosen.subset if subset is None else subset, ((float(thresholds.min()), float(thresholds.max())),)


class DetectionMAP:
    """Detection mAP over t-IoU thresholds, accumulated over ``update`` calls (torchmetrics-style).

    Matches ActivityNet's ``ANETdetection``: per class, predictions ranked by descending score each take the
    unmatched ground truth of their video with the highest t-IoU at or above the threshold; AP is the
    all-point interpolated area; mAP is the mean over the classes present in the ground-truth subset. Ties
    (equal scores, equal t-IoUs) are broken exactly as the reference breaks them on the same machine: by its
    own ``argsort()[::-1]`` calls on the same arrays (see docs/evaluation.md).

    Args:
        ground_truth: a shipped ground truth by name (``"thumos14"`` or ``"activitynet"``, see
            :mod:`ftcl_plugin.evaluation.ground_truth`), the path of a gt.json, or the loaded dict
            (``{"database": {video: {"subset", "duration", "annotations": [{"segment": [s, e],
            "label": name}]}}}``). A shipped name wins over a file of the same name (write ``./thumos14``).
        preset: ``"thumos14"`` (0.1:0.7; Avg 0.1:0.5, 0.3:0.7, 0.1:0.7), ``"activitynet"`` (0.5:0.95; Avg) or
            ``"thumos14-acmnet"`` (0.1:0.9; ACM-Net's own nine-threshold Avg); ``None`` (default):
            ``"activitynet"`` for the shipped ``"activitynet"`` ground truth, else ``"thumos14"``.
        subset: ground-truth subset; ``None`` takes the preset's (``"test"`` for THUMOS14,
            ``"validation"`` for ActivityNet1.3).
        tiou_thresholds: custom thresholds in (0, 1], replacing the preset's (one "Avg" over all of them).
        unknown_videos: predictions for a video outside the subset are ``"false_positive"`` (ActivityNet's
            behaviour), ``"ignore"`` (dropped) or ``"error"``.
        ambiguous: THUMOS14 "Ambiguous" intervals (the toolkit's ``video start end`` text file, or a mapping
            video -> [[s, e], ...]); predictions overlapping one are dropped before matching. ``None``
            (default) matches ActivityNet's evaluator.

    Shape:
        predictions: N rows (video, t_start, t_end, label, score), as a results-JSON dict or path, or a
        DataFrame with those columns.

    Raises:
        ValueError: a file cannot be read or is not JSON, the layout is wrong, the subset is absent, a label is
            not a ground-truth class, a score is NaN or not a number, a segment is not two finite numbers with
            end >= start, or an ``unknown_videos="error"`` video appears. Each message names the argument and
            its file, the video and the entry (or DataFrame row), what was expected and what was found.
        TypeError: an argument of an unsupported type.

    Example:
        >>> gt = {"database": {"v1": {"subset": "test", "duration": 30.0,
        ...       "annotations": [{"segment": [1.0, 5.0], "label": "Jump"}]}}}
        >>> metric = DetectionMAP(gt, tiou_thresholds=[0.5])
        >>> metric.update({"results": {"v1": [{"segment": [1.0, 4.0], "label": "Jump", "score": 0.9}]}})
        >>> metric.compute()["mAP"]
        [1.0]
    """

    def __init__(self, ground_truth: GroundTruthLike, *, preset: str | None = None, subset: str | None = None,
                 tiou_thresholds: Sequence[float] | None = None, unknown_videos: UnknownVideos = "false_positive",
                 ambiguous: AmbiguousLike | None = None) -> None:
        preset = _default_preset(ground_truth, preset)
        self.thresholds, self.subset, self._averages = _resolve(preset, subset, tiou_thresholds)
        check_choice(unknown_videos, "unknown_videos", ("false_positive", "error", "ignore"))
        self.preset = preset if tiou_thresholds is None else "custom"
        self.unknown_videos = unknown_videos
        self.ground_truth = _inputs.load_ground_truth(ground_truth, self.subset)
        self._video_index = pd.Index(self.ground_truth.videos)
        self._class_index = pd.Index(self.ground_truth.classes)
        self._ambiguous = None if ambiguous is None else load_ambiguous(ambiguous)
        self._parts: list[_inputs.Predictions] = []

    def reset(self) -> None:
        """Forget every prediction given so far."""
        self._parts = []

    def update(self, predictions: PredictionsLike) -> None:
        """Add predictions (results-JSON path or dict, or a DataFrame); they are checked here.

        Args:
            predictions: see the class docstring.

        Raises:
            ValueError: see the class docstring.
        """
        flat, source = _inputs.load_predictions(predictions)
        _inputs.check_labels(flat, source, self._class_index, self.subset)
        unknown_video = self._video_index.get_indexer(flat.video) < 0
        if unknown_video.any() and self.unknown_videos != "false_positive":
            if self.unknown_videos == "error":
                names = list(dict.fromkeys(flat.video[unknown_video]))
                shown = ", ".join(repr(v) for v in names[:5]) + (" ..." if len(names) > 5 else "")
                raise ValueError(f"{source.subject}: {len(names)} video(s) are not in the ground-truth subset "
                                 f"{self.subset!r}: {shown}.")
            flat = _inputs.select(flat, ~unknown_video)
        if self._ambiguous is not None:
            flat = drop_ambiguous(flat, self._ambiguous)
        self._parts.append(flat)

    def compute(self) -> dict[str, Any]:
        """Evaluate everything given since the last ``reset``.

        Returns:
            ``{"tiou_thresholds": [...], "mAP": [...], "average_mAP": x, "summary": {column: value},
            "ap_per_class": {class: [...]}, "preset": name, "subset": name}``; mAP values are fractions in
            [0, 1], in threshold order. No predictions at all give mAP 0 (as ActivityNet's evaluator does).
        """
        flat = _inputs.concatenate(self._parts)
        gt = self.ground_truth
        ap = average_precision(
            gt.video, gt.label, gt.t_start, gt.t_end,
            self._video_index.get_indexer(flat.video).astype(np.int64),
            self._class_index.get_indexer(flat.label).astype(np.int64),
            flat.t_start, flat.t_end, flat.score, len(gt.classes), self.thresholds,
        )
        mean_ap = ap.mean(axis=1)
        return {
            "tiou_thresholds": [float(t) for t in self.thresholds],
            "mAP": [float(v) for v in mean_ap],
            "average_mAP": float(mean_ap.mean()),
            "summary": _summary(self.thresholds, mean_ap, self._averages),
            "ap_per_class": {name: [float(v) for v in ap[:, c]] for c, name in enumerate(gt.classes)},
            "preset": self.preset,
            "subset": self.subset,
        }


def detection_map(ground_truth: GroundTruthLike, predictions: PredictionsLike, *, preset: str | None = None,
                  subset: str | None = None, tiou_thresholds: Sequence[float] | None = None,
                  unknown_videos: UnknownVideos = "false_positive", ambiguous: AmbiguousLike | None = None
                  ) -> dict[str, Any]:
    """Detection mAP of ``predictions`` against ``ground_truth`` (the functional twin of :class:`DetectionMAP`).

    Args:
        ground_truth: ``"thumos14"`` or ``"activitynet"`` (the shipped copies), a gt.json path, or a dict.
        predictions: ActivityNet results-JSON path or dict, or a DataFrame (video, t_start, t_end, label, score).
        preset: ``"thumos14"``, ``"activitynet"`` or ``"thumos14-acmnet"`` (``None``: the shipped
            ground truth's own, else ``"thumos14"``).
        subset: ground-truth subset (``None``: the preset's).
        tiou_thresholds: custom thresholds in (0, 1].
        unknown_videos: ``"false_positive"`` (default, as ActivityNet), ``"ignore"`` or ``"error"``.
        ambiguous: optional THUMOS14 Ambiguous intervals (off by default, as ActivityNet).

    Shape:
        predictions: N rows; ground truth: G annotations of the subset.

    Returns:
        The dict of :meth:`DetectionMAP.compute`.

    Raises:
        ValueError: see :class:`DetectionMAP`.
        TypeError: see :class:`DetectionMAP`.

    Example:
        >>> gt = {"database": {"v1": {"subset": "test", "duration": 30.0, "annotations": [
        ...     {"segment": [0.0, 10.0], "label": "Jump"}, {"segment": [20.0, 30.0], "label": "Jump"}]}}}
        >>> preds = {"results": {"v1": [{"segment": [0.0, 10.0], "label": "Jump", "score": 0.9},
        ...                             {"segment": [0.0, 9.0], "label": "Jump", "score": 0.8}]}}
        >>> detection_map(gt, preds, tiou_thresholds=[0.5])["mAP"]   # one of two found, at precision 1
        [0.5]
    """
    metric = DetectionMAP(ground_truth, preset=preset, subset=subset, tiou_thresholds=tiou_thresholds,
                          unknown_videos=unknown_videos, ambiguous=ambiguous)
    metric.update(predictions)
    return metric.compute()


def format_table(result: Mapping[str, Any], *, name: str = "") -> str:
    """Markdown table of a result's summary columns, as percentages with two decimals.

    Args:
        result: the dict of :func:`detection_map` (its ``"summary"``).
        name: the row's label.

    Returns:
        Two header lines and one row.

    Raises:
        ValueError: ``result`` has no ``"summary"``.

    Example:
        >>> print(format_table({"summary": {"0.5": 0.25, "Avg 0.5:0.5": 0.25}}, name="mine"))
        | method | 0.5 | Avg 0.5:0.5 |
        |---|---|---|
        | mine | 25.00 | 25.00 |
    """
    summary = result.get("summary") if isinstance(result, Mapping) else None
    if not isinstance(summary, Mapping):
        raise ValueError("`result` must be a dict returned by detection_map (it has no 'summary').")
    cells = ["nan" if math.isnan(v) else f"{100 * v:.2f}" for v in summary.values()]
    return "\n".join([
        "| method | " + " | ".join(summary) + " |",
        "|---" * (len(summary) + 1) + "|",
        f"| {name} | " + " | ".join(cells) + " |",
    ])
