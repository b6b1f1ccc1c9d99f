"""FSDLoss and LCSLoss: hand values, independent float64 references, gradcheck, degenerate batches, errors.

The references below are written from the equations (paper Eq. 2-7; the release's recursions as
docs/losses.md, "Paper and official defaults", and docs/kernels.md, "The recursions", state them) with plain
Python floats and numpy float64, independently of ftcl_plugin's kernels.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ftcl_plugin import FSDLoss, LCSLoss, cosine_similarity_matrix, fsd_similarity, lcs_length

# ---------------------------------------------------------------- independent float64 references


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-8)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-8)
    return a @ b.T


def _smooth_max(values: list[float], gamma: float) -> float:
    top = max(values)
    return top if gamma == 0 else top + gamma * math.log(sum(math.exp((v - top) / gamma) for v in values))


def _fsd(mu: np.ndarray, g: np.ndarray, gamma: float = 0.1) -> float:
    """Eq. 2 with h = g, S(0, :) = S(:, 0) = 0; insert/delete add the target cell's g."""
    rows, cols = mu.shape
    table = [[0.0] * (cols + 1) for _ in range(rows + 1)]
    for i in range(1, rows + 1):
        for j in range(1, cols + 1):
            step = [table[i - 1][j - 1], g[i - 1, j - 1] + table[i - 1][j], g[i - 1, j - 1] + table[i][j - 1]]
            table[i][j] = mu[i - 1, j - 1] + _smooth_max(step, gamma)
    return table[rows][cols]


def _lcs(c: np.ndarray, threshold: float, strict: bool) -> float:
    """Eq. 6: a match takes the diagonal (without comparing it with up/left), otherwise the larger of up/left."""
    rows, cols = c.shape
    table = [[0.0] * (cols + 1) for _ in range(rows + 1)]
    for i in range(1, rows + 1):
        for j in range(1, cols + 1):
            hit = c[i - 1, j - 1] > threshold if strict else c[i - 1, j - 1] >= threshold
            table[i][j] = table[i - 1][j - 1] + c[i - 1, j - 1] if hit else max(table[i - 1][j], table[i][j - 1])
    return table[rows][cols]


def _softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def _set_parameters(module: torch.nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * 0.5)


def _linear(module: torch.nn.Linear, x: np.ndarray) -> np.ndarray:
    return x @ module.weight.detach().double().numpy().T + module.bias.detach().double().numpy()


def _sequences(generator, pairs=3, length=4, dim=6, dtype=torch.float64):
    return [torch.randn(pairs, length, dim, generator=generator, dtype=dtype) for _ in range(4)]


def _similar_pairs(generator, pairs=4, length=5, dim=8, noise=0.05, dtype=torch.float64):
    """Non-negative (post-ReLU-like) features; b is a, time-shifted by one, plus noise: clear LCS matches."""
    a = torch.rand(pairs, length, dim, generator=generator, dtype=dtype) ** 4
    b = a.roll(1, dims=1) + noise * torch.rand(pairs, length, dim, generator=generator, dtype=dtype)
    return a, b


# ---------------------------------------------------------------- FSD, official variant


def test_fsd_official_hand_value():
    # One 1x1 pair. Official projection = identity: f_mu reads dims 0-1, f_g dims 2-3.
    # u = [1, 0, 1, 0], v = [1, 0, 0, 1]: mu = cos([1,0],[1,0]) = 1, g = cos([1,0],[0,1]) = 0, so by hand
    # S(1,1) = mu + 0.1 * log(e^0 + e^(0/0.1) + e^(0/0.1)) = 1 + 0.1 ln 3 = 1.1098612288668110.
    loss = FSDLoss(4, variant="official", projection_dim=4).double()
    with torch.no_grad():
        loss.projection.weight.copy_(torch.eye(4))
        loss.projection.bias.zero_()
    u = torch.tensor([[[1.0, 0.0, 1.0, 0.0]]], dtype=torch.float64)
    v = torch.tensor([[[1.0, 0.0, 0.0, 1.0]]], dtype=torch.float64)
    terms = loss.forward_terms(u, v, v, u, torch.tensor([True]))
    assert terms.action_action.item() == pytest.approx(1.1098612288668110, abs=1e-12)
    # Only a positive pair: loss = 0 / (0 + 1e-10) - S / (1 + 1e-10).
    assert terms.loss.item() == pytest.approx(-1.1098612288668110 / (1 + 1e-10), abs=1e-12)


