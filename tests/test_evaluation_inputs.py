"""Bad input to the evaluator: documented behaviour, or a ValueError / TypeError naming the argument, its file,
the video and entry (or DataFrame row), what was expected and what was found. Matched by message."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from ftcl_plugin.evaluation import detection_map

GT = {"database": {"v1": {"subset": "test", "duration": 100.0, "annotations": [{"segment": [0.0, 10.0], "label": "A"},
                                                                               {"segment": [20.0, 30.0], "label": "A"}]},
                   "v2": {"subset": "test", "duration": 100.0, "annotations": [{"segment": [5.0, 9.0], "label": "B"}]}}}
GOOD = {"segment": [0.0, 10.0], "label": "A", "score": 0.9}


def frame(rows):
    return pd.DataFrame(rows, columns=["video", "t_start", "t_end", "label", "score"])


def results(second_entry_of_v2):
    """Two videos; the culprit is entry 1 of video 'v2' (global row 3), so a message must not say 'prediction 3'."""
    return {"results": {"v1": [GOOD, GOOD], "v2": [dict(GOOD, label="B"), second_entry_of_v2]}}


# ----------------------------------------------------------------------------------------------------------------
# documented behaviour (no error)
# ----------------------------------------------------------------------------------------------------------------


def test_unknown_video_policies():
    gt = {"database": {"v1": GT["database"]["v1"]}}
    rows = [("elsewhere", 0.0, 10.0, "A", 0.9), ("v1", 0.0, 10.0, "A", 0.5)]
    # default: a false positive, as ActivityNet's evaluator counts it (ranked first; 1 of 2 found: AP 1/2 * 1/2)
    assert detection_map(gt, frame(rows), tiou_thresholds=[0.5])["mAP"] == [0.25]
    assert detection_map(gt, frame(rows), tiou_thresholds=[0.5], unknown_videos="ignore")["mAP"] == [0.5]
    with pytest.raises(ValueError, match="`predictions`: 1 video\\(s\\) are not in the ground-truth subset 'test': "
                                         "'elsewhere'"):
        detection_map(gt, frame(rows), unknown_videos="error")


def test_negative_infinite_and_integer_scores_and_empty_predictions():
    gt = {"database": {"v1": GT["database"]["v1"]}}
    # only the order of scores matters (OIC scores can be negative), as in ActivityNet's evaluator: the first
    # instance found by the best-ranked prediction, the second missed -> AP 1/2
    for score in (-3.0, math.inf, -math.inf, 7):
        assert detection_map(gt, frame([("v1", 0.0, 10.0, "A", score)]), tiou_thresholds=[0.5])["mAP"] == [0.5]
    assert detection_map(gt, {"results": {}})["mAP"] == [0.0] * 7
    assert detection_map(gt, {"results": {"v1": []}})["mAP"] == [0.0] * 7
    assert detection_map(gt, frame([]))["average_mAP"] == 0.0


def test_numpy_scalars_and_tuples_are_numbers():
    entry = {"segment": (np.float32(0.0), np.int64(10)), "label": "A", "score": np.float64(0.5)}
    assert detection_map(GT, {"results": {"v1": [entry]}}, tiou_thresholds=[0.5])["ap_per_class"]["A"] == [0.5]
    entry = {"segment": np.array([0.0, 10.0]), "label": "A", "score": np.int32(1)}
    assert detection_map(GT, {"results": {"v1": [entry]}}, tiou_thresholds=[0.5])["ap_per_class"]["A"] == [0.5]


def test_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "pred.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"results": {"v1": [GOOD]}}).encode())
    assert detection_map(GT, path, tiou_thresholds=[0.5])["ap_per_class"]["A"] == [0.5]  # 1 of 2 at precision 1


def test_ambiguous_predictions_are_dropped_before_matching(tmp_path):
    gt = {"database": {"v1": {"subset": "test", "annotations": [{"segment": [0.0, 10.0], "label": "A"}]}}}
    rows = [("v1", 40.0, 45.0, "A", 0.9), ("v1", 0.0, 10.0, "A", 0.5)]
    assert detection_map(gt, frame(rows), tiou_thresholds=[0.5])["mAP"] == [0.5]  # off by default
    path = tmp_path / "Ambiguous_test.txt"
    path.write_text("v1 44.5 50.0\nv9 0 1\n")
    assert detection_map(gt, frame(rows), tiou_thresholds=[0.5], ambiguous=path)["mAP"] == [1.0]
    # touching an interval (zero-length overlap) is not overlapping
    assert detection_map(gt, frame(rows), tiou_thresholds=[0.5], ambiguous={"v1": [[45.0, 50.0]]})["mAP"] == [0.5]


# ----------------------------------------------------------------------------------------------------------------
# values and structures inside a results dict: the message names the video and the entry inside it
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry, message", [
    (dict(GOOD, label="Nope"), "entry 1 of video 'v2' has 'label' 'Nope', which is not a class of the ground-truth "
                               "subset 'test' \\('A', 'B'\\)"),
    (dict(GOOD, label="a"), "entry 1 of video 'v2' has 'label' 'a', which .*\\. Did you mean 'A'\\?$"),
    (dict(GOOD, label=3), "entry 1 of video 'v2' has 'label' 3; expected a class name \\(a string\\)"),
    (dict(GOOD, score=math.nan), "entry 1 of video 'v2' has 'score' NaN; expected a number"),
    (dict(GOOD, score="0.5"), "entry 1 of video 'v2' has 'score' '0.5'; expected a number"),
    (dict(GOOD, score=True), "entry 1 of video 'v2' has 'score' True; expected a number"),
    (dict(GOOD, score=None), "entry 1 of video 'v2' has 'score' None; expected a number"),
    (dict(GOOD, score=[1]), "entry 1 of video 'v2' has 'score' \\[1\\]; expected a number"),
    (dict(GOOD, score=10 ** 400), "entry 1 of video 'v2' has 'score' an integer of about 401 digits; expected a number"),
    (dict(GOOD, segment=[2.0, 1.0]), "entry 1 of video 'v2' has 'segment' \\[2.0, 1.0\\]; expected end >= start"),
    (dict(GOOD, segment=[0.0, math.inf]), "entry 1 of video 'v2' has 'segment' \\[0.0, inf\\]; expected finite"),
    (dict(GOOD, segment=[0.0, math.nan]), "entry 1 of video 'v2' has 'segment' \\[0.0, nan\\]; expected finite"),
    (dict(GOOD, segment=[0, 1, 2]), "entry 1 of video 'v2' has 'segment' \\[0, 1, 2\\]; expected \\[start, end\\]"),
    (dict(GOOD, segment=[0]), "entry 1 of video 'v2' has 'segment' \\[0\\]; expected \\[start, end\\], two numbers"),
    (dict(GOOD, segment="01"), "entry 1 of video 'v2' has 'segment' '01'; expected \\[start, end\\]"),
    (dict(GOOD, segment=[0, True]), "entry 1 of video 'v2' has 'segment' \\[0, True\\]; expected"),
    (dict(GOOD, segment=[None, 1]), "entry 1 of video 'v2' has 'segment' \\[None, 1\\]; expected"),
    (dict(GOOD, segment=[0, 10 ** 400]), "entry 1 of video 'v2' has 'segment' \\[0, 1000"),
    ({"segment": [0, 1], "label": "A"}, "entry 1 of video 'v2' lacks field 'score'"),
    ([0, 1, "A", 1.0], "entry 1 of video 'v2' is \\[0, 1, 'A', 1.0\\]; expected an object with 'segment', 'label' and "
                       "'score'"),
    (None, "entry 1 of video 'v2' is None; expected an object"),
])
def test_bad_entry_is_named_by_video_and_position(entry, message):
    with pytest.raises(ValueError, match="^`predictions`: " + message):
        detection_map(GT, results(entry))


@pytest.mark.parametrize("predictions, message", [
    ({"version": "x"}, "must be in the ActivityNet results layout \\{'results': \\{video: \\[...\\]\\}\\}, but it has no "
                       "'results' key"),
    ({"results": [1, 2]}, "but its 'results' is a list"),
    ({"results": None}, "but its 'results' is null"),
    ({"results": {"v1": {"segment": [0, 1]}}}, "'results' of video 'v1' must be a list of .* but it is an object"),
    ({"results": {"v1": "abc"}}, "'results' of video 'v1' must be a list of .* but it is a string"),
    ({"results": {1: []}}, "video key 1 of 'results' must be a string"),
])
def test_bad_results_layout(predictions, message):
    with pytest.raises(ValueError, match=message):
        detection_map(GT, predictions)


@pytest.mark.parametrize("value, error, message", [
    ([1, 2], TypeError, "`predictions` must be a path, a results-JSON dict or a pandas DataFrame, but got list"),
    (None, TypeError, "but got NoneType"),
])
def test_unsupported_prediction_types(value, error, message):
    with pytest.raises(error, match=message):
        detection_map(GT, value)


# ----------------------------------------------------------------------------------------------------------------
# DataFrames: the message names the row
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("column, value, message", [
    ("score", True, "row 1 \\(video 'v2'\\) has 'score' True; expected a number"),
    ("score", "x", "row 1 \\(video 'v2'\\) has 'score' 'x'; expected a number"),
    ("score", 10 ** 400, "row 1 \\(video 'v2'\\) has 'score' an integer of about 401 digits"),
    ("score", math.nan, "row 1 \\(video 'v2'\\) has 'score' NaN"),
    ("t_start", None, "row 1 \\(video 'v2'\\) has 'segment' \\[nan, 10.0\\]; expected finite times"),
    ("t_end", "9", "row 1 \\(video 'v2'\\) has 't_end' '9'; expected a number"),
    ("label", math.nan, "row 1 \\(video 'v2'\\) has 'label' nan; expected a class name"),
    ("label", "Z", "row 1 \\(video 'v2'\\) has 'label' 'Z', which is not a class"),
    ("video", None, "row 1 has no 'video'"),
])
def test_bad_dataframe_cell_is_named_by_row(column, value, message):
    data = frame([("v1", 0.0, 10.0, "A", 0.9), ("v2", 0.0, 10.0, "B", 0.5)])
    data[column] = data[column].astype(object)
    data.loc[1, column] = value
    with pytest.raises(ValueError, match="^`predictions`: " + message):
        detection_map(GT, data)


def test_dataframe_without_a_column():
    with pytest.raises(ValueError, match="DataFrame must have columns video, t_start, t_end, label, score, but lacks "
                                         "score"):
        detection_map(GT, pd.DataFrame({"video": [], "t_start": [], "t_end": [], "label": []}))


# ----------------------------------------------------------------------------------------------------------------
# files: the message names the argument and the file
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content, message", [
    (b"", "is not valid JSON \\(Expecting value: line 1 column 1"),
    (b"{not json", "is not valid JSON"),
    (b'{"results": {"v\xe9": []}}', "is not UTF-8 text \\(byte 0xe9 at offset 15\\)"),
    (b"[" * 100_000 + b"]" * 100_000, "nests lists or objects too deeply to read"),
    (b'{"results": {"v1": [' + json.dumps(GOOD).encode() + b'], "v1": []}}',
     "has the key 'v1' twice in one object; a JSON reader would silently keep only the last one"),
    (b'{"results": {"v1": [{"segment": [0, 1], "label": "A", "score": 1, "score": 2}]}}', "has the key 'score' twice"),
    (b'{"results": {"v1": [{"segment": [0, 1], "label": "A", "score": 1' + b"0" * 5000 + b"}]}}",
     "is not valid JSON \\(Exceeds the limit"),
    (b"null", "must be in the ActivityNet results layout .* but it is null"),
    (b"[1, 2]", "must be in the ActivityNet results layout .* but it is a list"),
    (b'"text"', "must be in the ActivityNet results layout .* but it is a string"),
])
def test_bad_prediction_file_names_the_file(tmp_path, content, message):
    path = tmp_path / "pred.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"^`predictions` \\('{path}'\\):? " + message):
        detection_map(GT, path)


def test_bad_entry_in_a_file_names_file_video_and_entry(tmp_path):
    path = tmp_path / "pred.json"
    path.write_text(json.dumps(results(dict(GOOD, segment=[5, 1]))))
    with pytest.raises(ValueError, match=f"^`predictions` \\('{path}'\\): entry 1 of video 'v2' has 'segment' "
                                         "\\[5.0, 1.0\\]; expected end >= start.$"):
        detection_map(GT, path)


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(ValueError, match="`predictions` \\('.*missing.json'\\) cannot be read \\(No such file"):
        detection_map(GT, tmp_path / "missing.json")
    with pytest.raises(ValueError, match="`predictions` \\('.*'\\) cannot be read \\(Is a directory\\)"):
        detection_map(GT, tmp_path)
    with pytest.raises(ValueError, match="`ground_truth` \\('.*'\\) cannot be read \\(Is a directory\\)"):
        detection_map(tmp_path, {"results": {}})


# ----------------------------------------------------------------------------------------------------------------
# ground truth
# ----------------------------------------------------------------------------------------------------------------


def annotated(annotation, subset="test"):
    return {"database": {"v1": {"subset": subset, "annotations": [{"segment": [0, 1], "label": "A"}, annotation]}}}


@pytest.mark.parametrize("ground_truth, message", [
    (annotated({"segment": [3.0, 1.0], "label": "A"}), "annotation 1 of video 'v1' has 'segment' \\[3.0, 1.0\\]; it "
                                                       "must be finite with end >= start"),
    (annotated({"segment": [0.0, math.nan], "label": "A"}), "annotation 1 of video 'v1' has 'segment' \\[0.0, nan\\]"),
    (annotated({"segment": "07", "label": "A"}), "annotation 1 of video 'v1' has 'segment' '07'; expected \\[start, "
                                                 "end\\], two numbers"),
    (annotated({"segment": [0, 1, 2], "label": "A"}), "has 'segment' \\[0, 1, 2\\]; expected \\[start, end\\]"),
    (annotated({"segment": [True, 1], "label": "A"}), "has 'segment' \\[True, 1\\]; expected"),
    (annotated({"segment": [0, 10 ** 400], "label": "A"}), "annotation 1 of video 'v1' has 'segment' \\[0, 1000"),
    (annotated({"segment": [0, 1], "label": 5}), "annotation 1 of video 'v1' has 'label' 5; expected a class name"),
    (annotated({"segment": [0, 1], "label": ""}), "has 'label' ''; expected a class name \\(a non-empty string\\)"),
    (annotated({"segment": [0, 1]}), "annotation 1 of video 'v1' is \\{'segment': \\[0, 1\\]\\}; expected an object "
                                     "with 'segment' and 'label'"),
    ({"database": {"v1": {"subset": 0, "annotations": []}}}, "video 'v1' has 'subset' 0; expected a string such as "
                                                             "'test' or 'validation'"),
    ({"database": {"v1": {"subset": "test", "annotations": "abc"}}}, "'annotations' of video 'v1' must be a list, but "
                                                                     "it is a string"),
    ({"database": {"v1": [1]}}, "video 'v1' is a list; expected an object with 'subset' and 'annotations'"),
    ({"database": {"v1": {"annotations": []}}}, "video 'v1' has no 'subset' field"),
    ({"database": []}, "must be in the gt.json layout .* but its 'database' is a list"),
    ({"taxonomy": []}, "must be in the gt.json layout .* but it has no 'database' key"),
    ({"database": {}}, "has no videos in subset 'test'; subsets present: none"),
    ({"database": {"v1": {"subset": "test"}}}, "subset 'test' has no annotations, so mAP is undefined"),
    ({"database": {"v1": {"subset": "validation", "annotations": []}}}, "has no videos in subset 'test'; subsets "
                                                                        "present: 'validation'"),
])
def test_bad_ground_truth(ground_truth, message):
    with pytest.raises(ValueError, match=message) as caught:
        detection_map(ground_truth, {"results": {}})
    assert str(caught.value).startswith("`ground_truth`")


def test_subset_names_and_types():
    # a gt.json whose subsets are numbers is refused at the video, instead of "no videos in subset '0';
    # subsets present: '0'" (0 != "0")
    with pytest.raises(ValueError, match="video 'v1' has 'subset' 0; expected a string"):
        detection_map({"database": {"v1": {"subset": 0, "annotations": []}}}, {"results": {}}, subset="0")
    with pytest.raises(TypeError, match="`subset` must be a string such as 'test' or 'validation', but got int 0"):
        detection_map(GT, {"results": {}}, subset=0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="`tiou_thresholds` must be non-empty with every value in \\(0, 1\\]"):
        detection_map(GT, {"results": {}}, tiou_thresholds=[0.0, 0.5])
    with pytest.raises(ValueError, match="but got \\[nan\\]"):
        detection_map(GT, {"results": {}}, tiou_thresholds=[math.nan])
    with pytest.raises(TypeError, match="`tiou_thresholds` must be a sequence of numbers, but got the string '0.5'"):
        detection_map(GT, {"results": {}}, tiou_thresholds="0.5")
    with pytest.raises(ValueError, match="`preset` must be one of"):
        detection_map(GT, {"results": {}}, preset="thumos")
    with pytest.raises(TypeError, match="`ground_truth` must be a gt.json path, a shipped name \\(thumos14, "
                                        "activitynet\\) or a gt.json dict, but got list"):
        detection_map([GT], {"results": {}})


@pytest.mark.parametrize("ambiguous, error, message", [
    ("v1 nan 5\n", ValueError, "line 1 must read 'video start end' with finite times and start <= end, but got "
                               "'v1 nan 5'"),
    ("v1 0 1\nv1 5 1\n", ValueError, "line 2 must read .* but got 'v1 5 1'"),
    ("v1 0\n", ValueError, "line 1 must read 'video start end', but got 'v1 0'"),
    ("v1 0 1 2\n", ValueError, "line 1 must read .* but got 'v1 0 1 2'"),
    (b"v\xe9 1 2\n", ValueError, "is not UTF-8 text"),
    ({"v1": [[math.nan, 2]]}, ValueError, "`ambiguous`: video 'v1' has interval \\[nan, 2.0\\]; expected finite"),
    ({"v1": [1, 2]}, ValueError, "`ambiguous`: intervals of video 'v1' must be \\[start, end\\] pairs of numbers"),
    (3, TypeError, "`ambiguous` must be a path or a mapping"),
])
def test_bad_ambiguous_intervals(tmp_path, ambiguous, error, message):
    if isinstance(ambiguous, (str, bytes)):
        path = tmp_path / "Ambiguous_test.txt"
        path.write_bytes(ambiguous if isinstance(ambiguous, bytes) else ambiguous.encode())
        ambiguous = path
    with pytest.raises(error, match=message):
        detection_map(GT, {"results": {}}, ambiguous=ambiguous)
