"""CoLA details that differ from a plain reading of the paper: the tie order of its snippet selection (a descending
``sort``, not ``topk``) and the ActivityNet classifier of its anet12 branch."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from integrations.cola.model import CoLA, _gather, hard_rings  # noqa: E402
from integrations.common.config import load_config  # noqa: E402


def test_hard_picks_follow_the_descending_sort_on_ties():
    # The hard-action ring of a run at 5..14 in 20 snippets is {6, 7, 13} (worked out in test_baselines.py); with
    # k = 5 the last two picks are zero-score snippets, chosen by the tie order. CoLA's select_topk_embeddings takes
    # the first k of torch's descending sort; topk orders ties otherwise (on the CPU build this was written on it
    # picks 14 and 15), which changes the SniCo loss.
    actionness = torch.zeros(1, 20)
    actionness[0, 5:15] = 1.0
    inner, _ = hard_rings(actionness)
    scores = torch.zeros(1, 20)
    scores[0, [6, 7, 13]] = torch.tensor([0.3, 0.3, 0.2])
    scores = scores * inner
    embedding = torch.arange(20.0).reshape(1, 20, 1)
    rows, index = _gather(embedding, scores, 5)
    expected = scores.sort(dim=1, descending=True).indices[:, :5]
    assert torch.equal(index, expected) and index[0, :3].tolist() in ([6, 7, 13], [7, 6, 13])
    assert torch.equal(rows[0, :, 0], expected[0].float())


def test_activitynet_classifier_is_the_anet12_branchs():
    config = load_config("cola", "activitynet", builtin_data=False)
    model = CoLA(2048, 100, **{k: v for k, v in config["model"].items()})
    # embedding Conv1d k9 2048 -> 2048 with bias, classifier Conv1d k9 2048 -> 100 without bias, then a depthwise
    # Conv1d k7 (one filter per class, no bias): 2048*2048*9 + 2048 + 2048*100*9 + 100*7 parameters.
    assert sum(p.numel() for p in model.parameters()) == 2048 * 2048 * 9 + 2048 + 2048 * 100 * 9 + 100 * 7
    assert (model.classifier_dilated.dilation, model.classifier_dilated.groups) == ((2,), 100)
    assert config["localization"]["cas_thresholds"] == [0.0, 0.015, 0.03, 0.045, 0.06, 0.075, 0.09, 0.105, 0.12,
                                                        0.135]
    small = CoLA(16, 3, kernel_size=9, classifier_kernel_size=9, classifier_dilated_kernel=7).eval()
    out = small(torch.randn(2, 11, 16))
    assert out.cas.shape == (2, 11, 3) and bool((out.cas >= 0).all())


def test_dilated_classifier_is_depthwise_and_dilated():
    # One class, identity-free check: an impulse at t = 10 through a k = 7, dilation 2 depthwise conv with unit
    # weights reaches t = 10 - 6 .. 10 + 6 in steps of 2 (7 positions), before the ReLU.
    model = CoLA(4, 2, classifier_dilated_kernel=7).eval()
    with torch.no_grad():
        model.classifier_dilated.weight.fill_(1.0)
        impulse = torch.zeros(1, 2, 21)
        impulse[0, 0, 10] = 1.0
        spread = model.classifier_dilated(impulse)[0]
    assert spread[0].nonzero().flatten().tolist() == [4, 6, 8, 10, 12, 14, 16]
    assert float(spread[1].abs().sum()) == 0.0  # class 0 does not leak into class 1
