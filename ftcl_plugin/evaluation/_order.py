"""The reference evaluator's two orders, reproduced by making its own ``argsort`` calls on its own arrays.

ActivityNet's ``compute_average_precision_detection`` ranks a class's predictions by
``prediction['score'].values.argsort()[::-1]`` and lets each prediction try the ground truths of its video in
``tiou_arr.argsort()[::-1]`` order. numpy's default sort is not stable: with the SIMD sorts of numpy >= 1.25 the
order it leaves among equal keys depends on the array's length and on the CPU (on an AVX-512 machine even four
elements with two equal keys can come back out of input order). Rules such as "equal scores keep input order" or
"the later ground truth wins" therefore agree with the reference only some of the time. What always agrees is
the same call on the same array: same values, same dtype, same element order, same length. Both functions here
build exactly the array the reference sorts and sort it the way the reference does.
"""

from __future__ import annotations

import numpy as np


def rank_by_score(label: np.ndarray, score: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Predictions grouped by class, each class in the reference's descending-score order.

    Args:
        label: (N,) int64 class code of each prediction (0 .. num_classes - 1), in input order.
        score: (N,) scores in input order, in the dtype the reference's DataFrame column would have (int64 when
            every score is an integer, else float64).
        num_classes: C.

    Returns:
        ``order`` (N,): prediction rows, class by class, each class as ``scores.argsort()[::-1]`` orders it;
        ``bounds`` (C + 1,): class c occupies ``order[bounds[c]:bounds[c + 1]]``.
    """
    by_class = np.argsort(label, kind="stable")  # input order inside each class, as the reference's groupby
    bounds = np.searchsorted(label[by_class], np.arange(num_classes + 1), side="left")
    order = np.empty_like(by_class)
    for c in range(num_classes):  # one argsort per class: the reference's call on the reference's array
        rows = by_class[bounds[c]:bounds[c + 1]]
        order[bounds[c]:bounds[c + 1]] = rows[score[rows].argsort()[::-1]]
    return order, bounds


def reference_tiou(start: float, end: float, gt_start: np.ndarray, gt_end: np.ndarray) -> np.ndarray:
    """t-IoU of one segment with each ground truth, with the reference's ``segment_iou`` operations.

    Two zero-length segments give 0/0 = NaN, as there (NaN sorts last, so such a pair is tried first).
    """
    intersection = (np.minimum(end, gt_end) - np.maximum(start, gt_start)).clip(0)
    union = (gt_end - gt_start) + (end - start) - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        return intersection.astype(float) / union


def walk_positions(pred_rank: np.ndarray, gt_rows: np.ndarray, tiou: np.ndarray, pred_group: np.ndarray,
                   pred_start: np.ndarray, pred_end: np.ndarray, gt_group: np.ndarray, gt_start: np.ndarray,
                   gt_end: np.ndarray) -> np.ndarray:
    """Tie-break key of each (prediction, ground truth) pair: its place in the reference's walk among equal t-IoUs.

    A prediction whose pairs all have distinct t-IoUs is walked in descending t-IoU whatever the sort, so its
    pairs get key 0. For a prediction with two pairs of equal t-IoU (including two 0/0 pairs, given as +inf),
    the reference's array is rebuilt (the t-IoU with every ground truth of its video and class, in file order)
    and sorted with the reference's call; each pair's key is its position in that walk.

    Args:
        pred_rank: (E,) prediction (row of ``pred_*``) of each pair.
        gt_rows: (E,) ground-truth row of each pair.
        tiou: (E,) t-IoU of each pair, bit-identical to the reference's (+inf where the reference has NaN).
        pred_group, pred_start, pred_end: (N,) group code (video and class) and segment of each prediction.
        gt_group, gt_start, gt_end: (G,) the same for the ground truth, in file order.

    Returns:
        (E,) int64 keys; sorting pairs by (prediction, -t-IoU, key) gives the reference's walk.
    """
    key = np.zeros(pred_rank.shape[0], dtype=np.int64)
    order = np.lexsort((-tiou, pred_rank))
    rank_sorted, tiou_sorted = pred_rank[order], tiou[order]
    tie = (rank_sorted[1:] == rank_sorted[:-1]) & (tiou_sorted[1:] == tiou_sorted[:-1])
    if not tie.any():
        return key
    tied = np.unique(rank_sorted[1:][tie])
    first = np.searchsorted(rank_sorted, tied, side="left")
    last = np.searchsorted(rank_sorted, tied, side="right")
    by_group = np.argsort(gt_group, kind="stable")  # each group's ground truths in file order
    group_sorted = gt_group[by_group]
    local = np.empty(gt_group.shape[0], dtype=np.int64)  # a ground truth's index inside its group
    local[by_group] = np.arange(gt_group.shape[0]) - np.searchsorted(group_sorted, group_sorted, side="left")
    low = np.searchsorted(group_sorted, pred_group[tied], side="left")
    high = np.searchsorted(group_sorted, pred_group[tied], side="right")
    for p, a, b, lo, hi in zip(tied, first, last, low, high):  # only predictions with a tie reach this loop
        members = by_group[lo:hi]
        walk = reference_tiou(pred_start[p], pred_end[p], gt_start[members], gt_end[members]).argsort()[::-1]
        position = np.empty(walk.shape[0], dtype=np.int64)
        position[walk] = np.arange(walk.shape[0])
        pairs = order[a:b]
        key[pairs] = position[local[gt_rows[pairs]]]
    return key
