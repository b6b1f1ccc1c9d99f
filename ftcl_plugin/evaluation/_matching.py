"""Vectorised ActivityNet-style matching and interpolated AP, tie for tie with the reference evaluator.

The reference evaluator (``compute_average_precision_detection`` in ActivityNet's
``Evaluation/eval_detection.py``) walks the predictions of a class in the order of
``scores.argsort()[::-1]``; each prediction walks the ground truths of its video (and class) in the order of
``tiou.argsort()[::-1]`` and takes the first unmatched one whose t-IoU is at or above the threshold. numpy's
default sort is not stable and, with SIMD sorting, its order among equal keys depends on the array's length and
the CPU, so the only way to agree on ties everywhere is to make the same ``argsort`` call on the same array (same
values, dtype, element order and length). That is done here per class for the scores, and per (prediction,
video) for the t-IoUs of the few predictions that have two equal t-IoUs worth taking; every other prediction's
walk is plain descending t-IoU.

That walk is greedy matching under a strict total order on (prediction, ground truth) edges: prediction rank
first, then the edge's position in its prediction's walk. Greedy matching under a strict edge order is
reproduced exactly by rounds of "locally dominant" edges (Preis 1999; Hoepman 2004): an edge that is the best
remaining edge at both of its ends is in the greedy matching, so all such edges are accepted at once, their ends
removed, and the rounds repeat. Every round is a handful of numpy passes over the remaining edges, and all
classes, videos and thresholds run in the same rounds because their edges never share an end.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._order import rank_by_score, walk_positions


def _lexicographic_keys(groups: list[np.ndarray], values: list[np.ndarray]) -> list[np.ndarray]:
    """Integer keys ordered exactly like the (group, value) pairs, for one-pass searchsorted.

    Values are replaced by their rank among all values given (equal floats share a rank), so no float offset
    can blur two close times.
    """
    ranks = np.unique(np.concatenate(values), return_inverse=True)[1].astype(np.int64)
    span = int(ranks.max()) + 1 if ranks.size else 1
    keys, start = [], 0
    for group, value in zip(groups, values):
        keys.append(group.astype(np.int64) * span + ranks[start:start + value.shape[0]])
        start += value.shape[0]
    return keys


def _expand(low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows i repeated (high - low) times, and the positions low[i] .. high[i] - 1 beside them."""
    counts = np.maximum(high - low, 0)
    rows = np.repeat(np.arange(low.shape[0]), counts)
    starts = np.cumsum(counts) - counts
    positions = np.arange(rows.shape[0]) - np.repeat(starts - low, counts)
    return rows, positions