def test_fsd_official_matches_independent_reference(generator):
    loss = FSDLoss(6, variant="official", projection_dim=5).double()  # odd: f_mu gets 2 dims, f_g gets 3
    _set_parameters(loss, generator)
    features_a, features_b, background_a, background_b = _sequences(generator)
    is_positive = torch.tensor([True, False, True])
    terms = loss.forward_terms(features_a, features_b, background_a, background_b, is_positive)
    values = []
    for p in range(3):
        u = _linear(loss.projection, features_a[p].numpy())
        other = features_b[p] if is_positive[p] else background_b[p]  # negatives: action of a vs "background" of b
        v = _linear(loss.projection, other.numpy())
        values.append(_fsd(_cos(u[:, :2], v[:, :2]), _cos(u[:, 2:], v[:, 2:])))
    expected = values[1] / (1 + 1e-10) - (values[0] + values[2]) / (2 + 1e-10)
    assert terms.loss.item() == pytest.approx(expected, abs=1e-10)
    assert terms.action_action[0].item() == pytest.approx(values[0], abs=1e-10)
    assert terms.action_background[1].item() == pytest.approx(values[1], abs=1e-10)


# ---------------------------------------------------------------- FSD, paper variant


def test_fsd_paper_matches_independent_reference(generator):
    loss = FSDLoss(6, projection_dim=3).double()
    _set_parameters(loss, generator)
    features_a, features_b, background_a, background_b = _sequences(generator)
    is_positive = torch.tensor([True, False, True])

    def similarity(x, y):
        mu = _cos(_linear(loss.match_projection, x.numpy()), _linear(loss.match_projection, y.numpy()))
        g = _cos(_linear(loss.insert_projection, x.numpy()), _linear(loss.insert_projection, y.numpy())) - 1
        return _fsd(mu, g)

    per_pair = []
    for p in (0, 2):  # Eq. 4 on positive pairs only, softplus(x / 0.2), both directions
        s_uv = similarity(features_a[p], features_b[p])
        per_pair.append(_softplus((similarity(features_a[p], background_b[p]) - s_uv) / 0.2)
                        + _softplus((similarity(background_a[p], features_b[p]) - s_uv) / 0.2))
    value = loss(features_a, features_b, background_a, background_b, is_positive)
    assert value.item() == pytest.approx(sum(per_pair) / 2, abs=1e-10)


def test_fsd_module_equals_functional_twin(generator):
    loss = FSDLoss(6, projection_dim=4).double()
    features_a, features_b, background_a, background_b = _sequences(generator)
    terms = loss.forward_terms(features_a, features_b, background_a, background_b, torch.ones(3, dtype=torch.bool))
    match = cosine_similarity_matrix(loss.match_projection(features_a), loss.match_projection(features_b))
    insert = cosine_similarity_matrix(loss.insert_projection(features_a), loss.insert_projection(features_b)) - 1
    torch.testing.assert_close(terms.action_action, fsd_similarity(match, insert, gamma=0.1))



