"""CAS -> proposals: upsampling, runs, OIC, seconds, NMS, and an end-to-end case worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ftcl_plugin.evaluation import detection_map
from ftcl_plugin.localization import LocalizationConfig, localize, results_json, segment_iou

PLAIN = LocalizationConfig(upsample=1)


def test_one_plateau_oic_by_hand():
    # OIC with lambda = 0.2: run [4, 7] (n = 4) -> outer region int(3.2)=3 .. int(7.8)=7,
    # i.e. only position 3. CAS sweep scores the thresholded CAS (position 3 zeroed): 0.5 - 0 = 0.5.
    # Attention sweep scores the raw CAS: 0.5 - 0.1 = 0.4. NMS keeps the better copy of the same segment.
    cas = np.full((12, 1), 0.1)
    cas[4:8, 0] = 0.5
    attention = np.where(cas[:, 0] > 0.2, 0.9, 0.0)
    both = localize(cas, np.array([0.9]), attention=attention, class_names=["a"], num_snippets=12, config=PLAIN)
    assert [(p["segment"], round(p["score"], 12)) for p in both] == [([4 * 0.64, 8 * 0.64], 0.5)]
    attention_only = LocalizationConfig(upsample=1, cas_thresholds=())
    out = localize(cas, np.array([0.9]), attention=attention, class_names=["a"], num_snippets=12,
                   config=attention_only)
    assert [round(p["score"], 12) for p in out] == [0.4]
    weighted = LocalizationConfig(upsample=1, class_score_weight=0.2)  # + gamma * video score
    out = localize(cas, np.array([0.9]), class_names=["a"], num_snippets=12, config=weighted)
    assert out[0]["score"] == pytest.approx(0.5 + 0.2 * 0.9)


def test_runs_shorter_than_min_length_are_dropped():
    cas = np.zeros((10, 1))
    cas[2, 0] = 0.9  # a single position: dropped
    cas[5:7, 0] = 0.9  # two positions: kept
    out = localize(cas, np.array([0.9]), class_names=["a"], num_snippets=10, config=PLAIN)
    assert [p["segment"] for p in out] == [[5 * 0.64, 7 * 0.64]]


def test_seconds_scale_with_true_length_and_upsampling():
    cas = np.zeros((10, 1))
    cas[2:5, 0] = 0.9
    # T' = L: tau = 0.64 / u per upsampled position
    for factor in (1, 4):
        config = LocalizationConfig(upsample=factor)
        out = localize(cas, np.array([0.9]), class_names=["a"], num_snippets=10, config=config)
        start, end = out[0]["segment"]
        assert (start / (0.64 / factor)) == pytest.approx(round(start / (0.64 / factor)))
        assert (end / (0.64 / factor)) == pytest.approx(round(end / (0.64 / factor)))
    # L = 3 T': every second triples
    short = localize(cas, np.array([0.9]), class_names=["a"], num_snippets=10, config=PLAIN)[0]["segment"]
    long = localize(cas, np.array([0.9]), class_names=["a"], num_snippets=30, config=PLAIN)[0]["segment"]
    assert long == pytest.approx([3 * t for t in short])


def test_nms_iou_modes():
    # With the +1 quirk, [0, 1] s and [1.5, 2.5] s overlap 0.5 / 3.5; standard IoU gives 0
    a, b = np.array([0.0, 1.0]), np.array([[1.5, 2.5]])
    assert segment_iou(a, b, "plus_one")[0] == pytest.approx(0.5 / 3.5)
    assert segment_iou(a, b, "standard")[0] == 0.0


def _two_overlapping():
    cas = np.zeros((20, 1))
    cas[2:10, 0] = 0.9  # long run at the CAS sweep
    attention = np.zeros(20)
    attention[3:10] = 0.9  # a slightly shorter run at the attention sweep
    return cas, attention


def test_hard_and_soft_nms():
    cas, attention = _two_overlapping()
    kwargs = {"attention": attention, "class_names": ["a"], "num_snippets": 20}
    hard = localize(cas, np.array([0.9]), config=LocalizationConfig(upsample=1, iou_mode="standard"), **kwargs)
    assert len(hard) == 1  # IoU 7/8 >= 0.55
    loose = LocalizationConfig(upsample=1, iou_mode="standard", nms_iou=0.9)
    assert len(localize(cas, np.array([0.9]), config=loose, **kwargs)) == 2
    # one threshold per sweep, so exactly the two overlapping proposals reach soft-NMS
    single = {"upsample": 1, "iou_mode": "standard", "cas_thresholds": (0.15,), "attention_thresholds": (0.5,)}
    soft_config = LocalizationConfig(nms="soft", soft_nms_sigma=0.5, **single)
    soft = localize(cas, np.array([0.9]), config=soft_config, **kwargs)
    assert len(soft) == 2 and soft[0]["score"] >= soft[1]["score"]
    undecayed = localize(cas, np.array([0.9]), config=loose, **kwargs)
    first, second = sorted(undecayed, key=lambda p: -p["score"])
    iou = segment_iou(np.array(first["segment"]), np.array([second["segment"]]), "standard")[0]
    assert soft[1]["score"] == pytest.approx(second["score"] * np.exp(-iou ** 2 / 0.5))
    pruned = LocalizationConfig(nms="soft", soft_nms_min_score=0.5, **single)
    assert len(localize(cas, np.array([0.9]), config=pruned, **kwargs)) == 1


def test_class_selection_and_fallback():
    cas = np.zeros((10, 3))
    cas[2:5, :] = 0.9
    names = ["a", "b", "c"]
    picked = {p["label"] for p in localize(cas, np.array([0.3, 0.25, 0.1]), class_names=names, num_snippets=10,
                                           config=PLAIN)}
    assert picked == {"a"}  # strict: 0.25 is not above 0.25
    inclusive = LocalizationConfig(upsample=1, class_threshold_inclusive=True)
    picked = {p["label"] for p in localize(cas, np.array([0.3, 0.25, 0.1]), class_names=names, num_snippets=10,
                                           config=inclusive)}
    assert picked == {"a", "b"}
    fallback = {p["label"] for p in localize(cas, np.array([0.1, 0.2, 0.05]), class_names=names, num_snippets=10,
                                             config=PLAIN)}
    assert fallback == {"b"}  # none passes: the top class


def test_duration_clips_ends_only_when_asked():
    cas = np.zeros((10, 1))
    cas[6:10, 0] = 0.9
    # No baseline clips: by default the duration changes nothing (the run ends at 10 * 0.64 = 6.4 s).
    out = localize(cas, np.array([0.9]), class_names=["a"], num_snippets=10, duration=6.0, config=PLAIN)
    assert out[0]["segment"] == [6 * 0.64, 10 * 0.64]
    clip = LocalizationConfig(upsample=1, clip_to_duration=True)
    out = localize(cas, np.array([0.9]), class_names=["a"], num_snippets=10, duration=6.0, config=clip)
    assert out[0]["segment"] == [6 * 0.64, 6.0]
    assert localize(cas, np.array([0.9]), class_names=["a"], num_snippets=10, duration=3.0, config=clip) == []


def test_relative_threshold_and_max_score_by_hand():
    # W-TALC's rule: a column is cut at min + 0.5 * (max - min) = (max + min) / 2, strictly, and a run is scored
    # by its maximum. Column [0, 1, 4, 3.5, 1.2, -2, 2, 2]: min -2, max 4 -> cut 1; positions > 1: 2, 3, 4, 6, 7
    # -> runs [2, 4] (max 4) and [6, 7] (max 2). Negative values take part (no "> 0" condition).
    cas = np.array([[0.0, 1.0, 4.0, 3.5, 1.2, -2.0, 2.0, 2.0]]).T
    config = LocalizationConfig(upsample=1, cas_thresholds=(0.5,), threshold_mode="relative", run_score="max",
                                outer_ratio=0.0, nms="none", class_threshold=0.0, class_threshold_inclusive=True)
    out = localize(cas, np.array([0.5]), class_names=["a"], num_snippets=8, config=config)
    assert [(p["segment"], p["score"]) for p in out] == [([2 * 0.64, 5 * 0.64], 4.0), ([6 * 0.64, 8 * 0.64], 2.0)]
    # Shifting a column by a constant shifts the cut with it: same runs, scores shifted by the constant.
    shifted = localize(cas + 10, np.array([0.5]), class_names=["a"], num_snippets=8, config=config)
    assert [(p["segment"], p["score"]) for p in shifted] == [(p["segment"], p["score"] + 10) for p in out]
    # A constant (e.g. all-zero) column has no position above its own cut.
    assert localize(np.zeros((8, 1)), np.array([0.5]), class_names=["a"], num_snippets=8, config=config) == []


def test_nms_none_keeps_overlapping_runs_by_score():
    cas = np.array([[0.0, 0.5, 0.9, 0.9, 0.5, 0.0]]).T  # thresholds 0.4 and 0.8 give nested runs
    config = LocalizationConfig(upsample=1, cas_thresholds=(0.4, 0.8), run_score="max", nms="none")
    out = localize(cas, np.array([0.9]), class_names=["a"], num_snippets=6, config=config)
    assert [p["segment"] for p in out] == [[1 * 0.64, 5 * 0.64], [2 * 0.64, 4 * 0.64]]
    assert [p["score"] for p in out] == [0.9, 0.9]


def test_two_streams_are_swept_apart_and_pooled_before_nms():
    # Columns: [stream 0 class a, stream 0 class b, stream 1 class a, stream 1 class b]. The attention sweep runs
    # on each stream's own signal and scores on that stream's CAS column (mean, outer_ratio 0).
    length = 12
    cas = np.zeros((length, 4))
    signal = np.zeros((length, 4))
    signal[2:6, 0], cas[2:6, 0] = 0.5, 0.3  # stream 0, class a: run [2, 5], score 0.3
    signal[3:7, 2], cas[3:7, 2] = 0.5, 0.6  # stream 1, class a: run [3, 6], score 0.6; IoU with [2, 5] = 3/5
    signal[9:11, 2], cas[9:11, 2] = 0.5, 0.2  # stream 1, class a: run [9, 10], score 0.2, disjoint
    signal[0:3, 1], cas[0:3, 1] = 0.5, 0.4  # stream 0, class b: run [0, 2], score 0.4
    config = LocalizationConfig(upsample=1, streams=2, cas_thresholds=(), attention_thresholds=(0.05,),
                                outer_ratio=0.0, class_threshold=0.1, nms_iou=0.5, iou_mode="standard")
    out = localize(cas, np.array([0.9, 0.9]), attention=signal, class_names=["a", "b"], num_snippets=length,
                   config=config)
    got = [(p["label"], [round(t / 0.64, 6) for t in p["segment"]], round(p["score"], 12)) for p in out]
    # Class a: [3, 6] (0.6) suppresses stream 0's [2, 5] (IoU 0.6 >= 0.5); [9, 10] survives.
    assert got == [("a", [3, 7], 0.6), ("a", [9, 11], 0.2), ("b", [0, 3], 0.4)]
    loose = LocalizationConfig(**{**config.__dict__, "nms_iou": 0.7})
    out = localize(cas, np.array([0.9, 0.9]), attention=signal, class_names=["a", "b"], num_snippets=length,
                   config=loose)
    assert len([p for p in out if p["label"] == "a"]) == 3  # IoU 0.6 < 0.7: both streams' runs survive


def test_cola_config_is_invariant_to_cas_scale():
    config = LocalizationConfig.cola()
    assert (config.upsample, config.nms_iou, config.outer_ratio, len(config.cas_thresholds),
            len(config.attention_thresholds)) == (24, 0.6, 0.25, 10, 33)
    rng = np.random.default_rng(0)
    cas = rng.random((30, 2))
    attention = rng.random(30)
    one = localize(cas, np.array([0.9, 0.1]), attention=attention, class_names=["a", "b"], num_snippets=30,
                   config=config)
    scaled = localize(cas * 5, np.array([0.9, 0.1]), attention=attention * 5, class_names=["a", "b"],
                      num_snippets=30, config=config)
    assert len(one) == len(scaled) > 0
    np.testing.assert_allclose([p["segment"] for p in one], [p["segment"] for p in scaled], rtol=1e-12)
    np.testing.assert_allclose([p["score"] for p in one], [p["score"] for p in scaled], rtol=1e-12)


def test_tensors_and_no_mutation():
    cas = torch.zeros(10, 1)
    cas[2:5, 0] = 0.9
    before = cas.clone()
    out = localize(cas, torch.tensor([0.9]), attention=torch.zeros(10), class_names=["a"], num_snippets=10,
                   config=PLAIN)
    assert len(out) == 1 and torch.equal(cas, before)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"cas": np.zeros((5, 2)), "video_scores": np.zeros(3)}, ValueError, "`video_scores` must have shape \\(2,\\)"),
    ({"cas": np.zeros(5), "video_scores": np.zeros(1)}, ValueError, "`cas` must have shape \\(T, C\\)"),
    ({"cas": np.full((5, 1), np.nan), "video_scores": np.zeros(1)}, ValueError, "`cas` must be finite"),
    ({"cas": np.zeros((5, 1)), "video_scores": np.zeros(1), "attention": np.zeros(4)}, ValueError,
     "`attention` must have shape \\(5,\\)"),
    ({"cas": np.zeros((5, 2)), "video_scores": np.zeros(2), "attention": np.zeros((5, 3))}, ValueError,
     "`attention` must have shape \\(5,\\) or \\(5, 2\\), but got \\(5, 3\\)"),
    ({"cas": np.zeros((5, 1)), "video_scores": np.zeros(1), "num_snippets": 0}, ValueError, "`num_snippets`"),
    ({"cas": np.zeros((5, 1)), "video_scores": np.zeros(1), "class_names": ["a", "b"]}, ValueError,
     "`class_names` must have 1 names"),
    ({"cas": [["x"]], "video_scores": np.zeros(1)}, TypeError, "`cas` must be a numeric array"),
])
def test_input_errors(kwargs, error, message):
    arguments = {"class_names": ["a"] * (np.shape(kwargs["cas"])[-1] if np.ndim(kwargs["cas"]) == 2 else 1),
                 "num_snippets": 5, **kwargs}
    with pytest.raises(error, match=message):
        localize(arguments.pop("cas"), arguments.pop("video_scores"), **arguments)


def test_stream_layout_errors():
    config = LocalizationConfig(upsample=1, streams=2)
    with pytest.raises(ValueError, match="`cas` must have S\\*C columns for S = 2 streams, but got 3"):
        localize(np.zeros((5, 3)), np.zeros(1), class_names=["a"], num_snippets=5, config=config)
    with pytest.raises(ValueError, match="`video_scores` must have shape \\(2,\\)"):
        localize(np.zeros((5, 4)), np.zeros(4), class_names=["a"] * 4, num_snippets=5, config=config)
    with pytest.raises(ValueError, match="`streams` must be >= 1, but got 0"):
        LocalizationConfig(streams=0)
    with pytest.raises(ValueError, match="`threshold_mode` must be one of 'absolute', 'relative'"):
        LocalizationConfig(threshold_mode="max")
    with pytest.raises(ValueError, match="`run_score` must be one of 'oic', 'max'"):
        LocalizationConfig(run_score="mean")
    with pytest.raises(TypeError, match="`clip_to_duration` must be a bool, but got int"):
        LocalizationConfig(clip_to_duration=1)


def test_config_errors():
    with pytest.raises(ValueError, match="`nms` must be one of 'hard', 'soft'"):
        LocalizationConfig(nms="greedy")
    with pytest.raises(ValueError, match="`upsample` must be >= 1"):
        LocalizationConfig(upsample=0)
    with pytest.raises(ValueError, match="`nms_iou` must be <= 1"):
        LocalizationConfig(nms_iou=1.5)


def test_end_to_end_cas_to_map_by_hand():
    # T' = 10 sampled snippets of a video with L = 20: tau = 16 * 20 / (25 * 1 * 10) = 1.28 s per position.
    # Class "Jump" (video score 0.9 > 0.25) has two plateaus: [2, 4] at 0.8 and [7, 8] at 0.6; "Run" (0.1)
    # is not predicted. OIC (lambda 0.2): [2, 4] -> outer {1} = 0 -> 0.8; [7, 8] -> outer {6} = 0 -> 0.6.
    # Proposals: [2.56, 6.4] (0.8) and [8.96, 11.52] (0.6); the second threshold's copies fall to NMS.
    cas = np.zeros((10, 2))
    cas[2:5, 0] = 0.8
    cas[7:9, 0] = 0.6
    proposals = localize(cas, np.array([0.9, 0.1]), class_names=["Jump", "Run"], num_snippets=20, config=PLAIN)
    assert [(p["label"], p["score"]) for p in proposals] == [("Jump", pytest.approx(0.8)), ("Jump", pytest.approx(0.6))]
    assert proposals[0]["segment"] == pytest.approx([2.56, 6.4])
    assert proposals[1]["segment"] == pytest.approx([8.96, 11.52])
    gt = {"database": {"vid": {"subset": "test", "duration": 30.0, "annotations": [
        {"segment": [2.56, 6.4], "label": "Jump"},  # t-IoU 1 with the first proposal
        {"segment": [8.96, 13.0], "label": "Jump"},  # t-IoU 2.56 / 4.04 = 0.634 with the second
        {"segment": [20.0, 25.0], "label": "Jump"},  # never found
    ]}}}
    result = detection_map(gt, results_json({"vid": proposals}), tiou_thresholds=[0.5, 0.7])
    # 0.5: TP, TP of 3 GT -> AP 2/3; 0.7: TP, FP -> AP 1/3
    assert result["mAP"] == pytest.approx([2 / 3, 1 / 3], abs=1e-12)


def test_results_json_layout():
    proposals = {"v1": [{"segment": [0.0, 1.0], "label": "a", "score": 0.5}]}
    wrapped = results_json(proposals)
    assert set(wrapped) == {"version", "results", "external_data"}
    assert wrapped["results"] == proposals and wrapped["results"]["v1"][0] is not proposals["v1"][0]
