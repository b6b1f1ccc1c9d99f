"""The ftcl-eval command line: table, --output-json layout, exit codes and messages on bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ftcl_plugin.evaluation import main

GT = {"database": {
    "v1": {"subset": "test", "duration": 40.0, "annotations": [{"segment": [0.0, 10.0], "label": "A"},
                                                               {"segment": [20.0, 30.0], "label": "A"}]},
    "v2": {"subset": "validation", "duration": 40.0, "annotations": [{"segment": [1.0, 2.0], "label": "A"}]},
}}
PRED = {"version": "VERSION 1.3", "external_data": {}, "results": {
    "v1": [{"segment": [0.0, 10.0], "label": "A", "score": 0.9}, {"segment": [22.0, 30.0], "label": "A", "score": 0.8}],
}}


@pytest.fixture
def files(tmp_path):
    gt, pred = tmp_path / "gt.json", tmp_path / "pred.json"
    gt.write_text(json.dumps(GT))
    pred.write_text(json.dumps(PRED))
    return tmp_path, gt, pred


def test_prints_table_and_writes_output_json(files, capsys):
    folder, gt, pred = files
    out = folder / "out.json"
    assert main(["--gt", str(gt), "--pred", str(pred), "--preset", "thumos14", "--subset", "test",
                 "--output-json", str(out), "--name", "mine"]) == 0
    table = capsys.readouterr().out
    assert "| method | 0.1 | 0.2 | 0.3 | 0.4 | 0.5 | 0.6 | 0.7 | Avg 0.1:0.5 | Avg 0.3:0.7 | Avg 0.1:0.7 |" in table
    written = json.loads(out.read_text())
    assert list(written) == ["tiou_thresholds", "mAP", "average_mAP", "summary"]
    assert written["tiou_thresholds"] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    # the second prediction has t-IoU 0.8: found at every threshold up to 0.7 (fractions, not percent)
    assert written["mAP"] == [1.0] * 7 and written["average_mAP"] == 1.0


def test_custom_thresholds(files, capsys):
    _, gt, pred = files
    assert main(["--gt", str(gt), "--pred", str(pred), "--tiou-thresholds", "0.5,0.9"]) == 0
    # at 0.9 only the exact copy matches: recall 1/2 at precision 1
    assert "| 0.5 | 0.9 | Avg 0.5:0.9 |" in capsys.readouterr().out


@pytest.mark.parametrize("mutate, message", [
    (lambda g, p: p.write_text("{not json"), "is not valid JSON"),
    (lambda g, p: p.unlink(), "pred.json') cannot be read (No such file or directory)"),
    (lambda g, p: p.write_text(json.dumps({"results": {"v1": [{"segment": [0, 1], "label": "Z", "score": 1}]}})),
     "pred.json'): entry 0 of video 'v1' has 'label' 'Z', which is not a class of the ground-truth subset 'test'"),
    (lambda g, p: p.write_text(json.dumps({"results": {"v1": [{"segment": [3, 1], "label": "A", "score": 1}]}})),
     "pred.json'): entry 0 of video 'v1' has 'segment' [3.0, 1.0]; expected end >= start."),
    (lambda g, p: p.write_text(json.dumps({"results": {"v1": [{"segment": [0, 1], "label": "A"}]}})),
     "entry 0 of video 'v1' lacks field 'score'"),
    (lambda g, p: g.write_text(json.dumps({"taxonomy": []})), "gt.json') must be in the gt.json layout"),
    (lambda g, p: p.write_bytes(b"[" * 100_000 + b"]" * 100_000), "nests lists or objects too deeply"),
    (lambda g, p: p.write_text('{"results": {"v1": [{"segment": [0, 1], "label": "A", "score": 1' + "0" * 400 + "}]}}"),
     "entry 0 of video 'v1' has 'score' an integer of about 401 digits; expected a number"),
    (lambda g, p: p.write_bytes(b'{"results": {"v\xe9": []}}'), "pred.json') is not UTF-8 text"),
    (lambda g, p: g.write_text(json.dumps({"database": {"v1": {"subset": 1, "annotations": []}}})),
     "video 'v1' has 'subset' 1; expected a string such as 'test' or 'validation'"),
])
def test_bad_input_exits_1_with_message(files, capsys, mutate, message):
    _, gt, pred = files
    mutate(gt, pred)
    assert main(["--gt", str(gt), "--pred", str(pred)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("ftcl-eval: error: ") and message in captured.err


def test_missing_subset_and_usage_errors(files, capsys):
    _, gt, pred = files
    assert main(["--gt", str(gt), "--pred", str(pred), "--subset", "training"]) == 1
    assert "no videos in subset 'training'; subsets present: 'test', 'validation'" in capsys.readouterr().err
    assert main(["--gt", str(gt), "--pred", str(pred), "--preset", "nope"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main(["--pred", str(pred)]) == 2
    assert main(["--gt", str(gt), "--pred", str(pred), "--tiou-thresholds", "0.5,x"]) == 2


def test_unknown_videos_flag(files, capsys):
    folder, gt, _ = files
    pred = folder / "other.json"
    pred.write_text(json.dumps({"results": {"v2": [{"segment": [1.0, 2.0], "label": "A", "score": 1.0}]}}))
    assert main(["--gt", str(gt), "--pred", str(pred), "--unknown-videos", "error"]) == 1
    assert "1 video(s) are not in the ground-truth subset 'test': 'v2'" in capsys.readouterr().err


def test_output_json_is_replaced_whole(files, capsys):
    folder, gt, pred = files
    out = folder / "out.json"
    out.write_text("old contents")
    assert main(["--gt", str(gt), "--pred", str(pred), "--output-json", str(out)]) == 0
    assert json.loads(out.read_text())["mAP"] == [1.0] * 7
    assert sorted(p.name for p in folder.iterdir()) == ["gt.json", "out.json", "pred.json"]  # no temporary left
    assert main(["--gt", str(gt), "--pred", str(pred), "--output-json", str(folder)]) == 1  # a directory
    assert f"cannot write {str(folder)!r}" in capsys.readouterr().err


def test_python_dash_m(files):
    _, gt, pred = files
    done = subprocess.run([sys.executable, "-m", "ftcl_plugin.evaluation", "--gt", str(gt), "--pred", str(pred)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "| method |" in done.stdout