# Equal shapes and all-or-no lengths per side run as one kernel call over the three comparisons; else three calls.
@pytest.mark.parametrize("background_length", [4, 3])
@pytest.mark.parametrize("padded", ["none", "some", "all"])
def test_fsd_all_three_similarities_equal_functional_twin(generator, background_length, padded):
    loss = FSDLoss(6, projection_dim=4).double()
    features_a, features_b, background_a, background_b = _sequences(generator)
    background_a, background_b = background_a[:, :background_length], background_b[:, :background_length]
    lengths = {"none": {}, "some": dict(lengths_a=torch.tensor([4, 2, 3]),
                                        background_lengths_b=torch.tensor([1, 2, background_length])),
               "all": dict(lengths_a=torch.tensor([4, 2, 3]), lengths_b=torch.tensor([1, 4, 2]),
                           background_lengths_a=torch.tensor([2, background_length, 1]),
                           background_lengths_b=torch.tensor([1, 2, background_length]))}[padded]
    terms = loss.forward_terms(features_a, features_b, background_a, background_b, torch.ones(3, dtype=torch.bool),
                               **lengths)

    def twin(first, second, lengths_a=None, lengths_b=None):
        match = cosine_similarity_matrix(loss.match_projection(first), loss.match_projection(second))
        insert = cosine_similarity_matrix(loss.insert_projection(first), loss.insert_projection(second)) - 1
        return fsd_similarity(match, insert, gamma=0.1, lengths_a=lengths_a, lengths_b=lengths_b)

    torch.testing.assert_close(terms.action_action, twin(features_a, features_b, lengths.get("lengths_a"),
                                                         lengths.get("lengths_b")))
    torch.testing.assert_close(terms.action_background, twin(features_a, background_b, lengths.get("lengths_a"),
                                                             lengths.get("background_lengths_b")))
    torch.testing.assert_close(terms.background_action, twin(background_a, features_b,
                                                             lengths.get("background_lengths_a"), lengths.get("lengths_b")))

def test_fsd_separate_delete_and_identity_activation(generator):
    features_a, features_b, background_a, background_b = _sequences(generator)
    loss = FSDLoss(6, projection_dim=4, separate_delete=True, insert_activation="identity").double()
    terms = loss.forward_terms(features_a, features_b, background_a, background_b, torch.ones(3, dtype=torch.bool))
    match = cosine_similarity_matrix(loss.match_projection(features_a), loss.match_projection(features_b))
    insert = cosine_similarity_matrix(loss.insert_projection(features_a), loss.insert_projection(features_b))
    delete = cosine_similarity_matrix(loss.delete_projection(features_a), loss.delete_projection(features_b))
    torch.testing.assert_close(terms.action_action, fsd_similarity(match, insert, delete, gamma=0.1))


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_fsd_gradcheck(generator, variant):
    loss = FSDLoss(3, variant=variant, projection_dim=4).double()
    inputs = [torch.randn(2, m, 3, generator=generator, dtype=torch.float64, requires_grad=True)
              for m in (2, 3, 3, 2)]
    is_positive = torch.tensor([True, False])
    assert torch.autograd.gradcheck(lambda *x: loss(*x, is_positive), inputs)


# ---------------------------------------------------------------- LCS


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_lcs_matches_independent_reference(generator, variant):
    features_a, features_b = _similar_pairs(generator)
    features_b[2:] = torch.rand(2, 5, 8, generator=generator, dtype=torch.float64) ** 4  # unrelated videos
    is_positive = torch.tensor([True, True, False, False])
    terms = LCSLoss(variant=variant).forward_terms(features_a, features_b, is_positive)
    lengths = [_lcs(_cos(features_a[p].numpy(), features_b[p].numpy()), 0.92, variant == "official")
               for p in range(4)]
    assert lengths[0] > 3  # the construction yields long common subsequences for the positives
    torch.testing.assert_close(terms.length, torch.tensor(lengths, dtype=torch.float64))
    if variant == "official":
        expected = sum(lengths[2:]) / (2 + 1e-10) - sum(lengths[:2]) / (2 + 1e-10)
    else:
        ratios = [min(max(r / 5, 1e-6), 1 - 1e-6) for r in lengths]
        expected = -(math.log(ratios[0]) + math.log(ratios[1]) + math.log1p(-ratios[2]) + math.log1p(-ratios[3])) / 4
    assert terms.loss.item() == pytest.approx(expected, abs=1e-10)


