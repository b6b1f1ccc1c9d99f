"""Numerics of the DP kernels at the edges: NaN and infinities, the range of gamma, the smooth LCS.

The smooth LCS (``gamma > 0``) is checked against brute-force enumeration: with the log-mean-exp at unmatched
cells, ``exp(R / gamma)`` is the average of ``exp(W / gamma)`` over the random walk that, from ``(M, N)``, steps
diagonally on a match and otherwise up or left with probability 1/2 each, W being the matched similarity it
collects; the gradient is the expected match indicator under that average's tilted weights.
"""

from __future__ import annotations

import math

import pytest
import torch

from ftcl_plugin import ActionSelector, BackgroundSelector, LCSLoss, ProposalSelector, _dp
from ftcl_plugin import _reference as ref
from ftcl_plugin.functional import cosine_similarity_matrix, fsd_alignment, fsd_similarity, lcs_length
from ftcl_plugin.selectors import select_all

F64 = torch.float64
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")


def _rand(*shape, generator, low=-1.0, high=1.0):
    return torch.rand(*shape, generator=generator, dtype=F64) * (high - low) + low


def _grads(value, inputs):
    return torch.autograd.grad(value.sum(), inputs)


# ------------------------------------------------------------------------------------------------
# NaN in, NaN out
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.0, 0.1])
def test_a_nan_similarity_makes_the_lcs_length_nan(gamma, generator):
    c = _rand(3, 4, 5, generator=generator, low=0.0, high=1.0)
    c[0, 2, 3] = math.nan  # below any threshold as far as `>=` knows
    c[2, 0, 0] = math.nan
    value = lcs_length(c, threshold=0.5, gamma=gamma)
    assert torch.isnan(value[0]) and torch.isnan(value[2]) and torch.isfinite(value[1])
    torch.testing.assert_close(value, ref.lcs_loop(c, 0.5, False, gamma), equal_nan=True)
    # a NaN in the padding is never read
    lengths_a = torch.tensor([2, 4, 4])
    padded = lcs_length(c, threshold=0.5, gamma=gamma, lengths_a=lengths_a)
    assert torch.isfinite(padded[0]) and torch.isnan(padded[2])
    torch.testing.assert_close(padded[0], lcs_length(c[:1, :2], threshold=0.5, gamma=gamma)[0])


def test_lcs_loss_with_a_nan_snippet_is_nan_not_a_finite_loss(generator):
    # before: the NaN row of cosines counted as "no match", r = 0 and the loss was a finite 6.9078
    # (= -log(1e-6), the clamp) with NaN gradients
    first = torch.rand(2, 30, 64, generator=generator)
    second = torch.rand(2, 30, 64, generator=generator)
    first[0, 3] = math.nan
    terms = LCSLoss().forward_terms(first, second, torch.tensor([True, False]))
    assert torch.isnan(terms.length[0]) and torch.isnan(terms.loss)


@pytest.mark.parametrize("gamma", [0.0, 0.1])
@pytest.mark.parametrize("which", [0, 1, 2])
def test_a_nan_residual_makes_fsd_nan(gamma, which, generator):
    # every cell of the block reaches the corner through max / logsumexp, which propagate NaN
    for i, j in [(0, 0), (2, 1), (3, 4)]:
        residuals = [_rand(1, 4, 5, generator=generator) for _ in range(3)]
        residuals[which][0, i, j] = math.nan
        assert torch.isnan(fsd_similarity(*residuals, gamma=gamma)).all()


