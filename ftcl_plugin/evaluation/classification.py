"""Video-level classification mAP (the ``cls`` head)."""

from __future__ import annotations

from typing import Any

import numpy as np


def _as_matrix(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch here
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a numeric (N, C) array or tensor.") from None
    if array.ndim != 2:
        raise ValueError(f"`{name}` must have shape (N, C), but got {tuple(array.shape)}.")
    return array


def classification_map(scores: Any, labels: Any) -> float:
    """Mean over classes of the non-interpolated average precision of video-level scores.

    For each class with at least one positive video, AP = sum over recall steps of precision x delta-recall,
    where tied scores form one step (so the result does not depend on the order of the videos). Classes without
    a positive video are left out, as their AP is undefined.

    Args:
        scores: (N, C) video-level class scores (any real values; only their order matters).
        labels: (N, C) multi-hot ground truth (0 or 1).

    Shape:
        scores and labels: (N, C); numpy arrays or tensors.

    Returns:
        mAP as a fraction in [0, 1].

    Raises:
        ValueError: shapes differ or are not 2-D, labels are not 0/1, scores contain NaN, or no class has a
            positive video.
        TypeError: inputs are not numeric.

    Example:
        >>> classification_map([[0.9, 0.1], [0.2, 0.8], [0.6, 0.7]], [[1, 0], [0, 1], [0, 1]])
        1.0
    """
    score = _as_matrix(scores, "scores")
    label = _as_matrix(labels, "labels")
    if score.shape != label.shape:
        raise ValueError(f"`labels` must have the same shape as `scores` {score.shape}, but got {label.shape}.")
    if np.isnan(score).any():
        raise ValueError("`scores` must not contain NaN.")
    if not np.isin(label, (0.0, 1.0)).all():
        raise ValueError("`labels` must be multi-hot (every entry 0 or 1).")
    positives = label.sum(axis=0)
    present = np.flatnonzero(positives > 0)
    if present.size == 0:
        raise ValueError("`labels` has no positive entry, so classification mAP is undefined.")
    aps = []
    for c in present:  # a loop per class, vectorised over videos
        order = np.argsort(-score[:, c], kind="stable")
        sorted_score, hits = score[order, c], label[order, c]
        true_positive = np.cumsum(hits)
        # the last row of each run of equal scores: one operating point per distinct threshold
        last = np.r_[sorted_score[1:] != sorted_score[:-1], True]
        true_positive = true_positive[last]
        predicted = (np.flatnonzero(last) + 1).astype(np.float64)
        precision = true_positive / predicted
        recall_step = np.diff(np.r_[0.0, true_positive]) / positives[c]
        aps.append(float(np.sum(recall_step * precision)))
    return float(np.mean(aps))