def test_lcs_hand_values():
    # Pair 0 (positive): identical videos, c = I, two matches of 1.0: r = 2, r / min(M, N) = 1.
    # Pair 1 (negative): time-reversed, c = [[0, 1], [1, 0]]: R(1,2) = R(2,1) = 1 by a match, R(2,2) =
    # max(1, 1) = 1, so r = 1 and r / 2 = 0.5.
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64).expand(2, 2, 2)
    z = torch.stack([x[0], x[0].flip(0)])
    labels = torch.tensor([True, False])
    official = LCSLoss(variant="official").forward_terms(x, z, labels)
    assert official.length.tolist() == [2.0, 1.0]
    assert official.loss.item() == pytest.approx(1 / (1 + 1e-10) - 2 / (1 + 1e-10), abs=1e-12)  # = -1
    paper = LCSLoss().forward_terms(x, z, labels)
    # BCE: positive -log(clamp(1) = 1 - 1e-6), negative -log(1 - 0.5); mean of the two.
    assert paper.loss.item() == pytest.approx((-math.log(1 - 1e-6) + math.log(2)) / 2, abs=1e-12)


def test_lcs_threshold_strictness():
    # cos = 1.0 exactly (unit vectors): matched by the paper's c >= tau, not by the release's c > tau.
    x = torch.tensor([[[1.0, 0.0]]])
    assert LCSLoss(threshold=1.0).forward_terms(x, x, torch.tensor([True])).length.tolist() == [1.0]
    assert LCSLoss(variant="official", threshold=1.0).forward_terms(x, x, torch.tensor([True])).length.tolist() == [0.0]
    # The release compares a float32 cosine with float32(0.92): a cosine equal to it is not a match.
    z = torch.tensor([[[0.92, 0.39191848039627075]]])
    cosine = cosine_similarity_matrix(x, z)
    assert cosine.item() == torch.tensor(0.92).item()  # precondition of this construction
    assert LCSLoss(variant="official").forward_terms(x, z, torch.tensor([True])).length.tolist() == [0.0]
    assert LCSLoss().forward_terms(x, z, torch.tensor([True])).length.item() == pytest.approx(0.92)


def test_lcs_module_equals_functional_twin(generator):
    features_a, features_b = _similar_pairs(generator)
    terms = LCSLoss().forward_terms(features_a, features_b, torch.ones(4, dtype=torch.bool))
    torch.testing.assert_close(terms.length, lcs_length(cosine_similarity_matrix(features_a, features_b)))
    torch.testing.assert_close(terms.normalized_length, terms.length / 5)


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_lcs_gradcheck(generator, variant):
    features_a, features_b = _similar_pairs(generator, pairs=2, length=3, dim=4, noise=0.02)
    cosine = cosine_similarity_matrix(features_a, features_b)
    # Keep every cosine away from the threshold so finite differences never cross it.
    assert bool(((cosine - 0.92).abs() > 1e-3).all())
    features_a.requires_grad_(True)
    features_b.requires_grad_(True)
    loss = LCSLoss(variant=variant)
    assert torch.autograd.gradcheck(lambda a, b: loss(a, b, torch.tensor([True, False])), (features_a, features_b))


# ---------------------------------------------------------------- shared behaviour


def _fsd_inputs(generator, pairs=3):
    return _sequences(generator, pairs=pairs, dtype=torch.float32)


@pytest.mark.parametrize("variant", ["paper", "official"])
@pytest.mark.parametrize("is_positive", [[], [False, False, False], [True, True, True]],
                         ids=["no-pairs", "no-positives", "no-negatives"])
def test_degenerate_batches_are_finite_and_connected(generator, variant, is_positive):
    pairs = len(is_positive)
    fsd = FSDLoss(6, variant=variant, projection_dim=4)
    inputs = [x[:pairs].clone().requires_grad_(True) for x in _fsd_inputs(generator)]
    labels = torch.tensor(is_positive, dtype=torch.bool)
    value = fsd(*inputs, labels) + LCSLoss(variant=variant)(inputs[0], inputs[1], labels)
    assert bool(torch.isfinite(value))
    value.backward()
    # The release never reads the background of video a, so the official variant leaves it out of the graph.
    used = inputs if variant == "paper" else [inputs[0], inputs[1], inputs[3]]
    assert all(x.grad is not None for x in used)
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in fsd.parameters())
    if not is_positive:  # no pair at all: both losses are exactly 0, in both variants
        assert value.item() == 0.0
    if not any(is_positive) and variant == "paper":
        assert fsd(*inputs, labels).item() == 0.0