# ------------------------------------------------------------------------------------------------
# infinities
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.0, 0.1])
@pytest.mark.parametrize("which", [0, 1, 2])
@pytest.mark.parametrize("cell", [(0, 0), (2, 1), (4, 3)])
def test_one_minus_inf_residual_keeps_gradients_finite_as_plain_autograd(gamma, which, cell, generator):
    # before: mu = -inf gave S(i, j) = -inf and the backward's S - mu = -inf + inf = NaN softmax weights,
    # although plain autograd of the same recursion stays finite; (4, 3) is the result cell itself
    residuals = [_rand(2, 5, 4, generator=generator) for _ in range(3)]
    residuals[which][0, cell[0], cell[1]] = -math.inf
    ours_inputs = [x.clone().requires_grad_() for x in residuals]
    loop_inputs = [x.clone().requires_grad_() for x in residuals]
    ours = fsd_similarity(*ours_inputs, gamma=gamma)
    loop = ref.fsd_loop(*loop_inputs, gamma=gamma)
    torch.testing.assert_close(ours, loop, rtol=1e-10, atol=1e-10)
    for a, b in zip(_grads(ours, ours_inputs), _grads(loop, loop_inputs)):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_minus_inf_gaps_forbid_moves(generator):
    # g = h = -inf leaves only the diagonal: S = sum of mu along the diagonal from the boundary
    mu = _rand(1, 3, 3, generator=generator).requires_grad_()
    blocked = torch.full((1, 3, 3), -math.inf, dtype=F64)
    for gamma in (0.0, 0.1):
        value = fsd_similarity(mu, blocked, gamma=gamma)
        torch.testing.assert_close(value, mu.diagonal(dim1=1, dim2=2).sum(1))
        (grad,) = _grads(value, [mu])
        torch.testing.assert_close(grad[0], torch.eye(3, dtype=F64))


# ------------------------------------------------------------------------------------------------
# the range of gamma
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [1e-20, 5e-324, 1e-5, 2e4, 1e300])
def test_gamma_outside_the_supported_range_is_refused(gamma):
    # before: <= 1e-20 gave NaN gradients, a subnormal gamma NaN values, 1e300 an astronomically large S
    c = torch.rand(1, 3, 3)
    message = r"`gamma` must be 0 \(the hard max\) or lie in \[0.0001, 10000\], but got "
    with pytest.raises(ValueError, match=message):
        fsd_similarity(c, c, gamma=gamma)
    with pytest.raises(ValueError, match=message):
        fsd_alignment(c, c, gamma=gamma)
    with pytest.raises(ValueError, match=message):
        lcs_length(c, gamma=gamma)


def test_infinite_and_nan_gamma_are_refused():
    c = torch.rand(1, 3, 3)
    with pytest.raises(ValueError, match=r"`gamma` must be finite, but got inf"):
        fsd_similarity(c, c, gamma=math.inf)
    with pytest.raises(ValueError, match=r"`gamma` must not be NaN"):
        lcs_length(c, gamma=math.nan)
    with pytest.raises(ValueError, match=r"`threshold` must be finite, but got -inf"):
        lcs_length(c, threshold=-math.inf)


