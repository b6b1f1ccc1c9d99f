"""The two liveness options of the losses (FSD per-snippet similarities, LCS batch-calibrated threshold), their
activity flags, and that the paper's exact form is what the options' off position computes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from ftcl_plugin import FSDLoss, LCSLoss


def _fsd_inputs(generator, pairs=4, length=5, dim=6):
    return [torch.randn(pairs, length, dim, generator=generator, dtype=torch.float64) for _ in range(4)]


# ------------------------------------------------------------------------------------------------ FSD


def test_length_normalized_similarities_are_the_raw_ones_over_the_mean_length(generator):
    inputs = _fsd_inputs(generator)
    positive = torch.tensor([True, True, False, True])
    raw = FSDLoss(6, projection_dim=4).double()
    normalized = FSDLoss(6, projection_dim=4, length_normalized=True, ranking_temperature=1.0).double()
    normalized.load_state_dict(raw.state_dict())
    a, b = raw.forward_terms(*inputs, positive), normalized.forward_terms(*inputs, positive)
    for name in ("action_action", "action_background", "background_action"):
        torch.testing.assert_close(getattr(b, name), getattr(a, name) / 5.0)  # (5 + 5) / 2
    # Eq. 4's ranking loss on the normalised similarities, recomputed here
    per_pair = F.softplus(b.action_background - b.action_action) + F.softplus(b.background_action - b.action_action)
    torch.testing.assert_close(b.loss, per_pair[positive].mean())


def test_length_normalized_uses_each_pair_true_lengths(generator):
    actions = torch.randn(2, 5, 6, generator=generator, dtype=torch.float64)
    backgrounds = torch.randn(2, 4, 6, generator=generator, dtype=torch.float64)
    loss = FSDLoss(6, projection_dim=4, length_normalized=True).double()
    raw = FSDLoss(6, projection_dim=4).double()
    raw.load_state_dict(loss.state_dict())
    index_a, index_b, positive = torch.tensor([0]), torch.tensor([1]), torch.tensor([True])
    lengths = {"action_lengths": torch.tensor([3, 5]), "background_lengths": torch.tensor([4, 2])}
    got = loss.forward_videos(actions, backgrounds, index_a, index_b, positive, **lengths)
    expected = raw.forward_videos(actions, backgrounds, index_a, index_b, positive, **lengths)
    torch.testing.assert_close(got.action_action, expected.action_action / ((3 + 5) / 2))
    torch.testing.assert_close(got.action_background, expected.action_background / ((3 + 2) / 2))
    torch.testing.assert_close(got.background_action, expected.background_action / ((4 + 5) / 2))


def test_normalized_similarity_stays_in_its_bound(generator):
    # -1 <= s_hat < 2 + 2.2 gamma for square proposals (FSDLoss docstring): extreme residuals reach both ends.
    loss = FSDLoss(3, projection_dim=3, length_normalized=True).double()
    same = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64).expand(1, 5, 3)
    with torch.no_grad():
        for projection in (loss.match_projection, loss.insert_projection):
            projection.weight.copy_(torch.eye(3))
            projection.bias.zero_()
    top = loss.forward_terms(same, same, same, same, torch.tensor([True])).action_action
    bottom = loss.forward_terms(same, -same, same, same, torch.tensor([True])).action_action
    assert 1.5 < float(top.detach()) < 2 + 2.2 * 0.1
    assert -1.0 - 1e-9 <= float(bottom.detach()) < -0.9


def test_fsd_activity_flags_saturated_pairs():
    loss = FSDLoss(2, projection_dim=2)
    x = torch.tensor([[[1.0, 0.0]] * 5])
    y = torch.tensor([[[0.0, 1.0]] * 5])
    with torch.no_grad():
        for projection in (loss.match_projection, loss.insert_projection):
            projection.weight.copy_(torch.eye(2))
            projection.bias.zero_()
    # actions identical across the pair, backgrounds orthogonal to them: at eta = 0.2 both margins are about
    # -5 / 0.2, the softplus is flat: saturated. Negative pairs are never active in the paper variant.
    terms = loss.forward_terms(torch.cat([x, x]), torch.cat([x, x]), torch.cat([y, y]), torch.cat([y, y]),
                               torch.tensor([True, False]))
    assert terms.active.tolist() == [False, False]
    # per snippet at temperature 1 the same pair still has slope sigmoid(-1) = 0.27
    live = FSDLoss(2, projection_dim=2, length_normalized=True, ranking_temperature=1.0)
    live.load_state_dict(loss.state_dict())
    assert live.forward_terms(x, x, y, y, torch.tensor([True])).active.tolist() == [True]
    official = FSDLoss(2, variant="official", projection_dim=2)
    assert official.forward_terms(x, x, y, y, torch.tensor([True])).active.tolist() == [True]


def test_length_normalized_is_refused_for_the_release():
    with pytest.raises(ValueError, match="`length_normalized` must be False with variant='official'"):
        FSDLoss(4, variant="official", length_normalized=True)
    with pytest.raises(TypeError, match="`length_normalized` must be a bool"):
        FSDLoss(4, length_normalized=1)


# ------------------------------------------------------------------------------------------------ LCS


def _lcs(c: np.ndarray, threshold: float) -> float:
    """Eq. 6 by hand: a match (c >= tau) always takes the diagonal; otherwise the max of up/left."""
    table = np.zeros((c.shape[0] + 1, c.shape[1] + 1))
    for i in range(1, c.shape[0] + 1):
        for j in range(1, c.shape[1] + 1):
            table[i, j] = table[i - 1, j - 1] + c[i - 1, j - 1] if c[i - 1, j - 1] >= threshold \
                else max(table[i - 1, j], table[i, j - 1])
    return table[-1, -1]


def _unit(x: torch.Tensor) -> np.ndarray:
    x = x.numpy()
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_calibrated_threshold_is_the_batch_quantile_when_tau_is_out_of_reach(generator):
    a = torch.rand(3, 6, 5, generator=generator, dtype=torch.float64)
    b = torch.rand(3, 7, 5, generator=generator, dtype=torch.float64)
    positive = torch.tensor([True, False, True])
    cosines = np.einsum("pid,pjd->pij", _unit(a), _unit(b))
    fraction = 0.1
    values = np.sort(cosines.ravel())[::-1]
    expected_threshold = min(0.999, values[math.ceil(fraction * values.size) - 1])
    terms = LCSLoss(threshold=0.999, min_match_fraction=fraction).forward_terms(a, b, positive)
    assert float(terms.threshold) == pytest.approx(expected_threshold, abs=1e-12)
    expected = [_lcs(cosines[p], expected_threshold) for p in range(3)]
    torch.testing.assert_close(terms.length, torch.tensor(expected, dtype=torch.float64))
    assert (cosines >= expected_threshold).sum() >= math.ceil(fraction * values.size)
    assert terms.matched.tolist() == [x > 0 for x in expected]


def test_calibration_ignores_padding(generator):
    a = torch.rand(2, 6, 5, generator=generator, dtype=torch.float64)
    b = torch.rand(2, 6, 5, generator=generator, dtype=torch.float64)
    b_padded = torch.cat([b, torch.ones(2, 3, 5, dtype=torch.float64)], dim=1)  # padding would match best
    lengths_b = torch.tensor([6, 6])
    loss = LCSLoss(threshold=0.999, min_match_fraction=0.2)
    plain = loss.forward_terms(a, b, torch.tensor([True, True]))
    padded = loss.forward_terms(a, b_padded, torch.tensor([True, True]), lengths_b=lengths_b)
    torch.testing.assert_close(padded.threshold, plain.threshold)
    torch.testing.assert_close(padded.length, plain.length)


def test_threshold_within_reach_is_left_as_the_paper_has_it(generator):
    x = torch.rand(2, 6, 5, generator=generator, dtype=torch.float64)
    positive = torch.tensor([True, False])
    paper = LCSLoss().forward_terms(x, x, positive)
    calibrated = LCSLoss(min_match_fraction=0.05).forward_terms(x, x, positive)  # the diagonal is all 1.0
    assert float(calibrated.threshold) == pytest.approx(0.92)
    for got, expected in zip(calibrated, paper):
        torch.testing.assert_close(got, expected)
    off = LCSLoss(min_match_fraction=0.0).forward_terms(x, x, positive)
    torch.testing.assert_close(off.length, paper.length)


def test_calibration_revives_the_gradient_of_a_silent_batch(generator):
    a = torch.rand(2, 6, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    b = torch.rand(2, 6, 5, generator=generator, dtype=torch.float64)
    positive = torch.tensor([True, False])
    silent = LCSLoss(threshold=0.9999)
    assert float(silent.forward_terms(a, b, positive).length.detach().sum()) == 0.0
    assert torch.autograd.grad(silent(a, b, positive), a)[0].abs().sum() == 0
    live = LCSLoss(threshold=0.9999, min_match_fraction=0.1)
    assert torch.autograd.grad(live(a, b, positive), a)[0].abs().sum() > 0


def test_lcs_threshold_range_and_fraction_are_checked():
    with pytest.raises(ValueError, match=r"`threshold` must be <= 1.0, but got 1.5"):
        LCSLoss(threshold=1.5)
    with pytest.raises(ValueError, match=r"`threshold` must be >= -1.0, but got -2"):
        LCSLoss(threshold=-2)
    with pytest.raises(ValueError, match=r"`min_match_fraction` must be <= 1.0, but got 1.5"):
        LCSLoss(min_match_fraction=1.5)
    with pytest.raises(ValueError, match=r"`min_match_fraction` must be >= 0.0, but got -0.1"):
        LCSLoss(min_match_fraction=-0.1)