def test_zero_vectors_do_not_give_nan(generator):
    inputs = [torch.zeros(2, 3, 6, requires_grad=True) for _ in range(4)]
    labels = torch.tensor([True, False])
    # By hand. Zero snippets project onto the bias alone, so every projected cosine is 1 and the three FSD
    # similarities of a pair are equal: the paper's ranking gives softplus(0) + softplus(0) = 2 ln 2 for the one
    # positive pair. The LCS sees raw zeros (cosine 0 with the eps, no match, r = 0, clamped to 1e-6): BCE
    # -ln(1e-6) for the positive pair and -ln(1 - 1e-6) for the negative one, averaged. The official variant's
    # mean differences of equal values are 0.
    expected = {"paper": (2 * math.log(2), (-math.log(1e-6) - math.log1p(-1e-6)) / 2), "official": (0.0, 0.0)}
    for variant in ("paper", "official"):
        fsd = FSDLoss(6, variant=variant)(*inputs, labels)
        lcs = LCSLoss(variant=variant)(inputs[0], inputs[1], labels)
        assert (fsd.item(), lcs.item()) == pytest.approx(expected[variant], rel=1e-6)
        (fsd + lcs).backward()
        assert all(bool(torch.isfinite(x.grad).all()) for x in inputs)


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_pair_order_invariance(generator, variant):
    fsd = FSDLoss(6, variant=variant, projection_dim=4).double()
    lcs = LCSLoss(variant=variant)
    inputs = _sequences(generator, pairs=4)
    labels = torch.tensor([True, False, True, False])
    order = torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(fsd(*inputs, labels), fsd(*[x[order] for x in inputs], labels[order]))
    a, b = _similar_pairs(generator)
    torch.testing.assert_close(lcs(a, b, labels), lcs(a[order], b[order], labels[order]))


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_padding_with_lengths(generator, variant):
    fsd = FSDLoss(6, variant=variant, projection_dim=4).double()
    inputs = _sequences(generator, pairs=2)
    sizes = [(4, 2), (3, 4), (1, 3), (2, 2)]  # true lengths per sequence and pair
    cut = [[x[p:p + 1, :sizes[k][p]] for p in range(2)] for k, x in enumerate(inputs)]
    labels = torch.tensor([True, False])
    lengths = [torch.tensor(s) for s in sizes]
    padded = fsd.forward_terms(*inputs, labels, lengths_a=lengths[0], lengths_b=lengths[1],
                               background_lengths_a=lengths[2], background_lengths_b=lengths[3])
    for p in range(2):
        alone = fsd.forward_terms(*[c[p] for c in cut], labels[p:p + 1])
        for got, want in zip(padded[1:], alone[1:]):
            torch.testing.assert_close(got[p:p + 1], want)
    a, b = _similar_pairs(generator, pairs=2)
    lcs = LCSLoss(variant=variant)
    padded = lcs.forward_terms(a, b, labels, lengths_a=torch.tensor([5, 3]), lengths_b=torch.tensor([4, 5]))
    first = lcs.forward_terms(a[:1, :5], b[:1, :4], labels[:1])
    second = lcs.forward_terms(a[1:, :3], b[1:, :5], labels[1:])
    torch.testing.assert_close(padded.normalized_length, torch.cat([first.normalized_length, second.normalized_length]))


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_forward_videos_equals_forward_terms_on_gathered_pairs(generator, variant):
    fsd = FSDLoss(6, variant=variant, projection_dim=4).double()
    actions, backgrounds = torch.randn(2, 4, 3, 6, generator=generator, dtype=torch.float64)
    index_a, index_b = torch.tensor([0, 0, 1, 2]), torch.tensor([1, 3, 2, 3])
    labels = torch.tensor([True, False, True, False])
    action_lengths, background_lengths = torch.tensor([3, 1, 2, 3]), torch.tensor([2, 3, 3, 1])
    got = fsd.forward_videos(actions, backgrounds, index_a, index_b, labels, action_lengths=action_lengths,
                             background_lengths=background_lengths)
    want = fsd.forward_terms(actions[index_a], actions[index_b], backgrounds[index_a], backgrounds[index_b], labels,
                             lengths_a=action_lengths[index_a], lengths_b=action_lengths[index_b],
                             background_lengths_a=background_lengths[index_a],
                             background_lengths_b=background_lengths[index_b])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    lcs = LCSLoss(variant=variant)
    snippets = torch.cat(_similar_pairs(generator, pairs=2))
    got = lcs.forward_videos(snippets, index_a, index_b, labels, lengths=torch.tensor([5, 4, 5, 3]))
    want = lcs.forward_terms(snippets[index_a], snippets[index_b], labels, lengths_a=torch.tensor([5, 5, 4, 5]),
                             lengths_b=torch.tensor([4, 3, 5, 3]))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    with pytest.raises(TypeError, match="`index_a` must be an integer tensor, but got dtype float32"):
        lcs.forward_videos(snippets, index_a.float(), index_b, labels)
    with pytest.raises(ValueError, match=r"`index_b` must have shape \(P,\) = \(4,\), but got \(3,\)"):
        fsd.forward_videos(actions, backgrounds, index_a, index_b[:3], labels)


