"""Ties in score and in t-IoU, decided exactly as ActivityNet's reference evaluator decides them.

The reference (``compute_average_precision_detection`` in ActivityNet's ``Evaluation/eval_detection.py``) ranks a
class's predictions by ``scores.argsort()[::-1]`` and lets each prediction walk the ground truths of its video
in ``tiou.argsort()[::-1]`` order. numpy's default sort is not stable, and with SIMD sorting its order among
equal keys depends on the array (length, the other values) and on the CPU. So the expected values below are
never written from a fixed rule such as "input order" or "later ground truth first": they come from the
reference's own calls on the reference's own arrays, either in a plain per-prediction loop written here from the
reference's description, or, in the hand-built cases, from the one ``argsort`` call that decides the case.
"""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from ftcl_plugin.evaluation import detection_map


def tiou_with(start, end, gt_starts, gt_ends):
    """t-IoU of one segment with each ground truth, with the reference's ``segment_iou`` arithmetic (0/0 = NaN)."""
    gt_starts, gt_ends = np.asarray(gt_starts, dtype=float), np.asarray(gt_ends, dtype=float)
    intersection = np.clip(np.minimum(end, gt_ends) - np.maximum(start, gt_starts), 0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        return intersection / ((gt_ends - gt_starts) + (end - start) - intersection)


def interpolated_ap(flags, num_positive):
    """VOC2011 all-point interpolated AP of TP flags in rank order, one step at a time."""
    if not flags:
        return 0.0
    precision, recall, hits = [], [], 0
    for count, flag in enumerate(flags, start=1):
        hits += flag
        precision.append(hits / count)
        recall.append(hits / num_positive)
    precision = [0.0] + precision + [0.0]
    recall = [0.0] + recall + [1.0]
    for i in range(len(precision) - 2, -1, -1):
        precision[i] = max(precision[i], precision[i + 1])
    return sum((recall[i] - recall[i - 1]) * precision[i] for i in range(1, len(recall)) if recall[i] != recall[i - 1])


def reference_rule_ap(gt_rows, pred_rows, thresholds):
    """AP per class and threshold by the reference's rule, one prediction at a time.

    gt_rows: [(video, start, end, label)] in file order; pred_rows: [(video, start, end, label, score)] in input
    order. Returns {label: [AP per threshold]} for the labels of the ground truth.
    """
    score_dtype = np.asarray([row[4] for row in pred_rows]).dtype  # the whole column's dtype, as in a DataFrame
    result = {}
    for label in dict.fromkeys(row[3] for row in gt_rows):
        gts = [row for row in gt_rows if row[3] == label]
        preds = [row for row in pred_rows if row[3] == label]
        ranking = np.asarray([row[4] for row in preds], dtype=score_dtype).argsort()[::-1]
        taken = [set() for _ in thresholds]
        flags = [[] for _ in thresholds]
        for p in ranking:
            video, start, end = preds[p][:3]
            mine = [g for g, row in enumerate(gts) if row[0] == video]  # this class's GT of the video, file order
            tiou = tiou_with(start, end, [gts[g][1] for g in mine], [gts[g][2] for g in mine])
            walk = tiou.argsort()[::-1]
            for k, threshold in enumerate(thresholds):
                hit = False
                for j in walk:
                    if tiou[j] < threshold:  # NaN never is: a 0/0 pair passes every threshold
                        break
                    if mine[j] in taken[k]:
                        continue
                    taken[k].add(mine[j])
                    hit = True
                    break
                flags[k].append(hit)
        result[label] = [interpolated_ap(flags[k], len(gts)) for k in range(len(thresholds))]
    return result


def make_gt(rows):
    database = {}
    for video, start, end, label in rows:
        database.setdefault(video, {"subset": "test", "duration": 100.0, "annotations": []})
        database[video]["annotations"].append({"segment": [start, end], "label": label})
    return {"database": database}


def make_frame(rows):
    return pd.DataFrame(rows, columns=["video", "t_start", "t_end", "label", "score"])


def make_results(rows):
    results = {}
    for video, start, end, label, score in rows:
        results.setdefault(video, []).append({"segment": [start, end], "label": label, "score": score})
    return {"results": results}


def tie_rich_case(seed):
    """Adjacent equal-length instances, straddling and covering predictions, duplicated scores and segments."""
    rng = random.Random(seed)
    gt_rows = []
    for video in ("a", "b", "c")[:rng.randint(1, 3)]:
        t = 0.0
        for _ in range(rng.randint(2, 24)):
            t += rng.choice([0.0, 0.0, 1.0])
            length = rng.choice([1.0, 2.0, 2.0, 3.0])
            gt_rows.append((video, t, t + length, rng.choice("XY")))
            t += length
    gt_rows += [gt_rows[rng.randrange(len(gt_rows))] for _ in range(rng.randint(0, 2))]  # duplicated GT
    if rng.random() < 0.3:  # a zero-length GT: 0/0 = NaN pairs with zero-length predictions
        video, start, _, label = gt_rows[rng.randrange(len(gt_rows))]
        gt_rows.append((video, start, start, label))
    pred_rows = []
    for video, start, end, label in gt_rows:
        for _ in range(rng.randint(0, 4)):
            mode = rng.random()
            if mode < 0.35:  # straddle a boundary between neighbours
                half = rng.choice([0.5, 1.0, 1.5])
                edge = rng.choice([start, end])
                s, e = edge - half, edge + half
            elif mode < 0.55:  # cover several instances
                s, e = start - rng.choice([0, 1, 2, 4]), end + rng.choice([0, 1, 3, 6])
            elif mode < 0.65:
                s = e = rng.choice([start, (start + end) / 2])
            else:
                s, e = start + rng.choice([-0.5, 0, 0.5]), end + rng.choice([-0.5, 0, 0.5])
            score = rng.choice([0.2, 0.5, 0.5, 0.9]) if rng.random() < 0.85 else rng.random()
            pred_rows.append((video, s, max(s, e), label if rng.random() < 0.9 else rng.choice("XY"), score))
    pred_rows += [pred_rows[rng.randrange(len(pred_rows))] for _ in range(rng.randint(0, 4)) if pred_rows]
    if seed % 4 == 0:  # every score an integer: the reference's column (and so its sort) is int64
        pred_rows = [row[:4] + (int(10 * row[4]),) for row in pred_rows]
    rng.shuffle(pred_rows)
    labels = {row[3] for row in gt_rows}
    return gt_rows, [row for row in pred_rows if row[3] in labels]


THRESHOLDS = [0.1, 0.25, 0.3, 1 / 3, 0.5, 0.6, 2 / 3, 0.7, 0.9, 1.0]


@pytest.mark.parametrize("seed", range(40))
def test_tie_rich_random_cases_follow_the_reference_rule(seed):
    gt_rows, pred_rows = tie_rich_case(seed)
    expected = reference_rule_ap(gt_rows, pred_rows, THRESHOLDS)
    # a DataFrame keeps the row order the reference sees; a results dict groups rows by video, so it gets the
    # grouped order in the reference loop too
    got = detection_map(make_gt(gt_rows), make_frame(pred_rows), tiou_thresholds=THRESHOLDS)["ap_per_class"]
    for label, values in expected.items():
        np.testing.assert_allclose(got[label], values, rtol=0, atol=1e-12, err_msg=f"class {label}")
    grouped = sorted(pred_rows, key=lambda row: list(dict.fromkeys(r[0] for r in pred_rows)).index(row[0]))
    got = detection_map(make_gt(gt_rows), make_results(pred_rows), tiou_thresholds=THRESHOLDS)["ap_per_class"]
    for label, values in reference_rule_ap(gt_rows, grouped, THRESHOLDS).items():
        np.testing.assert_allclose(got[label], values, rtol=0, atol=1e-12, err_msg=f"class {label}")


def test_random_cases_really_contain_ties():
    # the suite above is only worth something if its cases tie; count them in the first ten
    score_ties = tiou_ties = 0
    for seed in range(10):
        gt_rows, pred_rows = tie_rich_case(seed)
        scores = [row[4] for row in pred_rows]
        score_ties += len(scores) - len(set(scores))
        for video, start, end, label, _ in pred_rows:
            mine = [row for row in gt_rows if row[0] == video and row[3] == label]
            tiou = tiou_with(start, end, [r[1] for r in mine], [r[2] for r in mine])
            tiou = tiou[(tiou > 0) | np.isnan(tiou)]
            tiou_ties += int(tiou.size - np.unique(np.nan_to_num(tiou, nan=-1.0)).size)
    assert score_ties > 100 and tiou_ties > 20


# ----------------------------------------------------------------------------------------------------------------
# hand-built cases: each is decided by one argsort call, made here as the reference makes it
# ----------------------------------------------------------------------------------------------------------------


def test_straddling_prediction_between_two_adjacent_instances():
    # Two adjacent instances of equal length, A [0, 2] and A [2, 4]. p1 = [1, 3] straddles them: t-IoU 1/3 with
    # both (intersection 1, union 3). p2 = [2.5, 4.5] can only match [2, 4] (t-IoU 1.5/2.5 = 0.6).
    # At threshold 0.3: if p1's walk takes [2, 4], p2 is a false positive: TP, FP with 2 instances gives
    # AP = 1/2 (recall 1/2 at precision 1). If it takes [0, 2], p2 finds [2, 4]: AP = 1.
    # The walk is tiou.argsort()[::-1] on [1/3, 1/3]; numpy leaves a 2-element tie in place, so reversed it
    # tries [2, 4] first (the old "earlier ground truth" rule gave 1.0 here: mAP@0.3 off by 0.5).
    gt = make_gt([("v", 0.0, 2.0, "A"), ("v", 2.0, 4.0, "A")])
    preds = make_frame([("v", 1.0, 3.0, "A", 0.9), ("v", 2.5, 4.5, "A", 0.8)])
    walk = tiou_with(1.0, 3.0, [0.0, 2.0], [2.0, 4.0]).argsort()[::-1]
    expected = 0.5 if walk[0] == 1 else 1.0
    assert detection_map(gt, preds, tiou_thresholds=[0.3])["mAP"] == [expected]
    # at 0.7 neither p1 nor p2 matches anything: AP 0 whatever the walk
    assert detection_map(gt, preds, tiou_thresholds=[0.7])["mAP"] == [0.0]


def test_tie_decided_by_the_other_values_in_the_walk():
    # Four instances of A in one video, in file order: g0 [0, 2], g1 [2, 4], g2 [-3, 1.5], g3 [10, 12].
    # p1 = [1, 3] (score 0.9) has t-IoU [1/3, 1/3, 0.5/6, 0] with them; p2 = [2.5, 4.5] (0.8) reaches only g1
    # (0.6) and p3 = [0.2, 1.9] (0.7) only g0 at 0.3 (1.7/2 = 0.85; 1.3/4.9 with g2). At threshold 0.3:
    #   p1 takes g0 -> p2 TP, p3 FP: flags T T F, 4 instances -> AP = 1/4 + 1/4 = 1/2
    #   p1 takes g1 -> p2 FP, p3 TP: flags T F T -> AP = 1/4 * 1 + 1/4 * 2/3 = 5/12
    # With a SIMD sort (numpy >= 1.25 on AVX-512) this 4-element walk tries g0 first although the 2-element walk
    # above tries the later instance first: no fixed tie rule reproduces the reference, only its own call.
    gt = make_gt([("v", 0.0, 2.0, "A"), ("v", 2.0, 4.0, "A"), ("v", -3.0, 1.5, "A"), ("v", 10.0, 12.0, "A")])
    preds = make_frame([("v", 1.0, 3.0, "A", 0.9), ("v", 2.5, 4.5, "A", 0.8), ("v", 0.2, 1.9, "A", 0.7)])
    walk = tiou_with(1.0, 3.0, [0.0, 2.0, -3.0, 10.0], [2.0, 4.0, 1.5, 12.0]).argsort()[::-1]
    assert set(walk[:2]) == {0, 1}  # the tie is between g0 and g1, ahead of g2 and g3
    expected = 0.5 if walk[0] == 0 else 5 / 12
    assert detection_map(gt, preds, tiou_thresholds=[0.3])["mAP"] == pytest.approx([expected], abs=1e-15)


def test_equal_scores_ranked_by_the_reference_sort():
    # One instance A [0, 10]; the class's scores in input order are [0.5, 0.5] (a hit, then a miss).
    # The ranking is scores.argsort()[::-1]: a 2-element tie stays in place, so reversed the miss comes first:
    # FP, TP -> precision 1/2 at recall 1 -> AP 1/2 (a stable "input order" rule would give 1).
    gt = make_gt([("v", 0.0, 10.0, "A")])
    hit, miss = ("v", 0.0, 10.0, "A", 0.5), ("v", 50.0, 60.0, "A", 0.5)
    ranking = np.asarray([0.5, 0.5]).argsort()[::-1]
    assert detection_map(gt, make_frame([hit, miss]), tiou_thresholds=[0.5])["mAP"] == [
        1.0 if ranking[0] == 0 else 0.5]
    # With two more, lower scores [0.5, 0.5, 0.1, 0.0], the same two tied predictions may come out the other way
    # round (they do with a SIMD sort): hit first -> TP first -> AP 1; miss first -> AP 1/2.
    more = [hit, miss, ("v", 70.0, 80.0, "A", 0.1), ("v", 90.0, 95.0, "A", 0.0)]
    ranking = np.asarray([0.5, 0.5, 0.1, 0.0]).argsort()[::-1]
    assert detection_map(gt, make_frame(more), tiou_thresholds=[0.5])["mAP"] == [1.0 if ranking[0] == 0 else 0.5]


def test_integer_scores_are_sorted_as_integers():
    # The reference's DataFrame keeps integer scores as int64; the ranking call is made on that array.
    gt = make_gt([("v", 0.0, 10.0, "A")])
    rows = [("v", 50.0, 60.0, "A", 3), ("v", 0.0, 10.0, "A", 3), ("v", 70.0, 80.0, "A", 1), ("v", 5.0, 6.0, "A", 3)]
    ranking = np.asarray([3, 3, 1, 3], dtype=np.int64).argsort()[::-1]
    position = int(np.flatnonzero(ranking == 1)[0])  # where the hit lands: precision 1 / (position + 1)
    assert detection_map(gt, make_results(rows), tiou_thresholds=[0.5])["mAP"] == pytest.approx(
        [1 / (position + 1)], abs=1e-15)