def candidate_pairs(gt_group: np.ndarray, gt_start: np.ndarray, gt_end: np.ndarray, pred_group: np.ndarray,
                    pred_start: np.ndarray, pred_end: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (prediction, ground truth) pair of the same group whose t-IoU can pass a positive threshold.

    Returns prediction rows, ground-truth rows and their t-IoU. A pair whose union is zero (two zero-length
    segments) gets t-IoU +inf: ActivityNet's evaluator computes 0/0 = NaN there, which sorts first and never
    fails its ``t-IoU < threshold`` test, so such a pair is the preferred match at every threshold.
    """
    order = np.lexsort((gt_start, gt_group))
    group_s, start_s, end_s = gt_group[order], gt_start[order], gt_end[order]
    # running maximum of the end times inside each group: a ground truth before position j in start order
    # can overlap a prediction only if this maximum exceeds the prediction's start
    max_end = pd.Series(end_s).groupby(group_s, sort=False).cummax().to_numpy()
    max_end_key, start_key, pred_start_key, pred_end_key = _lexicographic_keys(
        [group_s, group_s, pred_group, pred_group], [max_end, start_s, pred_start, pred_end])
    low = np.searchsorted(max_end_key, pred_start_key, side="right")
    high = np.searchsorted(start_key, pred_end_key, side="left")
    rows, positions = _expand(low, high)
    gt_rows = order[positions]
    # t-IoU with the reference's operation order, so values and threshold comparisons agree bit for bit
    p_start, p_end = pred_start[rows], pred_end[rows]
    g_start, g_end = gt_start[gt_rows], gt_end[gt_rows]
    intersection = np.clip(np.minimum(p_end, g_end) - np.maximum(p_start, g_start), 0, None)
    union = (g_end - g_start) + (p_end - p_start) - intersection
    keep = intersection > 0
    rows, gt_rows = rows[keep], gt_rows[keep]
    tiou = intersection[keep] / union[keep]

    # degenerate pairs: both segments of zero length in the same group (the reference's NaN t-IoU)
    gt_point = np.flatnonzero(gt_start == gt_end)
    pred_point = np.flatnonzero(pred_start == pred_end)
    if gt_point.size and pred_point.size:
        point_order = gt_point[np.argsort(gt_group[gt_point], kind="stable")]
        point_groups = gt_group[point_order]
        first = np.searchsorted(point_groups, pred_group[pred_point], side="left")
        last = np.searchsorted(point_groups, pred_group[pred_point], side="right")
        extra_rows, extra_positions = _expand(first, last)
        rows = np.concatenate([rows, pred_point[extra_rows]])
        gt_rows = np.concatenate([gt_rows, point_order[extra_positions]])
        tiou = np.concatenate([tiou, np.full(extra_rows.shape[0], np.inf)])
    return rows, gt_rows, tiou


def greedy_match(pred_rank: np.ndarray, gt_rows: np.ndarray, tiou: np.ndarray, walk: np.ndarray,
                 thresholds: np.ndarray, num_predictions: int, num_ground_truth: int) -> np.ndarray:
    """True positives (K, num_predictions) of ActivityNet's greedy matching, prediction columns by rank.

    Args:
        pred_rank: (E,) rank of each pair's prediction in score order (0 = matched first).
        gt_rows: (E,) ground-truth row of each pair.
        tiou: (E,) t-IoU of each pair.
        walk: (E,) tie-break among a prediction's pairs of equal t-IoU (lower is tried first), from
            :func:`~ftcl_plugin.evaluation._order.walk_positions`.
        thresholds: (K,) t-IoU thresholds; a pair qualifies when ``tiou >= threshold``.
    """
    num_thresholds = thresholds.shape[0]
    # edge priority: prediction rank, then the prediction's own walk (t-IoU descending, ties as the reference)
    order = np.lexsort((walk, -tiou, pred_rank))
    pred_rank, gt_rows, tiou = pred_rank[order], gt_rows[order], tiou[order]
    passes = tiou[None, :] >= thresholds[:, None]  # (K, E)
    level, edge = np.nonzero(passes)  # row-major: sorted by threshold, then edge priority
    pred_node = level * num_predictions + pred_rank[edge]
    gt_node = level * num_ground_truth + gt_rows[edge]
    pred_done = np.zeros(num_thresholds * num_predictions, dtype=bool)
    gt_done = np.zeros(num_thresholds * num_ground_truth, dtype=bool)
    sentinel = np.iinfo(np.int64).max
    while pred_node.size:
        # best remaining edge of each prediction: the first of its run (edges are in priority order)
        first = np.empty(pred_node.size, dtype=bool)
        first[0] = True
        np.not_equal(pred_node[1:], pred_node[:-1], out=first[1:])
        # best remaining edge of each ground truth: the one from the best-ranked prediction
        best = np.full(gt_done.size, sentinel, dtype=np.int64)
        np.minimum.at(best, gt_node, pred_node)
        dominant = first & (best[gt_node] == pred_node)
        pred_done[pred_node[dominant]] = True
        gt_done[gt_node[dominant]] = True
        alive = ~(pred_done[pred_node] | gt_done[gt_node])
        pred_node, gt_node = pred_node[alive], gt_node[alive]
    return pred_done.reshape(num_thresholds, num_predictions)


def interpolated_ap(true_positive: np.ndarray, num_positive: int) -> np.ndarray:
    """All-point interpolated AP (VOC2011) per row of a (K, n) true-positive matrix in score order."""
    if true_positive.shape[1] == 0:
        return np.zeros(true_positive.shape[0])
    tp = np.cumsum(true_positive, axis=1, dtype=np.float64)
    fp = np.cumsum(~true_positive, axis=1, dtype=np.float64)
    recall = tp / num_positive
    precision = tp / (tp + fp)
    rows = true_positive.shape[0]
    padded_precision = np.hstack([np.zeros((rows, 1)), precision, np.zeros((rows, 1))])
    padded_recall = np.hstack([np.zeros((rows, 1)), recall, np.ones((rows, 1))])
    # precision envelope: the best precision at this recall or any higher one
    envelope = np.maximum.accumulate(padded_precision[:, ::-1], axis=1)[:, ::-1]
    # points where recall does not change contribute exactly zero, so no selection is needed
    return np.sum((padded_recall[:, 1:] - padded_recall[:, :-1]) * envelope[:, 1:], axis=1)


def average_precision(gt_video: np.ndarray, gt_label: np.ndarray, gt_start: np.ndarray, gt_end: np.ndarray,
                      pred_video: np.ndarray, pred_label: np.ndarray, pred_start: np.ndarray, pred_end: np.ndarray,
                      pred_score: np.ndarray, num_classes: int, thresholds: np.ndarray) -> np.ndarray:
    """AP per (threshold, class), shape (K, C), as ActivityNet's detection evaluator computes it, ties included.

    Videos and labels are integer codes; a prediction whose video has no ground truth simply has no candidate
    pair and so counts as a false positive. ``pred_score`` keeps the dtype the reference's DataFrame column
    would have, because its ranking is the reference's own ``argsort`` call on it (see ``_order``).
    """
    order, class_bounds = rank_by_score(pred_label, pred_score, num_classes)
    gt_group = gt_video * num_classes + gt_label
    pred_group = pred_video[order] * num_classes + pred_label[order]
    pred_start, pred_end = pred_start[order], pred_end[order]
    rank, gt_rows, tiou = candidate_pairs(gt_group, gt_start, gt_end, pred_group, pred_start, pred_end)
    # a pair below every threshold is never taken, so its place in a walk cannot matter
    useful = tiou >= thresholds.min()
    rank, gt_rows, tiou = rank[useful], gt_rows[useful], tiou[useful]
    walk = walk_positions(rank, gt_rows, tiou, pred_group, pred_start, pred_end, gt_group, gt_start, gt_end)
    true_positive = greedy_match(rank, gt_rows, tiou, walk, thresholds, order.shape[0], gt_label.shape[0])
    num_positive = np.bincount(gt_label, minlength=num_classes)
    ap = np.zeros((thresholds.shape[0], num_classes))
    for c in range(num_classes):  # a loop per class; each class is vectorised over thresholds and predictions
        ap[:, c] = interpolated_ap(true_positive[:, class_bounds[c]:class_bounds[c + 1]], int(num_positive[c]))
    return ap