def test_no_input_mutation(generator):
    inputs = _fsd_inputs(generator)
    saved = [x.clone() for x in inputs]
    labels = torch.tensor([True, False, True])
    FSDLoss(6)(*inputs, labels).backward()
    LCSLoss()(inputs[0], inputs[1], labels)
    assert all(torch.equal(x, y) for x, y in zip(inputs, saved))


def test_half_precision_inputs_run_in_float32(generator):
    inputs = [x.to(torch.bfloat16) for x in _fsd_inputs(generator)]
    labels = torch.tensor([True, False, True])
    fsd = FSDLoss(6).to(torch.bfloat16)
    value = fsd(*inputs, labels) + LCSLoss()(inputs[0], inputs[1], labels)
    assert value.dtype == torch.float32 and bool(torch.isfinite(value))


def test_errors(generator):
    a, b, c, d = _fsd_inputs(generator)
    labels = torch.tensor([True, False, True])
    fsd = FSDLoss(6)
    with pytest.raises(ValueError, match=r"`features_a` must have shape \(P, L, D\), but got \(3, 6\)"):
        fsd(a[:, 0], b, c, d, labels)
    with pytest.raises(ValueError, match=r"`features_a` must have feature size D = 6, but got \(3, 4, 5\)"):
        fsd(a[..., :5], b, c, d, labels)
    with pytest.raises(ValueError, match=r"`background_b` must have shape \(3, L, 6\) to match `features_a`"):
        fsd(a, b, c, d[:2], labels)
    with pytest.raises(TypeError, match="`features_b` must have the same dtype as `features_a` \\(float32\\)"):
        fsd(a, b.double(), c, d, labels)
    with pytest.raises(ValueError, match=r"`is_positive` must have shape \(P,\) = \(3,\), but got \(2,\)"):
        LCSLoss()(a, b, labels[:2])
    with pytest.raises(TypeError, match="`features_a` must be a floating tensor"):
        LCSLoss()(a.long(), b, labels)
    with pytest.raises(ValueError, match="`variant` must be one of 'paper', 'official', but got 'release'"):
        FSDLoss(6, variant="release")
    with pytest.raises(ValueError, match="`separate_delete` must be False with variant='official'"):
        FSDLoss(6, variant="official", separate_delete=True)
    with pytest.raises(ValueError, match="`ranking_temperature` must be > 0.0, but got 0"):
        FSDLoss(6, ranking_temperature=0)
    with pytest.raises(ValueError, match="`probability_eps` must be <= 0.5, but got 0.7"):
        LCSLoss(probability_eps=0.7)
