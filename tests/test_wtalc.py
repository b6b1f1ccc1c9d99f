"""W-TALC's inference as published (sujoyp/wtalc-pytorch detectionMAP.py and test.py), on logits small enough to
work out by hand: the class gate, the (max + min) / 2 threshold, the proposal score max logit + 0.7 * gate, the
softmax classification score, and the video whose classes all fail the gate."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ftcl_plugin.localization import LocalizationConfig, localize  # noqa: E402
from integrations.common.baseline import BaselineOutput  # noqa: E402
from integrations.common.config import load_config  # noqa: E402
from integrations.wtalc.model import WTALC, build_model, class_gate, detection_signals  # noqa: E402

NAMES = ["a", "b", "c"]


def _logits() -> torch.Tensor:
    """T = 17 snippets, 3 classes (every value >= -1, so the model below can produce them)."""
    logits = torch.full((17, 3), -1.0, dtype=torch.float64)
    logits[3:7, 0] = torch.tensor([2.0, 3.0, 2.5, 2.0], dtype=torch.float64)
    logits[10, 0] = 2.8
    logits[8:10, 1] = -0.5
    logits[:, 2] = 0.0
    logits[0:2, 2] = 1.0
    logits[15:17, 2] = 0.6
    return logits


def _identity_model() -> WTALC:
    """W-TALC with D = E = C = 3 whose logits are ``x - 1`` for non-negative features ``x`` (eval mode)."""
    model = WTALC(3, 3).eval()
    with torch.no_grad():
        model.embed.weight.copy_(torch.eye(3))
        model.embed.bias.zero_()
        model.classifier.weight.copy_(torch.eye(3))
        model.classifier.bias.fill_(-1.0)
    return model


def _config() -> LocalizationConfig:
    return LocalizationConfig(**load_config("wtalc", "thumos14", builtin_data=False)["localization"])


def _output(logits: torch.Tensor) -> BaselineOutput:
    return BaselineOutput(embedding=logits[None], attention=None, cas=logits[None],
                          video_scores=torch.softmax(logits.mean(0), 0)[None])


def test_proposals_and_scores_by_hand():
    # Gate: mean of the top floor(17 / 8) = 2 logits per class: a: (3 + 2.8) / 2 = 2.9; b: (-0.5 - 0.5) / 2 =
    # -0.5 (fails: b has a run at 8..9 above its own (max + min) / 2 = -0.75, but W-TALC zeroes the class);
    # c: (1 + 1) / 2 = 1.
    # a: max 3, min -1 -> cut 1; positions > 1: 3..6 and 10 -> run [3, 7) kept, [10, 11) too short (length 1).
    #    score = max raw logit 3 + 0.7 * 2.9 = 5.03; seconds [3, 7) * 0.64 = [1.92, 4.48].
    # c: max 1, min 0 -> cut 0.5; runs [0, 2) (score 1 + 0.7 = 1.7) and [15, 17) (0.6 + 0.7 = 1.3).
    # No NMS; each class by descending score.
    model = WTALC(3, 3)
    cas, _, attention = model.inference(_output(_logits()))
    assert attention is None
    out = localize(cas, np.full(3, 1 / 3), class_names=NAMES, num_snippets=17, config=_config())
    got = [(p["label"], [round(t, 10) for t in p["segment"]], round(p["score"], 10)) for p in out]
    assert got == [("a", [1.92, 4.48], 5.03), ("c", [0.0, 1.28], 1.7), ("c", [9.6, 10.88], 1.3)]


def test_gate_uses_floor_t_over_8_and_nan_below_8_snippets():
    model = WTALC(3, 3)
    torch.testing.assert_close(class_gate(_logits()), torch.tensor([2.9, -0.5, 1.0], dtype=torch.float64))
    assert bool(torch.isnan(class_gate(_logits()[:7])).all())  # floor(7 / 8) = 0 snippets: W-TALC's mean is NaN
    cas, _, _ = model.inference(_output(_logits()[:7]))
    assert not cas.any()  # so nothing is localized


def test_a_video_where_no_class_passes_the_gate_localizes_nothing():
    logits = -_logits().abs() - 0.1  # every logit negative: every gate is negative
    cas, scores, _ = WTALC(3, 3).inference(_output(logits))
    assert not cas.any()
    assert localize(cas, scores, class_names=NAMES, num_snippets=17, config=_config()) == []


def test_classification_score_is_the_softmax_of_the_top_ceil_t_over_8_mean():
    # test.py: softmax over classes of the mean of the top ceil(17 / 8) = 3 logits: a (3 + 2.8 + 2.5) / 3,
    # b (-0.5 - 0.5 - 1) / 3, c (1 + 1 + 0.6) / 3.
    model = _identity_model()
    features = (_logits() + 1.0).float()
    with torch.no_grad():
        output = model(features[None], torch.tensor([17]))
    torch.testing.assert_close(output.cas[0], _logits().float())
    means = [(3 + 2.8 + 2.5) / 3, (-0.5 - 0.5 - 1) / 3, (1 + 1 + 0.6) / 3]
    total = sum(math.exp(m) for m in means)
    expected = torch.tensor([math.exp(m) / total for m in means], dtype=torch.float64)
    _, scores, _ = model.inference(output)
    np.testing.assert_allclose(scores, expected.numpy(), rtol=1e-6)
    _, direct = detection_signals(_logits())  # the same score from the logits alone (the --upstream driver)
    np.testing.assert_allclose(direct.numpy(), expected.numpy(), rtol=1e-12)


def test_config_builds_w_talcs_batches_and_pairs():
    config = load_config("wtalc", "thumos14", builtin_data=False)
    assert (config["data"]["sampler"], config["data"]["similar_pairs"], config["data"]["train_sampling"]) == (
        "similar_pairs", 3, "crop")
    model = build_model(config["model"] | {"_all": config}, num_classes=20, feature_dim=64)
    assert (model.casl_pairs, model.num_pairs, model.gate_score_weight) == ("adjacent", 3, 0.7)
    assert model._pairs(torch.zeros(10, 20)).tolist() == [[0, 1], [2, 3], [4, 5]]


@pytest.mark.parametrize("dataset", ["thumos14", "activitynet"])
def test_localization_config_matches_detection_map(dataset):
    config = LocalizationConfig(**load_config("wtalc", dataset, builtin_data=False)["localization"])
    assert (config.upsample, config.cas_thresholds, config.threshold_mode, config.run_score, config.nms,
            config.min_length, config.class_score_weight, config.clip_to_duration) == (
        1, [0.5], "relative", "max", "none", 2, 0.0, False)
