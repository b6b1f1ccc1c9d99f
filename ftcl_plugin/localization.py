"""From per-snippet class scores to temporal proposals, as the four baselines do it.

Pipeline for one video: pick the predicted classes, (optionally) min-max normalise, upsample the CAS and the
attention by linear interpolation, threshold each at a sweep of values, group consecutive positions into runs,
score each run (outer-inner contrast (OIC), or its maximum) plus the video class score, convert to seconds, then
class-wise NMS. Several streams (STPN's RGB and flow) are swept separately and their proposals pooled per class
before NMS. :func:`results_json` wraps the proposals of many videos in the ActivityNet results layout that
:mod:`ftcl_plugin.evaluation` reads.

The defaults are ACM-Net's THUMOS14 settings (ispc-lab/ACM-Net); :meth:`LocalizationConfig.cola` gives CoLA's
(zhang-can/CoLA). W-TALC's and STPN's are expressed through the same options in their integrations' configs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy.interpolate import PPoly

from ._checks import check_choice, check_flag, check_number


def _steps(start: float, stop: float, step: float) -> tuple[float, ...]:
    count = int(round((stop - start) / step)) + 1
    return tuple(round(start + i * step, 6) for i in range(count))


@dataclass(frozen=True)
class LocalizationConfig:
    """Settings of :func:`localize`; the defaults are ACM-Net's THUMOS14 inference (ispc-lab/ACM-Net ``main_thu.py``).

    Args:
        class_threshold: a class is predicted when its video score passes this (ACM-Net 0.25); if none
            passes, the top-scoring class is taken.
        class_threshold_inclusive: ``score >= threshold`` instead of ``score > threshold`` (CoLA: True).
        normalize: ``"none"`` (ACM-Net) or ``"minmax"`` (CoLA: per-video min-max over time of each CAS
            column and of the attention, with ReLU'd extremes, clipped to [0, 1]).
        upsample: linear-interpolation factor of the CAS and the attention (ACM-Net 20, CoLA 24).
        cas_thresholds: sweep on the CAS; runs are scored on the CAS with values below the cut zeroed.
        attention_thresholds: sweep on the attention (ignored without attention); runs are scored on the
            un-thresholded CAS.
        threshold_mode: ``"absolute"``: a position is kept where the swept signal is ``>= threshold`` and ``> 0``
            (ACM-Net, CoLA); ``"relative"``: where it is ``> min + threshold * (max - min)``, the extremes taken
            over the video per class (W-TALC's ``(max + min) / 2`` is 0.5).
        run_score: ``"oic"``: the outer-inner contrast of the run on its scoring signal (ACM-Net, CoLA; with
            ``outer_ratio = 0`` the run's mean); ``"max"``: the maximum of the scoring signal over the run (W-TALC).
        min_length: shortest run kept, in upsampled positions (2 in both baselines).
        outer_ratio: OIC's lambda: the outer region extends ``outer_ratio * length`` on each side (ACM-Net 0.2).
        class_score_weight: OIC's gamma: weight of the video class score added to each score (ACM-Net 0).
        nms: ``"hard"`` (greedy, drop overlaps at or above ``nms_iou``), ``"soft"`` (Gaussian soft-NMS) or
            ``"none"`` (keep every run, as W-TALC).
        nms_iou: hard-NMS threshold (ACM-Net 0.55, CoLA 0.6).
        iou_mode: ``"plus_one"`` (the baselines' NMS IoU with a +1 length term on seconds; parity mode) or
            ``"standard"``.
        soft_nms_sigma: Gaussian soft-NMS width: a score is multiplied by ``exp(-iou**2 / sigma)``.
        soft_nms_min_score: after soft-NMS, proposals whose score fell below this are dropped (``None``: keep all).
        clip_to_duration: with a ``duration``, clip proposal ends to it and drop proposals that start at or after
            it. Off by default: none of the four baselines does this.
        streams: S, the number of streams whose signals share the CAS (and a per-class attention) stream-major:
            column ``s * C + c`` is class ``c`` of stream ``s``, as the features put RGB channels before flow.
            Each stream is swept on its own and the streams' proposals of a class are pooled before NMS (STPN's
            two-stream fusion: 2).
        fps: video frame rate of the features.
        frames_per_snippet: frames per feature snippet (16 for I3D features at 25 fps: 0.64 s).

    Example:
        >>> LocalizationConfig().upsample, LocalizationConfig.cola().upsample
        (20, 24)
    """

    class_threshold: float = 0.25
    class_threshold_inclusive: bool = False
    normalize: Literal["none", "minmax"] = "none"
    upsample: int = 20
    cas_thresholds: tuple[float, ...] = (0.15, 0.20)
    attention_thresholds: tuple[float, ...] = field(default_factory=lambda: _steps(0.15, 0.95, 0.05))
    threshold_mode: Literal["absolute", "relative"] = "absolute"
    run_score: Literal["oic", "max"] = "oic"
    min_length: int = 2
    outer_ratio: float = 0.2
    class_score_weight: float = 0.0
    nms: Literal["hard", "soft", "none"] = "hard"
    nms_iou: float = 0.55
    iou_mode: Literal["plus_one", "standard"] = "plus_one"
    soft_nms_sigma: float = 0.5
    soft_nms_min_score: float | None = None
    clip_to_duration: bool = False
    streams: int = 1
    fps: float = 25.0
    frames_per_snippet: int = 16

    def __post_init__(self) -> None:
        check_number(self.class_threshold, "class_threshold")
        check_choice(self.normalize, "normalize", ("none", "minmax"))
        check_number(self.upsample, "upsample", minimum=1, integer=True)
        check_choice(self.threshold_mode, "threshold_mode", ("absolute", "relative"))
        check_choice(self.run_score, "run_score", ("oic", "max"))
        check_number(self.min_length, "min_length", minimum=1, integer=True)
        check_number(self.outer_ratio, "outer_ratio", minimum=0)
        check_number(self.class_score_weight, "class_score_weight")
        check_choice(self.nms, "nms", ("hard", "soft", "none"))
        check_number(self.nms_iou, "nms_iou", minimum=0, maximum=1)
        check_choice(self.iou_mode, "iou_mode", ("plus_one", "standard"))
        check_number(self.soft_nms_sigma, "soft_nms_sigma", minimum=0, strict_minimum=True)
        check_flag(self.clip_to_duration, "clip_to_duration")
        check_number(self.streams, "streams", minimum=1, integer=True)
        check_number(self.fps, "fps", minimum=0, strict_minimum=True)
        check_number(self.frames_per_snippet, "frames_per_snippet", minimum=1, integer=True)
        for name in ("cas_thresholds", "attention_thresholds"):
            for value in getattr(self, name):
                check_number(value, name)

    @classmethod
    def cola(cls) -> LocalizationConfig:
        """CoLA's THUMOS14 inference (zhang-can/CoLA ``core/config.py`` and ``main_cola.py``)."""
        return cls(class_threshold=0.2, class_threshold_inclusive=True, normalize="minmax", upsample=24,
                   cas_thresholds=_steps(0.0, 0.225, 0.025), attention_thresholds=_steps(0.1, 0.9, 0.025),
                   outer_ratio=0.25, class_score_weight=0.2, nms_iou=0.6)


def _as_array(value: Any, name: str, ndim: int, layout: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without making torch a dependency of this module
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a numeric array or tensor of shape {layout}.") from None
    if array.ndim != ndim:
        raise ValueError(f"`{name}` must have shape {layout}, but got {tuple(array.shape)}.")
    if not np.isfinite(array).all():
        raise ValueError(f"`{name}` must be finite, but contains NaN or inf.")
    return array


def _minmax(values: np.ndarray) -> np.ndarray:
    """CoLA's normalisation over time (axis 0): ReLU'd min and max, a non-positive range replaced by 1."""
    low = np.maximum(values.min(axis=0), 0.0)
    high = np.maximum(values.max(axis=0), 0.0)
    span = high - low
    span = np.where(span <= 0, 1.0, span)
    return np.clip((values - low) / span, 0.0, 1.0)


def upsample_linear(values: np.ndarray, factor: int) -> np.ndarray:
    """Sample each column at positions j / factor, j = 0 .. factor*T - 1, by linear interpolation.

    Positions past the last snippet are extrapolated from the last two, as ACM-Net and CoLA do with
    ``scipy.interpolate.interp1d(..., fill_value="extrapolate")``, so they can leave [0, 1]. The interpolant is a
    :class:`scipy.interpolate.PPoly` of degree 1 whose pieces start at the snippets, so a position on snippet k
    gives that snippet's value exactly; ``interp1d`` takes the piece that ends there and can be one ulp off
    (``docs/evaluation.md``, Localization).

    Args:
        values: (T, ...) sequence over time.
        factor: upsampling factor u >= 1.

    Shape:
        values: (T, ...); returns (u*T, ...).

    Returns:
        The upsampled sequence (float64).

    Example:
        >>> upsample_linear(np.array([0.0, 1.0]), 2).tolist()
        [0.0, 0.5, 1.0, 1.5]
    """
    values = np.asarray(values, dtype=np.float64)
    length = values.shape[0]
    if length == 1 or factor == 1:
        return np.repeat(values, factor, axis=0)
    # Piece k on [k, k+1): values[k] + (x - k) * (values[k+1] - values[k]); the last piece extends past T - 1.
    pieces = PPoly(np.stack([np.diff(values, axis=0), values[:-1]]), np.arange(length, dtype=np.float64),
                   extrapolate=True)
    return pieces(np.arange(length * factor) / factor)


def _runs(mask: np.ndarray, min_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive [start, end] of the maximal runs of True, keeping runs of at least ``min_length``."""
    edges = np.diff(np.r_[0, mask.astype(np.int8), 0])
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1) - 1
    keep = ends - starts + 1 >= min_length
    return starts[keep], ends[keep]


def _oic(signal: np.ndarray, starts: np.ndarray, ends: np.ndarray, outer_ratio: float) -> np.ndarray:
    """Outer-inner contrast of each run on ``signal``: mean inside minus mean of the two flanking margins."""
    prefix = np.r_[0.0, np.cumsum(signal)]
    length = ends - starts + 1
    inner = (prefix[ends + 1] - prefix[starts]) / length
    # int() truncates toward zero, as the baselines' code does
    outer_start = np.maximum(0, np.trunc(starts - outer_ratio * length).astype(np.int64))
    outer_end = np.minimum(signal.shape[0] - 1, np.trunc(ends + outer_ratio * length).astype(np.int64))
    outer_sum = (prefix[starts] - prefix[outer_start]) + (prefix[outer_end + 1] - prefix[ends + 1])
    outer_count = (starts - outer_start) + (outer_end - ends)
    outer = np.divide(outer_sum, outer_count, out=np.zeros_like(inner), where=outer_count > 0)
    return inner - outer


def segment_iou(segment: np.ndarray, others: np.ndarray, mode: Literal["plus_one", "standard"]) -> np.ndarray:
    """IoU of one [start, end] with each row of ``others`` (seconds); ``"plus_one"`` adds 1 to every length.

    The "+1" form is the NMS IoU of ACM-Net and CoLA, copied from frame-index code; it inflates the IoU of segments a
    few seconds long and is kept for parity.

    Args:
        segment: (2,) start and end.
        others: (N, 2) starts and ends.
        mode: ``"plus_one"`` or ``"standard"``.

    Shape:
        segment (2,), others (N, 2); returns (N,).

    Returns:
        IoU per row of ``others`` (0 where the union is empty).

    Example:
        >>> segment_iou(np.array([0.0, 1.0]), np.array([[1.5, 2.5]]), "plus_one").round(3).tolist()
        [0.143]
    """
    one = 1.0 if mode == "plus_one" else 0.0
    intersection = np.maximum(0.0, np.minimum(segment[1], others[:, 1]) - np.maximum(segment[0], others[:, 0]) + one)
    union = (segment[1] - segment[0] + one) + (others[:, 1] - others[:, 0] + one) - intersection
    return np.divide(intersection, union, out=np.zeros_like(union), where=union > 0)


def _nms(segments: np.ndarray, scores: np.ndarray, config: LocalizationConfig) -> tuple[np.ndarray, np.ndarray]:
    """Class-wise NMS; returns kept segments and scores by descending (possibly decayed) score."""
    if config.nms == "none":
        order = np.argsort(-scores, kind="stable")
        return segments[order], scores[order]
    if config.nms == "hard":
        order = np.argsort(-scores, kind="stable")
        kept: list[int] = []
        alive = np.ones(order.shape[0], dtype=bool)
        for position in range(order.shape[0]):  # one pass per kept proposal, vectorised over the rest
            if not alive[position]:
                continue
            index = order[position]
            kept.append(index)
            rest = order[position + 1:]
            overlap = segment_iou(segments[index], segments[rest], config.iou_mode)
            alive[position + 1:] &= overlap < config.nms_iou
        chosen = np.asarray(kept, dtype=np.int64)
        return segments[chosen], scores[chosen]
    remaining = np.arange(scores.shape[0])
    current = scores.astype(np.float64).copy()
    out_segments, out_scores = [], []
    while remaining.size:
        best = int(np.argmax(current[remaining]))
        index = remaining[best]
        out_segments.append(segments[index])
        out_scores.append(current[index])
        remaining = np.delete(remaining, best)
        overlap = segment_iou(segments[index], segments[remaining], config.iou_mode)
        current[remaining] = current[remaining] * np.exp(-(overlap ** 2) / config.soft_nms_sigma)
    segments_out = np.asarray(out_segments).reshape(-1, 2)
    scores_out = np.asarray(out_scores, dtype=np.float64)
    if config.soft_nms_min_score is not None:
        keep = scores_out >= config.soft_nms_min_score
        segments_out, scores_out = segments_out[keep], scores_out[keep]
    return segments_out, scores_out


def localize(cas: Any, video_scores: Any, *, attention: Any = None, class_names: Sequence[str], num_snippets: int,
             duration: float | None = None, config: LocalizationConfig | None = None) -> list[dict[str, Any]]:
    """Temporal proposals of one video from its class activation sequence.

    Args:
        cas: (T, S*C) per-class snippet scores after the baseline's own activation; S = ``config.streams``
            (1 by default, so (T, C)), stream-major.
        video_scores: (C,) video-level class scores.
        attention: the signal of the attention sweep, or ``None`` to use the CAS sweep only: (T,) action
            attention shared by every class, or (T, S*C) laid out as ``cas``.
        class_names: the C class names, in CAS column order.
        num_snippets: the video's true snippet count L (T is the sampled length; times scale by L / T).
        duration: video length in seconds, used only with ``config.clip_to_duration``.
        config: settings (``None``: ACM-Net's THUMOS14 defaults).

    Shape:
        cas (T, S*C), video_scores (C,), attention (T,) or (T, S*C); numpy arrays or tensors.

    Returns:
        Proposals ``[{"segment": [t_start, t_end], "label": name, "score": s}, ...]``, per predicted class (in
        column order), each class by descending score.

    Raises:
        ValueError: shapes disagree, values are not finite, ``num_snippets`` < 1 or ``duration`` <= 0.
        TypeError: inputs are not numeric.

    Example:
        >>> cas = np.zeros((10, 2)); cas[2:6, 1] = 0.9
        >>> out = localize(cas, np.array([0.1, 0.8]), class_names=["a", "b"], num_snippets=10,
        ...                config=LocalizationConfig(upsample=1))
        >>> [(p["label"], p["segment"], round(p["score"], 3)) for p in out]
        [('b', [1.28, 3.84], 0.9)]
    """
    config = config or LocalizationConfig()
    cas = _as_array(cas, "cas", 2, "(T, C)" if config.streams == 1 else "(T, S*C)")
    scores = _as_array(video_scores, "video_scores", 1, "(C,)")
    length, columns = cas.shape
    if columns % config.streams:
        raise ValueError(f"`cas` must have S*C columns for S = {config.streams} streams, but got {columns}.")
    num_classes = columns // config.streams
    if scores.shape[0] != num_classes:
        raise ValueError(f"`video_scores` must have shape ({num_classes},), but got {tuple(scores.shape)}.")
    if len(class_names) != num_classes:
        raise ValueError(f"`class_names` must have {num_classes} names, but got {len(class_names)}.")
    if length == 0:
        raise ValueError("`cas` must have at least one snippet (T >= 1).")
    check_number(num_snippets, "num_snippets", minimum=1, integer=True)
    if duration is not None:
        check_number(duration, "duration", minimum=0, strict_minimum=True)
    if attention is not None:
        attention = _as_array(attention, "attention", np.ndim(attention), "(T,)")  # its shape is checked next
        if attention.shape not in ((length,), (length, columns)):
            expected = f"({length},) or ({length}, {columns})" if columns > 1 else f"({length},)"
            raise ValueError(f"`attention` must have shape {expected}, but got {tuple(attention.shape)}.")

    passed = scores >= config.class_threshold if config.class_threshold_inclusive else scores > config.class_threshold
    classes = np.flatnonzero(passed) if passed.any() else np.array([int(np.argmax(scores))])
    if config.normalize == "minmax":
        cas = _minmax(cas)
        attention = None if attention is None else _minmax(attention)
    # Upsample only the predicted classes' columns of every stream, stream-major: column s * K + k.
    picked = (np.arange(config.streams)[:, None] * num_classes + classes[None]).ravel()
    cas_up = upsample_linear(cas[:, picked], config.upsample)
    attention_up = None
    if attention is not None:
        attention_up = upsample_linear(attention if attention.ndim == 1 else attention[:, picked], config.upsample)
    seconds_per_position = config.frames_per_snippet * num_snippets / (config.fps * config.upsample * length)

    proposals: list[dict[str, Any]] = []
    for column, c in enumerate(classes):  # a loop per predicted class, stream and threshold; runs are vectorised
        found_starts, found_ends, found_scores = [], [], []
        for stream in range(config.streams):
            index = stream * classes.size + column
            signal = cas_up[:, index]
            sweeps = [(signal, threshold, True) for threshold in config.cas_thresholds]
            if attention_up is not None:
                swept = attention_up if attention_up.ndim == 1 else attention_up[:, index]
                sweeps += [(swept, threshold, False) for threshold in config.attention_thresholds]
            for swept, threshold, score_thresholded in sweeps:
                mask, cut = _sweep_mask(swept, threshold, config.threshold_mode)
                starts, ends = _runs(mask, config.min_length)
                if not starts.size:
                    continue
                scoring = signal
                if score_thresholded:
                    above = signal > cut if config.threshold_mode == "relative" else signal >= cut
                    scoring = np.where(above, signal, 0.0)
                found_starts.append(starts)
                found_ends.append(ends)
                found_scores.append(_run_scores(scoring, starts, ends, config) + config.class_score_weight * scores[c])
        if not found_starts:
            continue
        segments = np.stack([np.concatenate(found_starts) * seconds_per_position,
                             (np.concatenate(found_ends) + 1) * seconds_per_position], axis=1)
        run_scores = np.concatenate(found_scores)
        if duration is not None and config.clip_to_duration:
            inside = segments[:, 0] < duration
            segments, run_scores = segments[inside], run_scores[inside]
            segments[:, 1] = np.minimum(segments[:, 1], duration)
        kept_segments, kept_scores = _nms(segments, run_scores, config)
        name = str(class_names[c])
        proposals.extend({"segment": [float(s), float(e)], "label": name, "score": float(v)}
                         for (s, e), v in zip(kept_segments, kept_scores))
    return proposals


def _sweep_mask(swept: np.ndarray, threshold: float, mode: str) -> tuple[np.ndarray, float]:
    """The positions a threshold keeps, and the cut value it applies (see ``LocalizationConfig.threshold_mode``)."""
    if mode == "relative":
        low, high = float(swept.min()), float(swept.max())
        cut = low + threshold * (high - low)
        return swept > cut, cut
    # "at or above the threshold and positive": CoLA's zero threshold keeps only positive positions
    return (swept >= threshold) & (swept > 0), threshold


def _run_scores(signal: np.ndarray, starts: np.ndarray, ends: np.ndarray, config: LocalizationConfig) -> np.ndarray:
    """Each run's score on ``signal`` before the class-score term: OIC or the maximum over the run."""
    if config.run_score == "max":
        return np.array([signal[start:end + 1].max() for start, end in zip(starts, ends)])
    return _oic(signal, starts, ends, config.outer_ratio)


def results_json(proposals: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """Wrap per-video proposals in the ActivityNet results layout read by :mod:`ftcl_plugin.evaluation`.

    Args:
        proposals: video -> list of ``{"segment", "label", "score"}`` (as :func:`localize` returns).

    Returns:
        ``{"version": "VERSION 1.3", "results": {...}, "external_data": {}}`` (a copy; inputs are not kept).

    Example:
        >>> results_json({"v1": [{"segment": [0.0, 1.0], "label": "a", "score": 0.5}]})["results"]["v1"][0]["label"]
        'a'
    """
    return {
        "version": "VERSION 1.3",
        "results": {str(video): [dict(p) for p in items] for video, items in proposals.items()},
        "external_data": {},
    }
