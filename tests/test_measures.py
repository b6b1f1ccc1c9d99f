"""The sequence measures the losses can swap in (Tables 3 and 4): soft-DTW against its recursion, each measure
against a hand computation, and the losses' ``similarity=`` argument wired through FTCL."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ftcl_plugin import FTCL, FSDLoss, FSDSimilarity, LCSLoss, LCSSimilarity, SoftDTWSimilarity, soft_dtw


def _soft_dtw_loop(cost: np.ndarray, gamma: float) -> float:
    """Cuturi and Blondel's recursion cell by cell in float64."""
    rows, cols = cost.shape
    table = np.full((rows + 1, cols + 1), math.inf)
    table[0, 0] = 0.0
    for i in range(1, rows + 1):
        for j in range(1, cols + 1):
            options = np.array([table[i - 1, j - 1], table[i - 1, j], table[i, j - 1]])
            finite = options[np.isfinite(options)]
            table[i, j] = cost[i - 1, j - 1] - gamma * math.log(np.exp(-finite / gamma).sum())
    return table[rows, cols]


def test_soft_dtw_matches_the_recursion_with_padding():
    generator = torch.Generator().manual_seed(0)
    cost = torch.rand(3, 4, 5, generator=generator, dtype=torch.float64)
    lengths_a, lengths_b = torch.tensor([4, 2, 3]), torch.tensor([5, 5, 1])
    got = soft_dtw(cost, gamma=0.5, lengths_a=lengths_a, lengths_b=lengths_b)
    expected = [_soft_dtw_loop(cost[p, :lengths_a[p], :lengths_b[p]].numpy(), 0.5) for p in range(3)]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))
    assert torch.autograd.gradcheck(lambda c: soft_dtw(c, gamma=0.5), (cost.requires_grad_(True),))


def test_soft_dtw_checks_its_inputs():
    with pytest.raises(ValueError, match=r"`gamma` must be > 0.0, but got 0"):
        soft_dtw(torch.zeros(1, 2, 2), gamma=0)
    with pytest.raises(ValueError, match=r"`cost` must have shape \(P, M, N\)"):
        soft_dtw(torch.zeros(2, 2))


def test_fsd_similarity_is_the_penalised_recursion_per_snippet():
    # hard max, cosines: the diagonal of 0.8 beats any detour (a gap costs c - 1 < 0): 3 x 0.8 over (3 + 3) / 2
    c = torch.full((1, 3, 3), 0.1, dtype=torch.float64)
    c[0, range(3), range(3)] = 0.8
    assert float(FSDSimilarity(gamma=0.0)(c)) == pytest.approx(0.8)
    # per snippet: the same pair padded to 5 x 4 with true lengths 3 x 3 scores the same
    padded = torch.zeros(1, 5, 4, dtype=torch.float64)
    padded[:, :3, :3] = c
    assert float(FSDSimilarity(gamma=0.0)(padded, torch.tensor([3]), torch.tensor([3]))) == pytest.approx(0.8)


def test_lcs_similarity_over_the_shorter_length():
    c = torch.tensor([[[0.95, 0.10, 0.20], [0.20, 0.93, 0.30]]])  # 2 x 3: both rows match once
    assert float(LCSSimilarity()(c)) == pytest.approx((0.95 + 0.93) / 2)
    assert float(LCSSimilarity(threshold=0.94)(c)) == pytest.approx(0.95 / 2)
    # with a floor, the top 2 of 6 cells match: the threshold drops to 0.93
    assert float(LCSSimilarity(threshold=0.99, min_match_fraction=2 / 6)(c)) == pytest.approx((0.95 + 0.93) / 2)