@pytest.mark.parametrize("gamma", [1e-4, 1e4])
def test_both_ends_of_the_gamma_range_match_the_float64_loops(gamma, generator):
    mu, g = (_rand(2, 6, 5, generator=generator).requires_grad_() for _ in range(2))
    ours, loop = fsd_similarity(mu, g, gamma=gamma), ref.fsd_loop(mu, g, None, gamma)
    torch.testing.assert_close(ours, loop, rtol=1e-12, atol=1e-12)
    for a, b in zip(_grads(ours, [mu, g]), _grads(loop, [mu, g])):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    c = _rand(2, 6, 5, generator=generator, low=0.0, high=1.0).requires_grad_()
    ours, loop = lcs_length(c, threshold=0.6, gamma=gamma), ref.lcs_loop(c, 0.6, False, gamma)
    torch.testing.assert_close(ours, loop, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(_grads(ours, [c])[0], _grads(loop, [c])[0], rtol=1e-9, atol=1e-9)


def test_gamma_range_ends_behave_as_documented(generator):
    mu, g = (_rand(1, 5, 5, generator=generator) for _ in range(2))
    # 1e-4: within gamma * ln 3 * (M + N - 1) of the hard max (the smoothing bias bound)
    gap = fsd_similarity(mu, g, gamma=1e-4) - fsd_similarity(mu, g, gamma=0.0)
    assert 0 <= gap.item() <= 1e-4 * math.log(3) * 9
    # 1e4: S is dominated by gamma * ln(#paths); 1683 move sequences reach the 5x5 boundary (the path count
    # f(i, j) = f(i-1, j-1) + f(i-1, j) + f(i, j-1), f = 1 on the boundary), and S exceeds that by at most
    # the largest |path score|, here below 2 * 9
    bias = 1e4 * math.log(1683)
    assert abs(fsd_similarity(mu, g, gamma=1e4).item() - bias) < 18


# ------------------------------------------------------------------------------------------------
# the smooth LCS (gamma > 0): log-mean-exp at unmatched cells
# ------------------------------------------------------------------------------------------------


def _walks(c, hits, i, j):
    """(probability, matched weight W, matched cells) of every random walk from (i, j) to the boundary."""
    if i == 0 or j == 0:
        return [(1.0, 0.0, ())]
    if hits[i - 1][j - 1]:
        return [(p, w + c[i - 1][j - 1], cells + ((i - 1, j - 1),)) for p, w, cells in _walks(c, hits, i - 1, j - 1)]
    return [(p / 2, w, cells) for p, w, cells in _walks(c, hits, i - 1, j) + _walks(c, hits, i, j - 1)]


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (3, 3), (3, 4), (4, 2)])
@pytest.mark.parametrize("gamma", [0.05, 0.3, 2.0])
def test_smooth_lcs_equals_brute_force_over_random_walks(size, gamma, generator):
    m, n = size
    for _ in range(3):
        c = _rand(1, m, n, generator=generator, low=0.0, high=1.0).requires_grad_()
        hits = (c[0] >= 0.5).tolist()
        walks = _walks(c[0].tolist(), hits, m, n)
        assert sum(p for p, _, _ in walks) == pytest.approx(1.0)
        log_weights = torch.tensor([math.log(p) + w / gamma for p, w, _ in walks], dtype=F64)
        expected = gamma * torch.logsumexp(log_weights, dim=0)
        value = lcs_length(c, threshold=0.5, gamma=gamma)
        torch.testing.assert_close(value[0], expected, rtol=1e-12, atol=1e-12)
        # dR/dc_ij = the tilted probability that the walk matches (i, j)
        tilted = torch.softmax(log_weights, dim=0)
        occupancy = torch.zeros(m, n, dtype=F64)
        for weight, (_, _, cells) in zip(tilted, walks):
            for cell in cells:
                occupancy[cell] += weight
        torch.testing.assert_close(_grads(value, [c])[0][0], occupancy, rtol=1e-10, atol=1e-12)


def test_smooth_lcs_of_a_pair_without_matches_is_zero():
    # before: logsumexp of up/left added about gamma * ln(#paths): 3.9312 on this all-zero 30x30 at 0.1
    assert lcs_length(torch.zeros(1, 30, 30, dtype=F64), gamma=0.1).item() == 0.0
    below = torch.full((2, 7, 9), 0.5)
    assert lcs_length(below, threshold=0.92, gamma=1.0).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("gamma", [1e-4, 0.1, 1.0, 1e4])
def test_smooth_lcs_stays_within_its_documented_range(gamma, generator):
    c = _rand(4, 8, 6, generator=generator, low=0.0, high=1.0)
    hard = lcs_length(c, threshold=0.7)
    soft = lcs_length(c, threshold=0.7, gamma=gamma)
    assert (soft >= 0).all() and (soft <= 6 * c.amax(dim=(1, 2)) + 1e-12).all()
    assert (soft <= hard + 1e-12).all()
    assert (hard - soft <= gamma * math.log(2) * (8 + 6 - 1) + 1e-12).all()
    # all similarities matched and equal: every walk is diagonal, so R = min(M, N) * c for every gamma
    assert lcs_length(torch.full((1, 8, 6), 0.95, dtype=F64), gamma=gamma).item() == pytest.approx(6 * 0.95)


