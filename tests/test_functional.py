"""Tests of ftcl_plugin.functional (and the private kernels behind it) against slow references and brute force."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from ftcl_plugin import _reference as ref
from ftcl_plugin.functional import (
    cosine_similarity_matrix,
    fsd_alignment,
    fsd_similarity,
    lcs_length,
    lcs_path,
)

F64 = torch.float64


def _rand(*shape, generator, dtype=F64, low=-1.0, high=1.0, device="cpu"):
    values = torch.rand(*shape, generator=generator, dtype=F64) * (high - low) + low
    return values.to(device=device, dtype=dtype)


def _grads(output, inputs):
    """Gradients of output.sum() (weighted per pair), zeros where an input is not in the graph."""
    if not output.requires_grad:
        return [torch.zeros_like(x) for x in inputs]
    weights = torch.linspace(0.5, 1.5, output.numel(), dtype=output.dtype, device=output.device)
    found = torch.autograd.grad((output * weights).sum(), inputs, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(found, inputs)]


# ------------------------------------------------------------------------------------------------
# brute force: every alignment path of the FSD recursion, every common subsequence for LCS
# ------------------------------------------------------------------------------------------------


def _fsd_path_scores(mu, g, h, i, j):
    """Scores of every move sequence from (i, j) back to the zero boundary (row 0 or column 0)."""
    if i == 0 or j == 0:
        return [0.0]
    here = mu[i - 1][j - 1]
    scores = [here + s for s in _fsd_path_scores(mu, g, h, i - 1, j - 1)]
    scores += [here + g[i - 1][j - 1] + s for s in _fsd_path_scores(mu, g, h, i - 1, j)]
    scores += [here + h[i - 1][j - 1] + s for s in _fsd_path_scores(mu, g, h, i, j - 1)]
    return scores


def _chains(cells):
    """All subsets of cells that are strictly increasing in both coordinates (common subsequences)."""
    for r in range(len(cells) + 1):
        for subset in itertools.combinations(sorted(cells), r):
            if all(a[0] < b[0] and a[1] < b[1] for a, b in zip(subset, subset[1:])):
                yield subset


@pytest.mark.parametrize("size", [(1, 1), (1, 3), (2, 2), (2, 3), (3, 2), (3, 3)])
@pytest.mark.parametrize("gamma", [0.0, 0.1, 0.7])
def test_fsd_equals_brute_force_over_paths(size, gamma, generator):
    m, n = size
    mu, g, h = (_rand(1, m, n, generator=generator) for _ in range(3))
    scores = torch.tensor(_fsd_path_scores(mu[0].tolist(), g[0].tolist(), h[0].tolist(), m, n), dtype=F64)
    # the recursion is a (max, +) / (logsumexp, +) semiring sum over paths, so the identity is exact
    expected = scores.max() if gamma == 0 else gamma * torch.logsumexp(scores / gamma, dim=0)
    torch.testing.assert_close(fsd_similarity(mu, g, h, gamma=gamma)[0], expected, rtol=1e-12, atol=1e-12)


def test_path_enumerator_counts():
    # sanity check of the enumerator itself: f(i, j) = f(i-1, j-1) + f(i-1, j) + f(i, j-1), f = 1 on the
    # boundary, so f(1, 1) = 3, f(1, 2) = f(2, 1) = 1 + 1 + 3 = 5 and f(2, 2) = 3 + 5 + 5 = 13
    zeros = [[0.0] * 2 for _ in range(2)]
    assert len(_fsd_path_scores(zeros, zeros, zeros, 1, 1)) == 3
    assert len(_fsd_path_scores(zeros, zeros, zeros, 1, 2)) == 5
    assert len(_fsd_path_scores(zeros, zeros, zeros, 2, 2)) == 13


@pytest.mark.parametrize("size", [(2, 2), (3, 3), (3, 4), (4, 3)])
def test_lcs_with_unit_matches_is_the_classic_lcs(size, generator):
    m, n = size
    for _ in range(5):
        matched = torch.rand(1, m, n, generator=generator) < 0.4
        similarity = matched.to(F64)  # c = 1 on matches, 0 elsewhere
        cells = [tuple(x) for x in matched[0].nonzero().tolist()]
        longest = max(len(chain) for chain in _chains(cells))
        assert lcs_length(similarity, threshold=0.5).item() == longest


@pytest.mark.parametrize("size", [(3, 3), (3, 4)])
def test_lcs_is_a_common_subsequence_weight_at_most_the_best(size, generator):
    m, n = size
    for _ in range(5):
        similarity = _rand(1, m, n, generator=generator, low=0.0, high=1.0)
        hits = [tuple(x) for x in (similarity[0] >= 0.5).nonzero().tolist()]
        best = max(sum(similarity[0][c].item() for c in chain) for chain in _chains(hits))
        value = lcs_length(similarity, threshold=0.5).item()
        path = [tuple(x) for x in lcs_path(similarity, threshold=0.5)[0].tolist()]
        assert path in [list(chain) for chain in _chains(hits)]
        assert value == pytest.approx(sum(similarity[0][c].item() for c in path), abs=1e-12)
        assert value <= best + 1e-12


def test_lcs_match_overrides_larger_neighbours():
    # hand-computed: R(1,2) = 0.95, R(2,1) = 0.96, but c22 = 0.93 matches, so R(2,2) = R(1,1) + 0.93 = 0.93
    similarity = torch.tensor([[[0.10, 0.95], [0.96, 0.93]]], dtype=F64, requires_grad=True)
    value = lcs_length(similarity)
    assert value.item() == pytest.approx(0.93)
    (grad,) = torch.autograd.grad(value.sum(), similarity)
    assert grad.tolist() == [[[0.0, 0.0], [0.0, 1.0]]]
    assert lcs_path(similarity)[0].tolist() == [[1, 1]]


def test_lcs_ties_go_up():
    # R(1,2) = 0.95 (up of (2,2)) and R(2,1) = 0.95 (left): the tie sends the gradient up, to c12
    similarity = torch.tensor([[[0.10, 0.95], [0.95, 0.10]]], dtype=F64, requires_grad=True)
    (grad,) = torch.autograd.grad(lcs_length(similarity).sum(), similarity)
    assert grad.tolist() == [[[0.0, 1.0], [0.0, 0.0]]]
    assert lcs_path(similarity)[0].tolist() == [[0, 1]]


def test_fsd_hard_ties_prefer_match_then_insert():
    zeros = torch.zeros(1, 2, 2, dtype=F64)
    # all three candidates tie everywhere: the argmax path is the pure diagonal
    assert fsd_alignment(zeros, zeros, gamma=0.0).tolist() == [[[1.0, 0.0], [0.0, 1.0]]]
    # hand-computed: S(1,1) = -1, S(1,2) = S(2,1) = 1, so at (2,2) insert (from (1,2)) ties with delete
    # (from (2,1)) above match (-1); the tie goes to insert
    mu = torch.tensor([[[-1.0, 1.0], [1.0, 0.0]]], dtype=F64)
    gap = torch.zeros(1, 2, 2, dtype=F64)
    assert fsd_alignment(mu, gap, gamma=0.0).tolist() == [[[0.0, 1.0], [0.0, 1.0]]]


def test_lcs_threshold_inclusive_unless_strict():
    similarity = torch.tensor([[[0.92]]])
    assert lcs_length(similarity).item() == pytest.approx(0.92)
    assert lcs_length(similarity, strict=True).item() == 0.0


# ------------------------------------------------------------------------------------------------
# agreement with the float64 loop references (values and gradients)
# ------------------------------------------------------------------------------------------------

SHAPES = [(3, 5, 4), (2, 1, 6), (2, 6, 1), (1, 1, 1), (2, 4, 4)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gamma", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("separate_delete", [False, True])
def test_fsd_matches_reference(shape, gamma, separate_delete, generator):
    mu, g, h = (_rand(*shape, generator=generator).requires_grad_() for _ in range(3))
    delete = h if separate_delete else None
    inputs = [mu, g, h] if separate_delete else [mu, g]
    ours = fsd_similarity(mu, g, delete, gamma=gamma)
    expected = ref.fsd_loop(mu, g, delete, gamma)
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-10)
    for a, b in zip(_grads(ours, inputs), _grads(expected, inputs)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gamma", [0.0, 0.5])
@pytest.mark.parametrize("strict", [False, True])
def test_lcs_matches_reference(shape, gamma, strict, generator):
    c = _rand(*shape, generator=generator, low=0.0, high=1.0).requires_grad_()
    ours = lcs_length(c, threshold=0.6, gamma=gamma, strict=strict)
    expected = ref.lcs_loop(c, 0.6, strict, gamma)
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(_grads(ours, [c])[0], _grads(expected, [c])[0], rtol=1e-10, atol=1e-10)
    paths = lcs_path(c, threshold=0.6, strict=strict)
    assert [p.tolist() for p in paths] == [[list(x) for x in path] for path in ref.lcs_path_loop(c, 0.6, strict)]


@pytest.mark.parametrize("gamma", [0.0, 0.1])
def test_autograd_wavefront_reference_agrees(gamma, generator):
    # the benchmark's "plain autograd" column must compute the same thing
    mu, g = (_rand(2, 6, 4, generator=generator).requires_grad_() for _ in range(2))
    c = _rand(2, 6, 4, generator=generator, low=0.0, high=1.0).requires_grad_()
    for ours, theirs, inputs in (
        (fsd_similarity(mu, g, gamma=gamma), ref.fsd_wavefront_autograd(mu, g, gamma=gamma), [mu, g]),
        (lcs_length(c, threshold=0.5, gamma=gamma), ref.lcs_wavefront_autograd(c, 0.5, gamma=gamma), [c]),
    ):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
        for a, b in zip(_grads(ours, inputs), _grads(theirs, inputs)):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------------------------------------
# padding / lengths
# ------------------------------------------------------------------------------------------------

LENGTHS = (torch.tensor([6, 3, 1, 4]), torch.tensor([5, 5, 2, 1]))


@pytest.mark.parametrize("gamma", [0.0, 0.1])
def test_fsd_padded_matches_reference_and_unpadded(gamma, generator):
    mu, g = (_rand(4, 6, 5, generator=generator).requires_grad_() for _ in range(2))
    la, lb = LENGTHS
    ours = fsd_similarity(mu, g, gamma=gamma, lengths_a=la, lengths_b=lb)
    torch.testing.assert_close(ours, ref.fsd_loop(mu, g, None, gamma, la, lb), rtol=1e-10, atol=1e-10)
    grad_mu, grad_g = _grads(ours, [mu, g])
    weights = torch.linspace(0.5, 1.5, 4, dtype=F64)
    for p in range(4):
        crop_mu = mu[p:p + 1, :la[p], :lb[p]].detach().requires_grad_()
        crop_g = g[p:p + 1, :la[p], :lb[p]].detach().requires_grad_()
        alone = fsd_similarity(crop_mu, crop_g, gamma=gamma)
        torch.testing.assert_close(ours[p:p + 1], alone, rtol=1e-12, atol=1e-12)
        a_mu, a_g = torch.autograd.grad(alone.sum() * weights[p], [crop_mu, crop_g])
        torch.testing.assert_close(grad_mu[p, :la[p], :lb[p]], a_mu[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad_g[p, :la[p], :lb[p]], a_g[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("gamma", [0.0, 0.1])
def test_padding_gets_exactly_zero_gradient_even_if_not_finite(gamma, generator):
    la, lb = LENGTHS
    mu, g, h = (_rand(4, 6, 5, generator=generator) for _ in range(3))
    c = _rand(4, 6, 5, generator=generator, low=0.0, high=1.0)
    outside = ~((torch.arange(6).view(1, 6, 1) < la.view(4, 1, 1)) & (torch.arange(5).view(1, 1, 5) < lb.view(4, 1, 1)))
    clean = [fsd_similarity(mu, g, h, gamma=gamma, lengths_a=la, lengths_b=lb),
             lcs_length(c, threshold=0.5, gamma=gamma, lengths_a=la, lengths_b=lb)]
    poisoned = []
    for x in (mu, g, h, c):
        x = x.clone()
        x[outside] = float("inf")
        x[outside & (torch.arange(5).view(1, 1, 5) % 2 == 0)] = float("nan")
        poisoned.append(x.requires_grad_())
    mu, g, h, c = poisoned
    fsd_value = fsd_similarity(mu, g, h, gamma=gamma, lengths_a=la, lengths_b=lb)
    lcs_value = lcs_length(c, threshold=0.5, gamma=gamma, lengths_a=la, lengths_b=lb)
    torch.testing.assert_close(fsd_value, clean[0].detach(), rtol=0, atol=0)
    torch.testing.assert_close(lcs_value, clean[1].detach(), rtol=0, atol=0)
    for grad in _grads(fsd_value, [mu, g, h]) + _grads(lcs_value, [c]):
        assert torch.isfinite(grad).all()
        assert (grad[outside] == 0).all()


@pytest.mark.parametrize("gamma", [0.0, 0.5])
def test_lcs_padded_matches_reference(gamma, generator):
    c = _rand(4, 6, 5, generator=generator, low=0.0, high=1.0).requires_grad_()
    la, lb = LENGTHS
    ours = lcs_length(c, threshold=0.5, gamma=gamma, lengths_a=la, lengths_b=lb)
    expected = ref.lcs_loop(c, 0.5, False, gamma, la, lb)
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(_grads(ours, [c])[0], _grads(expected, [c])[0], rtol=1e-10, atol=1e-10)
    paths = lcs_path(c, threshold=0.5, lengths_a=la, lengths_b=lb)
    assert [p.tolist() for p in paths] == [[list(x) for x in path] for path in ref.lcs_path_loop(c, 0.5, False, la, lb)]


def test_only_one_side_padded(generator):
    mu, g = (_rand(2, 4, 5, generator=generator) for _ in range(2))
    lb = torch.tensor([2, 5])
    torch.testing.assert_close(fsd_similarity(mu, g, lengths_b=lb),
                               fsd_similarity(mu, g, lengths_a=torch.tensor([4, 4]), lengths_b=lb))
    torch.testing.assert_close(fsd_similarity(mu, g, lengths_b=lb)[:1], fsd_similarity(mu[:1, :, :2], g[:1, :, :2]))


# ------------------------------------------------------------------------------------------------
# gradcheck, the hard limit, dtype precision
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.0, 0.1, 0.5])
def test_fsd_gradcheck(gamma, generator):
    mu, g, h = (_rand(2, 4, 3, generator=generator).requires_grad_() for _ in range(3))
    la, lb = torch.tensor([4, 2]), torch.tensor([3, 3])
    assert torch.autograd.gradcheck(lambda a, b, c: fsd_similarity(a, b, c, gamma=gamma), (mu, g, h))
    assert torch.autograd.gradcheck(lambda a, b: fsd_similarity(a, b, gamma=gamma, lengths_a=la, lengths_b=lb),
                                    (mu, g))


@pytest.mark.parametrize("gamma", [0.0, 0.3])
def test_lcs_gradcheck(gamma, generator):
    # values kept away from the threshold so finite differences never flip a match
    c = _rand(2, 4, 5, generator=generator, low=0.0, high=1.0)
    c = torch.where((c - 0.5).abs() < 0.05, c + 0.1, c).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: lcs_length(x, threshold=0.5, gamma=gamma), (c,))
    assert torch.autograd.gradcheck(
        lambda x: lcs_length(x, threshold=0.5, gamma=gamma, lengths_a=torch.tensor([2, 4])), (c,))


def test_smooth_tends_to_hard_within_the_smoothing_bias(generator):
    mu, g = (_rand(3, 6, 5, generator=generator) for _ in range(2))
    hard = fsd_similarity(mu, g, gamma=0.0)
    hard_alignment = fsd_alignment(mu, g, gamma=0.0)
    for gamma in (0.1, 0.01, 0.001):
        soft = fsd_similarity(mu, g, gamma=gamma)
        # each cell's smooth max exceeds the max by at most gamma * ln 3, over at most M + N - 1 cells
        assert (soft >= hard - 1e-12).all()
        assert (soft - hard <= gamma * math.log(3) * (6 + 5 - 1) + 1e-12).all()
    torch.testing.assert_close(fsd_alignment(mu, g, gamma=1e-4), hard_alignment, rtol=0, atol=1e-6)
    c = _rand(3, 6, 5, generator=generator, low=0.0, high=1.0)
    torch.testing.assert_close(lcs_length(c, threshold=0.7, gamma=1e-4), lcs_length(c, threshold=0.7),
                               rtol=0, atol=1e-4 * math.log(2) * 11)


def test_alignment_is_the_match_gradient(generator):
    mu, g, h = (_rand(2, 5, 4, generator=generator) for _ in range(3))
    probe = mu.clone().requires_grad_()
    (expected,) = torch.autograd.grad(fsd_similarity(probe, g, h).sum(), probe)
    alignment = fsd_alignment(mu, g, h)
    torch.testing.assert_close(alignment, expected)
    assert not alignment.requires_grad
    assert ((alignment >= 0) & (alignment <= 1 + 1e-12)).all()
    hard = fsd_alignment(mu, g, h, gamma=0.0)
    assert set(hard.unique().tolist()) <= {0.0, 1.0}
    assert (hard[:, -1, -1] == 1).all()
    with torch.inference_mode():
        torch.testing.assert_close(fsd_alignment(mu, g, h), expected)
    assert not fsd_alignment(mu.requires_grad_(), g, h).requires_grad


def _float32_against_float64(size, generator):
    shape = (2, size, size)
    mu, g = (_rand(*shape, generator=generator, dtype=torch.float32) for _ in range(2))
    c = _rand(*shape, generator=generator, dtype=torch.float32, low=0.0, high=1.0)
    for function, inputs in ((lambda a, b: fsd_similarity(a, b), (mu, g)),
                             (lambda x: lcs_length(x, threshold=0.9, gamma=0.1), (c,))):
        single = [x.clone().requires_grad_() for x in inputs]
        double = [x.double().requires_grad_() for x in inputs]
        out32, out64 = function(*single), function(*double)
        assert out32.dtype == torch.float32
        torch.testing.assert_close(out32.double(), out64, rtol=1e-6, atol=0)
        for a, b in zip(_grads(out32, single), _grads(out64, double)):
            assert a.dtype == torch.float32
            scale = b.abs().max()
            assert ((a.double() - b).abs() <= 1e-5 * b.abs() + 1e-7 * scale).all()


def test_float32_gradients_track_float64(generator):
    _float32_against_float64(120, generator)


@pytest.mark.slow
def test_float32_gradients_track_float64_at_750(generator):
    _float32_against_float64(750, generator)


# ------------------------------------------------------------------------------------------------
# devices, dtypes, degenerate sizes, no mutation, no double backward
# ------------------------------------------------------------------------------------------------


def test_device_and_dtype_follow_input(device, dtype, tol, generator):
    mu, g = (_rand(3, 5, 4, generator=generator, dtype=dtype, device=device).requires_grad_() for _ in range(2))
    c = _rand(3, 5, 4, generator=generator, dtype=dtype, device=device, low=0.0, high=1.0).requires_grad_()
    la = torch.tensor([5, 2, 3], device=device)
    for value, inputs, expected in (
        (fsd_similarity(mu, g, lengths_a=la), [mu, g], ref.fsd_loop(mu.cpu(), g.cpu(), None, 0.1, la.cpu())),
        (lcs_length(c, threshold=0.5, gamma=0.2, lengths_a=la), [c], ref.lcs_loop(c.cpu(), 0.5, False, 0.2, la.cpu())),
    ):
        assert value.dtype == dtype and value.device == mu.device
        torch.testing.assert_close(value.cpu(), expected.to(dtype), **tol)
        for grad in _grads(value, inputs):
            assert grad.dtype == dtype and grad.device == mu.device
    assert fsd_alignment(mu, g).device == mu.device
    assert all(p.device == mu.device for p in lcs_path(c, threshold=0.5))


def test_degenerate_sizes():
    empty_pairs = torch.zeros(0, 3, 4, requires_grad=True)
    assert fsd_similarity(empty_pairs, empty_pairs).shape == (0,)
    (fsd_similarity(empty_pairs, empty_pairs).sum() + lcs_length(empty_pairs).sum()).backward()
    assert empty_pairs.grad.shape == (0, 3, 4)
    assert lcs_length(empty_pairs).shape == (0,)
    assert lcs_path(empty_pairs) == []
    no_cells = torch.zeros(2, 0, 4, requires_grad=True)
    value = fsd_similarity(no_cells, no_cells)
    assert value.tolist() == [0.0, 0.0]
    value.sum().backward()
    assert lcs_length(torch.zeros(2, 3, 0)).tolist() == [0.0, 0.0]
    assert [p.shape for p in lcs_path(torch.zeros(2, 3, 0))] == [(0, 2), (0, 2)]
    one = torch.full((1, 1, 1), 0.95, requires_grad=True)
    assert lcs_length(one).item() == pytest.approx(0.95)
    assert fsd_similarity(one, one, gamma=0.0).item() == pytest.approx(0.95 + 0.95)  # insert from 0 beats 0


def test_inputs_are_not_mutated(generator):
    mu, g, h = (_rand(2, 4, 3, generator=generator).requires_grad_() for _ in range(3))
    c = _rand(2, 4, 3, generator=generator, low=0.0, high=1.0).requires_grad_()
    la, lb = torch.tensor([4, 2]), torch.tensor([1, 3])
    before = [x.detach().clone() for x in (mu, g, h, c, la, lb)]
    fsd_similarity(mu, g, h, lengths_a=la, lengths_b=lb).sum().backward()
    lcs_length(c, threshold=0.5, lengths_a=la, lengths_b=lb).sum().backward()
    fsd_alignment(mu, g, h, lengths_a=la, lengths_b=lb)
    lcs_path(c, threshold=0.5, lengths_a=la, lengths_b=lb)
    for x, y in zip((mu, g, h, c, la, lb), before):
        assert torch.equal(x.detach(), y)


def test_backward_twice_with_retain_graph_gives_the_same(generator):
    mu, g = (_rand(2, 4, 3, generator=generator).requires_grad_() for _ in range(2))
    value = fsd_similarity(mu, g).sum()
    first = torch.autograd.grad(value, [mu, g], retain_graph=True)
    second = torch.autograd.grad(value, [mu, g])
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_double_backward_is_refused(generator):
    mu, g = (_rand(1, 3, 3, generator=generator).requires_grad_() for _ in range(2))
    # e.g. a gradient penalty on a nonlinear loss of the score
    (grad,) = torch.autograd.grad(fsd_similarity(mu, g).pow(2).sum(), mu, create_graph=True)
    with pytest.raises(RuntimeError, match="marked with @once_differentiable"):
        grad.sum().backward()


def test_cosine_similarity_matrix(generator):
    a = _rand(2, 4, 6, generator=generator)
    b = _rand(2, 3, 6, generator=generator)
    b[1, 0] = 0.0
    cos = cosine_similarity_matrix(a, b)
    expected = torch.nn.functional.cosine_similarity(a.unsqueeze(2), b.unsqueeze(1), dim=-1, eps=1e-8)
    torch.testing.assert_close(cos, expected)
    assert (cos[1, :, 0] == 0).all()


# ------------------------------------------------------------------------------------------------
# errors (messages matched by text)
# ------------------------------------------------------------------------------------------------


def test_errors():
    good = torch.zeros(2, 3, 4)
    with pytest.raises(TypeError, match=r"`match` must be a torch.Tensor, but got list"):
        fsd_similarity([[0.0]], good)
    with pytest.raises(ValueError, match=r"`match` must have shape \(P, M, N\), but got \(3, 4\)"):
        fsd_similarity(good[0], good[0])
    with pytest.raises(TypeError, match=r"`match` must be a floating tensor \(float32, float64\), but got dtype int64"):
        fsd_similarity(good.long(), good)
    with pytest.raises(TypeError, match=r"`similarity` must be a floating tensor \(float32, float64\), but got dtype float16"):
        lcs_length(good.half())
    with pytest.raises(ValueError, match=r"`insert` must have the same shape as `match` \(2, 3, 4\), but got \(2, 4, 3\)"):
        fsd_similarity(good, torch.zeros(2, 4, 3))
    with pytest.raises(TypeError, match=r"`delete` must have the same dtype as `match` \(float32\), but got float64"):
        fsd_similarity(good, good, good.double())
    with pytest.raises(ValueError, match=r"`gamma` must be >= 0.0, but got -0.1"):
        fsd_similarity(good, good, gamma=-0.1)
    with pytest.raises(TypeError, match=r"`gamma` must be a number, but got str"):
        lcs_length(good, gamma="0")
    with pytest.raises(TypeError, match=r"`threshold` must be a number, but got NoneType"):
        lcs_length(good, threshold=None)
    with pytest.raises(TypeError, match=r"`strict` must be a bool, but got int"):
        lcs_length(good, strict=1)
    with pytest.raises(ValueError, match=r"`lengths_a` must have shape \(2,\), but got \(3,\)"):
        fsd_similarity(good, good, lengths_a=torch.tensor([1, 2, 3]))
    with pytest.raises(TypeError, match=r"`lengths_b` must be an integer tensor, but got dtype float32"):
        lcs_path(good, lengths_b=torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"`lengths_b` must lie in \[1, 4\], but got values in \[1, 5\]"):
        lcs_length(good, lengths_b=torch.tensor([1, 5]), validate_args=True)
    with pytest.raises(ValueError, match=r"`features_b` must have shape \(2, N, 5\) to match `features_a` \(2, 3, 5\), but got \(2, 3, 4\)"):
        cosine_similarity_matrix(torch.zeros(2, 3, 5), torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match=r"`eps` must be > 0.0, but got 0.0"):
        cosine_similarity_matrix(good, good, eps=0.0)


def test_non_contiguous_inputs_and_int32_lengths(generator):
    mu, g = (_rand(2, 5, 4, generator=generator) for _ in range(2))
    c = _rand(2, 5, 4, generator=generator, low=0.0, high=1.0)
    la, lb = torch.tensor([4, 2], dtype=torch.int32), torch.tensor([5, 3], dtype=torch.int32)
    transposed = [x.transpose(1, 2).contiguous().transpose(1, 2) for x in (mu, g, c)]
    assert not transposed[0].is_contiguous()
    torch.testing.assert_close(fsd_similarity(*transposed[:2], lengths_a=lb, lengths_b=la),
                               fsd_similarity(mu, g, lengths_a=lb.long(), lengths_b=la.long()))
    torch.testing.assert_close(lcs_length(transposed[2], threshold=0.5), lcs_length(c, threshold=0.5))