def test_soft_dtw_similarity_is_exp_of_minus_cost_per_step():
    c = torch.rand(2, 3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = [math.exp(-_soft_dtw_loop(1 - c[p].numpy(), 0.1) / 4) for p in range(2)]
    torch.testing.assert_close(SoftDTWSimilarity()(c), torch.tensor(expected, dtype=torch.float64))


def test_measure_arguments_are_checked():
    with pytest.raises(ValueError, match=r"`threshold` must be <= 1.0, but got 2"):
        LCSSimilarity(threshold=2)
    with pytest.raises(ValueError, match=r"`gamma` must be > 0.0, but got 0"):
        SoftDTWSimilarity(gamma=0)
    with pytest.raises(TypeError, match=r"`similarity` must be None or one of FSDSimilarity, LCSSimilarity, "
                                        r"SoftDTWSimilarity, but got str"):
        FSDLoss(4, similarity="lcs")
    with pytest.raises(ValueError, match=r"`similarity` must be None with variant='official'"):
        LCSLoss(variant="official", similarity=FSDSimilarity())


def _snippets(generator, batch=4, length=6, dim=5):
    return torch.rand(batch, length, dim, generator=generator, dtype=torch.float64)


def test_lcs_loss_with_another_measure_is_its_bce(generator):
    x = _snippets(generator)
    index_a, index_b, positive = torch.tensor([0, 0, 1]), torch.tensor([1, 2, 3]), torch.tensor([True, False, True])
    loss = LCSLoss(similarity=FSDSimilarity())
    terms = loss.forward_videos(x, index_a, index_b, positive)
    unit = x / x.norm(dim=-1, keepdim=True)
    cosines = unit[index_a] @ unit[index_b].transpose(1, 2)
    score = FSDSimilarity()(cosines).clamp(1e-6, 1 - 1e-6)
    expected = -torch.where(positive, score.log(), (1 - score).log()).mean()
    torch.testing.assert_close(terms.loss, expected)


def test_fsd_loss_with_another_measure_has_no_projections_and_ranks_the_measure(generator):
    loss = FSDLoss(5, similarity=SoftDTWSimilarity(), ranking_temperature=1.0)
    assert list(loss.parameters()) == []
    actions, backgrounds = _snippets(generator), _snippets(generator)
    terms = loss.forward_videos(actions, backgrounds, torch.tensor([0, 2]), torch.tensor([1, 3]),
                                torch.tensor([True, False]))
    unit = lambda t: t / t.norm(dim=-1, keepdim=True)  # noqa: E731
    score = lambda a, b: SoftDTWSimilarity()(unit(a) @ unit(b).transpose(1, 2))  # noqa: E731
    s_uv = score(actions[[0]], actions[[1]])
    s_uv_bg = score(actions[[0]], backgrounds[[1]])
    s_bg_uv = score(backgrounds[[0]], actions[[1]])
    expected = torch.nn.functional.softplus(s_uv_bg - s_uv) + torch.nn.functional.softplus(s_bg_uv - s_uv)
    torch.testing.assert_close(terms.loss, expected.squeeze())
    with pytest.raises(ValueError, match="`length_normalized` applies to FSD's own similarity"):
        FSDLoss(5, similarity=LCSSimilarity(), length_normalized=True)


@pytest.mark.parametrize("measures", [{"lcs_loss": LCSLoss(similarity=FSDSimilarity())},
                                      {"fsd_loss": FSDLoss(8, similarity=LCSSimilarity(min_match_fraction=0.05))},
                                      {"fsd_loss": FSDLoss(8, similarity=SoftDTWSimilarity()),
                                       "lcs_loss": LCSLoss(similarity=SoftDTWSimilarity())}],
                         ids=["both-FSD", "both-LCS", "soft-DTW"])
def test_swapped_measures_train_through_ftcl(generator, measures):
    features = torch.rand(6, 20, 8, generator=generator, requires_grad=True)
    attention = torch.rand(6, 20, generator=generator)
    labels = torch.eye(3)[[0, 0, 1, 1, 2, 2]]
    ftcl = FTCL(8, warmup_steps=0, max_grad_ratio=None, **measures)
    terms = ftcl.forward_terms(features, attention, labels)
    assert bool(torch.isfinite(terms.loss)) and int(terms.num_positive_pairs) == 3
    terms.loss.backward()
    assert features.grad.abs().sum() > 0