def test_smooth_lcs_gradcheck_with_padding(generator):
    c = _rand(3, 4, 5, generator=generator, low=0.0, high=1.0)
    c = torch.where((c - 0.5).abs() < 0.05, c + 0.1, c).requires_grad_()  # no match flips under the step
    lengths_a, lengths_b = torch.tensor([4, 2, 3]), torch.tensor([5, 5, 1])
    for gamma in (0.05, 0.5, 5.0):
        assert torch.autograd.gradcheck(
            lambda x, gamma=gamma: lcs_length(x, threshold=0.5, gamma=gamma, lengths_a=lengths_a,
                                              lengths_b=lengths_b), (c,))


def test_hard_lcs_is_bit_identical_to_the_loop(generator):
    # gamma = 0 sums the same values in the same order as the float64 loop, so equality is exact
    c = _rand(5, 9, 7, generator=generator, low=0.0, high=1.0)
    assert torch.equal(lcs_length(c, threshold=0.6), ref.lcs_loop(c, 0.6, False, 0.0))
    # the docstring example: 0.95 + 0.93 (hand-computed)
    assert lcs_length(torch.tensor([[[0.95, 0.10], [0.20, 0.93]]])).item() == pytest.approx(1.88)


# ------------------------------------------------------------------------------------------------
# the kernels never index out of bounds (what reaches them on a GPU without validate_args)
# ------------------------------------------------------------------------------------------------


def test_kernels_clamp_lengths_instead_of_raising_index_errors(generator):
    c = _rand(3, 4, 5, generator=generator, low=0.0, high=1.0).requires_grad_()
    bad_a, bad_b = torch.tensor([0, 9, -3]), torch.tensor([5, 7, 2])
    clamped_a, clamped_b = torch.tensor([0, 4, 0]), torch.tensor([5, 5, 2])
    for kernel in (lambda x, la, lb: _dp.lcs(x, 0.5, False, 0.1, la, lb),
                   lambda x, la, lb: _dp.fsd(x, x, None, 0.1, la, lb)):
        value = kernel(c, bad_a, bad_b)
        torch.testing.assert_close(value, kernel(c, clamped_a, clamped_b))
        assert value[0] == 0 and value[2] == 0  # an empty block scores the boundary's 0
        (grad,) = _grads(value, [c])
        assert (grad[0] == 0).all() and (grad[2] == 0).all() and torch.isfinite(grad).all()
    assert [p.shape[1] for p in _dp.lcs_path(c, 0.5, False, bad_a, bad_b)] == [2, 2, 2]


def test_cosine_of_a_nan_snippet_is_nan_in_its_row_only():
    a = torch.ones(1, 3, 2, dtype=F64)
    a[0, 1] = math.nan
    cos = cosine_similarity_matrix(a, torch.ones(1, 2, 2, dtype=F64))
    assert torch.isnan(cos[0, 1]).all() and torch.isfinite(cos[0, [0, 2]]).all()


# ------------------------------------------------------------------------------------------------
# padded backward without host reads: each pair's gradient enters at its own diagonal
# ------------------------------------------------------------------------------------------------


@pytest.fixture(params=["dense", "per_step"])
def seeding(request, monkeypatch):
    """Both ways the padded backward seeds the output gradient (small problems use the dense block)."""
    if request.param == "per_step":
        monkeypatch.setattr(_dp, "_DENSE_SEEDS_LIMIT", 0)
    return request.param


