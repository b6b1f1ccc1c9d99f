"""Detection and classification mAP: hand-computed cases, presets, the metric object (ties, inputs and the
shipped ground truth have their own test_evaluation_*.py files)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from ftcl_plugin.evaluation import PRESETS, DetectionMAP, classification_map, detection_map, format_table

# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------


def make_gt(rows, subset="test", extra_videos=()):
    database = {}
    for video, start, end, label in rows:
        database.setdefault(video, {"subset": subset, "duration": 100.0, "annotations": []})
        database[video]["annotations"].append({"segment": [start, end], "label": label})
    for video in extra_videos:
        database.setdefault(video, {"subset": subset, "duration": 100.0, "annotations": []})
    return {"database": database}


def make_results(rows):
    results = {}
    for video, start, end, label, score in rows:
        results.setdefault(video, []).append({"segment": [start, end], "label": label, "score": score})
    return {"version": "VERSION 1.3", "results": results, "external_data": {}}


def make_frame(rows):
    return pd.DataFrame(rows, columns=["video", "t_start", "t_end", "label", "score"])


# Hand-computed case: two videos, two classes, B has no predictions.
HAND_GT = [("v1", 0.0, 10.0, "A"), ("v1", 20.0, 30.0, "A"), ("v2", 5.0, 15.0, "A"), ("v2", 0.0, 5.0, "B")]
HAND_PRED = [
    ("v1", 0.0, 10.0, "A", 0.9),  # t-IoU 1.0 with v1 [0, 10]
    ("v2", 0.0, 10.0, "A", 0.8),  # t-IoU 5/15 with v2 [5, 15]
    ("v1", 20.0, 28.0, "A", 0.7),  # t-IoU 0.8 with v1 [20, 30]
    ("v1", 0.0, 9.0, "A", 0.6),  # duplicate of the first: t-IoU 0.9, but that GT is taken
]


def test_hand_computed_ap_per_threshold():
    result = detection_map(make_gt(HAND_GT), make_results(HAND_PRED), tiou_thresholds=[0.3, 0.5, 0.9])
    # 0.3: TP TP TP FP, 3 GT -> every recall step at precision 1 -> AP 1
    # 0.5: TP FP TP FP -> precision 1, .5, 2/3, .5 at recall 1/3, 1/3, 2/3, 2/3 -> 1/3*1 + 1/3*2/3 = 5/9
    # 0.9: TP FP FP FP (the duplicate's 0.9 passes but its GT is taken) -> 1/3
    ap_a = result["ap_per_class"]["A"]
    assert ap_a == pytest.approx([1.0, 5 / 9, 1 / 3], abs=1e-12)
    assert result["ap_per_class"]["B"] == [0.0, 0.0, 0.0]  # a class without predictions gets AP 0
    assert result["mAP"] == pytest.approx([0.5, 5 / 18, 1 / 6], abs=1e-12)
    assert result["average_mAP"] == pytest.approx((0.5 + 5 / 18 + 1 / 6) / 3, abs=1e-12)


def test_duplicate_detection_is_false_positive():
    gt = make_gt([("v1", 0.0, 10.0, "A")])
    both = detection_map(gt, make_frame([("v1", 0.0, 10.0, "A", 0.9), ("v1", 0.0, 10.0, "A", 0.8)]),
                         tiou_thresholds=[0.5])
    # TP then FP: recall reaches 1 at precision 1, the FP after it does not lower the envelope
    assert both["mAP"] == [1.0]
    reversed_scores = detection_map(gt, make_frame([("v1", 5.0, 6.0, "A", 0.95), ("v1", 0.0, 10.0, "A", 0.9)]),
                                    tiou_thresholds=[0.5])
    assert reversed_scores["mAP"] == [0.5]  # FP first, TP second: precision 1/2 at recall 1


def test_tiou_exactly_at_threshold_counts():
    gt = make_gt([("v1", 0.0, 2.0, "A")])
    at_half = make_frame([("v1", 0.0, 1.0, "A", 1.0)])  # t-IoU exactly 0.5
    assert detection_map(gt, at_half, tiou_thresholds=[0.5, 0.6])["mAP"] == [1.0, 0.0]
    gt10 = make_gt([("v1", 0.0, 10.0, "A")])
    at_03 = make_frame([("v1", 0.0, 3.0, "A", 1.0)])  # t-IoU 3/10, the double nearest 0.3
    # THUMOS14 preset: np.linspace(0.1, 0.7, 7)[2] == 0.3 exactly, so the match counts
    assert detection_map(gt10, at_03, preset="thumos14")["summary"]["0.3"] == 1.0
    # ACM-Net's np.linspace(0.1, 0.9, 9)[2] is 0.30000000000000004, so it does not (as in ACM-Net's own script)
    assert detection_map(gt10, at_03, preset="thumos14-acmnet")["mAP"][2] == 0.0


def test_best_tiou_unmatched_ground_truth_is_taken():
    # the first prediction overlaps both GT; it must take the better one and leave the other for the second
    gt = make_gt([("v1", 0.0, 10.0, "A"), ("v1", 8.0, 18.0, "A")])
    preds = make_frame([("v1", 1.0, 12.0, "A", 0.9), ("v1", 7.0, 17.0, "A", 0.8)])
    # t-IoU of the first: 9/12 with [0, 10], 4/14 with [8, 18]; the second: 3/10 with [0, 10], 9/11 with [8, 18]
    result = detection_map(gt, preds, tiou_thresholds=[0.5])
    assert result["mAP"] == [1.0]


def test_zero_length_pairs_follow_activitynet():
    # ActivityNet's evaluator divides 0 by 0 for two zero-length segments; NaN passes its threshold test,
    # so such a prediction matches a zero-length GT (3 such GT exist in ActivityNet1.3 validation)
    gt = make_gt([("v1", 4.0, 4.0, "A"), ("v1", 10.0, 20.0, "A")])
    result = detection_map(gt, make_frame([("v1", 7.0, 7.0, "A", 0.9)]), tiou_thresholds=[0.5, 0.95])
    assert result["mAP"] == [0.5, 0.5]


def test_perfect_predictions_and_order_invariance():
    rng = np.random.default_rng(3)
    gt_rows = [(f"v{i % 5}", float(10 * i), float(10 * i + 4), "AB"[i % 2]) for i in range(20)]
    preds = [(v, s, e, label, float(rng.random())) for v, s, e, label in gt_rows]
    perfect = detection_map(make_gt(gt_rows), make_frame(preds))
    assert perfect["mAP"] == [1.0] * 7 and perfect["average_mAP"] == 1.0
    noisy = preds + [(v, s + 1.5, e + 2.0, label, float(rng.random())) for v, s, e, label in gt_rows]
    base = detection_map(make_gt(gt_rows), make_frame(noisy))["mAP"]
    shuffled = [noisy[i] for i in rng.permutation(len(noisy))]
    assert detection_map(make_gt(gt_rows), make_frame(shuffled))["mAP"] == pytest.approx(base, abs=1e-12)


def test_presets_and_summary_columns():
    assert PRESETS["thumos14"].thresholds == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    assert PRESETS["activitynet"].thresholds == pytest.approx(np.linspace(0.5, 0.95, 10))
    assert len(PRESETS["thumos14-acmnet"].thresholds) == 9
    result = detection_map(make_gt(HAND_GT), make_results(HAND_PRED))
    mean_ap = result["mAP"]
    assert list(result["summary"]) == ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7",
                                       "Avg 0.1:0.5", "Avg 0.3:0.7", "Avg 0.1:0.7"]
    assert result["summary"]["Avg 0.1:0.5"] == pytest.approx(np.mean(mean_ap[:5]))
    assert result["summary"]["Avg 0.3:0.7"] == pytest.approx(np.mean(mean_ap[2:]))
    assert result["summary"]["Avg 0.1:0.7"] == pytest.approx(result["average_mAP"])
    acm = detection_map(make_gt(HAND_GT), make_results(HAND_PRED), preset="thumos14-acmnet")
    assert list(acm["summary"])[-1] == "Avg 0.1:0.9" and "Avg 0.1:0.7" not in acm["summary"]
    anet = detection_map(make_gt(HAND_GT, subset="validation"), make_results(HAND_PRED), preset="activitynet")
    assert anet["subset"] == "validation" and list(anet["summary"])[-1] == "Avg 0.5:0.95"
    table = format_table(result, name="hand")
    assert table.splitlines()[0].startswith("| method | 0.1 |") and "| hand |" in table


def test_metric_object_update_compute_reset():
    metric = DetectionMAP(make_gt(HAND_GT), tiou_thresholds=[0.3, 0.5, 0.9])
    metric.update(make_frame(HAND_PRED[:2]))
    metric.update(make_results(HAND_PRED[2:]))
    assert metric.compute() == detection_map(make_gt(HAND_GT), make_results(HAND_PRED),
                                             tiou_thresholds=[0.3, 0.5, 0.9])
    metric.reset()
    assert metric.compute()["mAP"] == [0.0, 0.0, 0.0]  # no predictions: AP 0 everywhere, as ActivityNet


def test_reference_column_names_and_top_level_exports():
    import ftcl_plugin

    frame = make_frame(HAND_PRED).rename(columns={"video": "video-id", "t_start": "t-start", "t_end": "t-end"})
    expected = detection_map(make_gt(HAND_GT), make_frame(HAND_PRED))
    assert ftcl_plugin.detection_map(make_gt(HAND_GT), frame) == expected
    assert ftcl_plugin.DetectionMAP is DetectionMAP and ftcl_plugin.classification_map is classification_map


def test_inputs_are_not_mutated():
    gt, results, frame = make_gt(HAND_GT), make_results(HAND_PRED), make_frame(HAND_PRED)
    before = (json.dumps(gt), json.dumps(results), frame.copy())
    detection_map(gt, results)
    detection_map(gt, frame)
    assert (json.dumps(gt), json.dumps(results)) == before[:2]
    pd.testing.assert_frame_equal(frame, before[2])


# ----------------------------------------------------------------------------------------------------------------
# classification mAP
# ----------------------------------------------------------------------------------------------------------------


def test_classification_map_hand_computed():
    scores = np.array([[0.9, 0.2], [0.8, 0.7], [0.1, 0.6], [0.5, 0.1]])
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    # class 0 ranking: +, -, -, + -> AP = (1/1 + 2/4) / 2 = 0.75; class 1 ranking: +, +, -, - -> AP 1
    assert classification_map(scores, labels) == pytest.approx((0.75 + 1.0) / 2)


def test_classification_map_ties_and_errors():
    # one tied block holding a positive and a negative: a single operating point at precision 1/2
    assert classification_map([[0.5], [0.5]], [[1], [0]]) == pytest.approx(0.5)
    assert classification_map([[0.5], [0.5]], [[0], [1]]) == pytest.approx(0.5)
    assert classification_map(torch.tensor([[0.9, 0.1]]), torch.tensor([[1.0, 0.0]])) == 1.0
    with pytest.raises(ValueError, match="`labels` must have the same shape as `scores`"):
        classification_map(np.zeros((2, 3)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="multi-hot"):
        classification_map(np.zeros((2, 2)), np.full((2, 2), 0.5))
    with pytest.raises(ValueError, match="no positive entry"):
        classification_map(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="must not contain NaN"):
        classification_map(np.full((1, 1), math.nan), np.ones((1, 1)))
