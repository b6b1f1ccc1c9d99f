"""STPN's recipe choices (integrations/stpn): pooling, initialisation, the per-stream proposal signals of the paper's
two-stream inference, and the config that localizes them; values worked out by hand."""

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
from integrations.stpn.model import STPN, STPNStream, build_model  # noqa: E402


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_video_logit_is_the_attention_weighted_sum_or_mean_of_the_t_cam(pooling):
    torch.manual_seed(0)
    stream = STPNStream(6, 3, hidden_dim=4, pooling=pooling, init="xavier")
    features = torch.randn(2, 5, 6, dtype=torch.float64)
    stream = stream.double()
    valid = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    _, attention, logits, tcam = stream(features, valid)
    weighted = (attention[..., None] * tcam).sum(dim=1)
    if pooling == "mean":
        weighted = weighted / valid.sum(dim=1, keepdim=True)
    torch.testing.assert_close(logits, weighted + stream.classifier.bias)
    assert bool((attention[1, 3:] == 0).all())  # padded snippets get no attention and are not pooled


def test_inits():
    torch.manual_seed(0)
    normal = STPNStream(1024, 20)  # the default: N(0, 0.001^2) weights, zero biases (the reproduction)
    for layer in (normal.hidden, normal.attend, normal.classifier):
        assert float(layer.bias.detach().abs().max()) == 0.0
    assert float(normal.hidden.weight.detach().std()) == pytest.approx(0.001, rel=0.01)  # 262,144 draws
    xavier = STPNStream(1024, 20, init="xavier")
    bound = math.sqrt(6 / (1024 + 256))  # Glorot-uniform bound of the 1024 -> 256 layer
    largest = float(xavier.hidden.weight.detach().abs().max())
    assert 0.95 * bound < largest <= bound
    with pytest.raises(ValueError, match="`init` must be 'normal' or 'xavier', but got 'kaiming'"):
        STPNStream(4, 2, init="kaiming")
    with pytest.raises(ValueError, match="`pooling` must be 'sum' or 'mean', but got 'max'"):
        STPNStream(4, 2, pooling="max")


def test_defaults_are_the_chosen_recipe():
    model = STPN(64, 5)
    assert (model.rgb.pooling, model.sparsity_weight, model.stream_threshold, model.score_mix) == (
        "sum", 1e-4, 0.1, 0.5)


def _tiny_output() -> BaselineOutput:
    """T = 2, C = 2, both streams written out."""
    extras = {
        "rgb_attention": torch.tensor([[0.5, 1.0]]), "flow_attention": torch.tensor([[0.2, 0.4]]),
        "rgb_tcam": torch.tensor([[[2.0, 0.0], [4.0, -2.0]]]), "flow_tcam": torch.tensor([[[0.0, 2.0], [2.0, 2.0]]]),
        "rgb_logits": torch.tensor([[2.0, -3.0]]), "flow_logits": torch.tensor([[0.0, 0.0]]),
    }
    scores = torch.maximum(torch.sigmoid(extras["rgb_logits"]), torch.sigmoid(extras["flow_logits"]))
    return BaselineOutput(embedding=torch.zeros(1, 2, 4), attention=torch.zeros(1, 2), cas=torch.zeros(1, 2, 2),
                          video_scores=scores, extras=extras)


def test_inference_signals_by_hand():
    # Score signal of stream s: lambda^s (a^s + a^other) / 2.
    #   RGB:  t0 0.5 * ([2, 0] + [0, 2]) / 2 = [0.5, 0.5];  t1 1.0 * ([4, -2] + [2, 2]) / 2 = [3, 0]
    #   flow: t0 0.2 * ([0, 2] + [2, 0]) / 2 = [0.2, 0.2];  t1 0.4 * ([2, 2] + [4, -2]) / 2 = [1.2, 0]
    # Localization signal psi^s = lambda^s sigmoid(a^s), zero for a class the stream does not predict:
    #   RGB probabilities sigmoid(2) = 0.88, sigmoid(-3) = 0.047 <= 0.1 -> class 1 zeroed in the RGB stream;
    #   flow probabilities 0.5, 0.5 -> both kept.
    model = STPN(4, 2, hidden_dim=2)
    scores, video_scores, psi = model.inference(_tiny_output())
    np.testing.assert_allclose(scores, [[0.5, 0.5, 0.2, 0.2], [3.0, 0.0, 1.2, 0.0]], rtol=1e-6)
    expected_psi = [[0.5 * _sigmoid(2), 0.0, 0.2 * 0.5, 0.2 * _sigmoid(2)],
                    [1.0 * _sigmoid(4), 0.0, 0.4 * _sigmoid(2), 0.4 * _sigmoid(2)]]
    np.testing.assert_allclose(psi, expected_psi, rtol=1e-6)
    np.testing.assert_allclose(video_scores, [_sigmoid(2), 0.5], rtol=1e-6)


def test_config_localizes_both_streams_with_the_papers_settings():
    config = load_config("stpn", "thumos14", builtin_data=False)
    model = build_model(config["model"] | {"_all": config}, num_classes=2, feature_dim=4)
    localization = LocalizationConfig(**(config["localization"] | model.localization_overrides()))
    assert (localization.streams, localization.cas_thresholds, localization.attention_thresholds,
            localization.upsample, localization.outer_ratio, localization.nms_iou, localization.iou_mode,
            localization.clip_to_duration) == (2, [], [0.05], 24, 0.0, 0.5, "standard", False)
    assert (config["data"]["train_sampling"], config["data"]["test_sampling"]) == ("random", "uniform_fixed")
    assert config["data"]["train_segments"] == config["data"]["test_segments"] == 750  # sum pooling: same T
    assert model.stream_threshold == localization.class_threshold == 0.1
    # On the tiny video without upsampling: class a has the run [0, 1] in both streams, scored by the mean score
    # signal, RGB (0.5 + 3) / 2 = 1.75 and flow (0.2 + 1.2) / 2 = 0.7; the same segment twice, so NMS keeps 1.75.
    # Class b: the RGB stream does not predict it; flow's run [0, 1] scores (0.2 + 0) / 2 = 0.1.
    cas, video_scores, psi = model.inference(_tiny_output())
    plain = LocalizationConfig(**{**localization.__dict__, "upsample": 1})
    out = localize(cas, video_scores, attention=psi, class_names=["a", "b"], num_snippets=2, config=plain)
    assert [(p["label"], p["segment"], round(p["score"], 6)) for p in out] == [("a", [0.0, 1.28], 1.75),
                                                                              ("b", [0.0, 1.28], 0.1)]