@pytest.mark.parametrize("gamma", [0.0, 0.1])
def test_padded_gradients_equal_the_unpadded_crops(gamma, seeding, generator):
    lengths_a, lengths_b = torch.tensor([6, 3, 1, 4, 2, 6]), torch.tensor([5, 5, 2, 1, 4, 3])
    mu, g = (_rand(6, 6, 5, generator=generator).requires_grad_() for _ in range(2))
    c = _rand(6, 6, 5, generator=generator, low=0.0, high=1.0).requires_grad_()
    weights = torch.linspace(0.5, 1.5, 6, dtype=F64)
    fsd = fsd_similarity(mu, g, gamma=gamma, lengths_a=lengths_a, lengths_b=lengths_b)
    lcs = lcs_length(c, threshold=0.6, gamma=gamma, lengths_a=lengths_a, lengths_b=lengths_b)
    grad_mu, grad_g, grad_c = torch.autograd.grad(((fsd + lcs) * weights).sum(), [mu, g, c])
    for p in range(6):
        rows, cols = int(lengths_a[p]), int(lengths_b[p])
        crops = [x[p:p + 1, :rows, :cols].detach().requires_grad_() for x in (mu, g, c)]
        alone = fsd_similarity(crops[0], crops[1], gamma=gamma) + lcs_length(crops[2], threshold=0.6, gamma=gamma)
        expected = torch.autograd.grad(alone.sum() * weights[p], crops)
        for got, want in zip((grad_mu, grad_g, grad_c), expected):
            torch.testing.assert_close(got[p, :rows, :cols], want[0], rtol=1e-12, atol=1e-12)
            assert (got[p, rows:] == 0).all() and (got[p, :, cols:] == 0).all()


# ------------------------------------------------------------------------------------------------
# no host reads: the "meta" device has shapes but no values, so any read of a value raises there
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("padded", [False, True])
def test_kernels_and_selectors_never_read_a_value_on_the_host(padded, seeding):
    # before: with lengths, the backward read them with .tolist() (a device sync per call on a GPU)
    meta = {"device": "meta"}
    match, insert = (torch.empty(6, 5, 4, **meta).requires_grad_() for _ in range(2))
    lengths_a = torch.empty(6, dtype=torch.int64, **meta) if padded else None
    lengths_b = torch.empty(6, dtype=torch.int64, **meta) if padded else None
    value = fsd_similarity(match, insert, lengths_a=lengths_a, lengths_b=lengths_b)
    value = value + lcs_length(match, gamma=0.1, lengths_a=lengths_a, lengths_b=lengths_b)
    value = value + lcs_length(match, lengths_a=lengths_a, lengths_b=lengths_b)
    value.sum().backward()
    assert match.grad.shape == (6, 5, 4) and insert.grad.shape == (6, 5, 4)
    assert fsd_alignment(match, insert, lengths_a=lengths_a, lengths_b=lengths_b).shape == (6, 5, 4)
    features = torch.empty(3, 12, 8, **meta).requires_grad_()
    attention = torch.empty(3, 12, **meta)
    lengths = torch.empty(3, dtype=torch.int64, **meta) if padded else None
    selectors = [ActionSelector(3), BackgroundSelector(3), ProposalSelector(3)]
    chosen = select_all(selectors, features, attention, lengths=lengths)
    sum(selection.features.sum() for selection in chosen).backward()
    assert features.grad.shape == (3, 12, 8)


@CUDA
@pytest.mark.parametrize("padded", [False, True])
def test_cuda_kernels_do_not_synchronise(padded):
    device = torch.device("cuda")
    c = torch.rand(8, 30, 30, device=device, requires_grad=True)
    lengths = torch.randint(1, 31, (8,), device=device) if padded else None

    def step():
        value = fsd_similarity(c, c - 1, lengths_a=lengths, lengths_b=lengths)
        value = value + lcs_length(c, threshold=0.5, lengths_a=lengths, lengths_b=lengths)
        value = value + lcs_length(c, threshold=0.5, gamma=0.1, lengths_a=lengths, lengths_b=lengths)
        value.sum().backward()

    step()  # the first call of a size builds (and caches) its index layout with host-to-device copies
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(c.grad).all()
