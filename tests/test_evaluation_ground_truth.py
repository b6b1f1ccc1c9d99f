"""The shipped THUMOS14 and ActivityNet1.3 ground truth: provenance and contents."""

from __future__ import annotations

import gzip
import hashlib
import re
from importlib import resources

import pytest

from ftcl_plugin.evaluation import ground_truth

PACKAGE = resources.files("ftcl_plugin.evaluation.ground_truth")


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
