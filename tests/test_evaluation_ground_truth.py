"""The shipped THUMOS14 and ActivityNet1.3 ground truth: provenance, loading by name, and mAP on real annotations."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ftcl_plugin.evaluation import detection_map, ground_truth, main

PACKAGE = resources.files("ftcl_plugin.evaluation.ground_truth")


def make_frame(rows):
    return pd.DataFrame(rows, columns=["video", "t_start", "t_end", "label", "score"])


def annotations(data, subset):
    return [(video, a["segment"][0], a["segment"][1], a["label"])
            for video, entry in data["database"].items() if entry["subset"] == subset for a in entry["annotations"]]


def test_files_are_the_upstream_files_named_in_the_notice():
    # NOTICE.md gives, per shipped file, the SHA-256 of the upstream file it reproduces byte for byte
    notice = PACKAGE.joinpath("NOTICE.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([\w.]+)` \| .* \| ([0-9a-f]{64}) \|$", notice, flags=re.MULTILINE)
    assert {name for name, _ in rows} == {"thumos14_gt.json.gz", "thumos14_split_train.txt",
                                          "thumos14_split_test.txt", "activitynet13_gt_validation.json.gz"}
    for name, digest in rows:
        data = PACKAGE.joinpath(name).read_bytes()
        if name.endswith(".gz"):
            data = gzip.decompress(data)
        assert hashlib.sha256(data).hexdigest() == digest, name


def test_thumos14_contents():
    data = ground_truth.load("thumos14")
    # counts restated in NOTICE.md and docs/evaluation.md
    assert len(annotations(data, "test")) == 3358 and len(annotations(data, "validation")) == 3007
    videos = {s: [v for v, e in data["database"].items() if e["subset"] == s] for s in ("validation", "test")}
    assert len(videos["validation"]) == 200 and len(videos["test"]) == 212
    assert {label for *_, label in annotations(data, "test")} == {label for *_, label in annotations(data, "validation")}
    assert len({label for *_, label in annotations(data, "test")}) == 20
    train, test = ground_truth.split("thumos14", "train"), ground_truth.split("thumos14", "test")
    assert sorted(train) == sorted(videos["validation"])
    assert sorted(set(videos["test"]) - set(test)) == ["video_test_0000270", "video_test_0001496"]
    assert set(test) <= set(videos["test"]) and len(test) == len(set(test)) == 210


def test_activitynet_contents():
    data = ground_truth.load("activitynet")
    database = data["database"]
    assert len(database) == 4419 and {e["subset"] for e in database.values()} == {"validation"}
    assert list(database) == sorted(database)
    rows = annotations(data, "validation")
    assert len(rows) == 6823 and len({label for *_, label in rows}) == 200
    assert sum(start == end for _, start, end, _ in rows) == 3  # zero-length instances, kept as upstream has them


def test_load_returns_a_fresh_copy_and_refuses_unknown_names():
    first = ground_truth.load("thumos14")
    first["database"].clear()
    assert len(ground_truth.load("thumos14")["database"]) == 412
    with pytest.raises(ValueError, match="`name` must be one of 'thumos14', 'activitynet', but got 'thumos15'"):
        ground_truth.load("thumos15")
    with pytest.raises(ValueError, match="no split file \\('activitynet', 'test'\\) is shipped"):
        ground_truth.split("activitynet", "test")


def test_evaluation_by_name_equals_evaluation_by_path(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(ground_truth.load("thumos14")))
    rows = annotations(ground_truth.load("thumos14"), "test")
    rng = np.random.default_rng(0)
    preds = make_frame([(v, s + 0.5, e + 0.5, label, float(x)) for (v, s, e, label), x in zip(rows, rng.random(len(rows)))])
    by_name = detection_map("thumos14", preds)
    assert by_name == detection_map(path, preds) == detection_map(ground_truth.load("thumos14"), preds)
    assert by_name["preset"] == "thumos14" and by_name["subset"] == "test"


def test_shipped_activitynet_defaults_to_its_own_preset():
    result = detection_map("activitynet", {"results": {}})
    assert result["preset"] == "activitynet" and result["subset"] == "validation" and len(result["mAP"]) == 10
    # an explicit preset still wins, and a wrong subset is named
    with pytest.raises(ValueError, match="`ground_truth` \\(shipped 'activitynet'\\) has no videos in subset 'test'; "
                                         "subsets present: 'validation'"):
        detection_map("activitynet", {"results": {}}, preset="thumos14")


def test_cli_by_name(tmp_path, capsys):
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps({"results": {"video_test_0000004": [
        {"segment": [0.2, 1.1], "label": "CricketBowling", "score": 0.5}]}}))
    assert main(["--gt", "thumos14", "--pred", str(pred)]) == 0
    assert "| method | 0.1 |" in capsys.readouterr().out
    assert main(["--gt", "activitynet", "--pred", str(pred), "--unknown-videos", "ignore"]) == 1
    assert "'CricketBowling', which is not a class of the ground-truth subset 'validation'" in capsys.readouterr().err


def test_thumos14_ground_truth_as_predictions():
    rows = annotations(ground_truth.load("thumos14"), "test")
    rng = np.random.default_rng(0)
    frame = make_frame([(v, s, e, label, float(score)) for (v, s, e, label), score in zip(rows, rng.random(len(rows)))])
    result = detection_map("thumos14", frame)
    assert result["mAP"] == [1.0] * 7
    assert result["summary"]["Avg 0.1:0.7"] == 1.0


def test_thumos14_shifted_predictions():
    # Every GT segment shifted right by 20% of its length: t-IoU with its own GT = 0.8 / 1.2 = 2/3. So at
    # t-IoU <= 0.6 each GT is found by its own copy and mAP is 1, and at 0.7 no copy matches its own GT.
    # A copy could only match at 0.7 through a *different* GT of its class overlapping it by >= 0.7,
    # which THUMOS14's test annotations do not contain: mAP@0.7 is 0.
    rows = annotations(ground_truth.load("thumos14"), "test")
    rng = np.random.default_rng(1)
    shifted = [(v, s + 0.2 * (e - s), e + 0.2 * (e - s), label, float(score))
               for (v, s, e, label), score in zip(rows, rng.random(len(rows)))]
    result = detection_map("thumos14", make_frame(shifted))
    np.testing.assert_allclose(result["mAP"], [1, 1, 1, 1, 1, 1, 0], atol=1e-12)
    assert result["summary"]["Avg 0.3:0.7"] == pytest.approx(0.8)


def test_activitynet_ground_truth_as_predictions():
    # ActivityNet1.3 validation holds three zero-length segments; their copies must still count (a 0/0 t-IoU
    # passes every threshold in the reference), so perfect predictions give 1.0 at all ten thresholds
    data = ground_truth.load("activitynet")
    rows = [(video, a["segment"][0], a["segment"][1], a["label"], 1.0 / (1 + i))
            for i, (video, entry) in enumerate(data["database"].items()) for a in entry["annotations"]]
    result = detection_map("activitynet", make_frame(rows))
    assert result["mAP"] == [1.0] * 10 and list(result["summary"])[-1] == "Avg 0.5:0.95"
    assert len(result["ap_per_class"]) == 200


def test_a_file_named_like_a_shipped_ground_truth_needs_a_path(tmp_path, monkeypatch):
    # a shipped name always means the shipped copy; a file of that name is reached as ./thumos14
    monkeypatch.chdir(tmp_path)
    Path("thumos14").write_text(json.dumps({"database": {"v": {"subset": "test", "annotations": [
        {"segment": [0, 1], "label": "Mine"}]}}}))
    assert "Mine" not in detection_map("thumos14", {"results": {}})["ap_per_class"]
    assert list(detection_map("./thumos14", {"results": {}})["ap_per_class"]) == ["Mine"]
