"""FTCL facade: the two lines, the official variant end to end, weights, degenerate batches, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ftcl_plugin import FTCL, ActionSelector, FSDLoss, FTCLTerms, LCSLoss, PairMiner, ProposalSelector


def _batch(generator, batch=4, snippets=12, dim=8, dtype=torch.float32):
    features = torch.rand(batch, snippets, dim, generator=generator, dtype=dtype)
    attention = torch.rand(batch, snippets, generator=generator, dtype=dtype)
    return features, attention


# Videos 0-2 share the label set {A}; video 3 is {B}: 3 positive and 3 negative pairs, all kept when balanced.
LABELS = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])


def test_two_lines_from_the_top_level_package(generator):
    features, attention = _batch(generator, dim=2048)
    loss = torch.zeros(())
    ftcl = FTCL(feature_dim=2048)
    loss = loss + ftcl(features, attention, LABELS)
    # The first training call only measures: the warm-up weight starts at 0 (docs/losses.md), so the returned loss
    # is exactly 0 while the terms it carries were computed (3 positive pairs in LABELS).
    assert loss.shape == () and loss.item() == 0.0
    assert float(ftcl.last_terms.weight) == 0.0 and int(ftcl.last_terms.num_positive_pairs) == 3
    assert float(ftcl.last_terms.fsd) != 0.0 and float(ftcl.last_terms.lcs) != 0.0
    second = ftcl(features, attention, LABELS)  # second call: weight 1/100 of the unweighted sum
    torch.testing.assert_close(second, (ftcl.last_terms.fsd + ftcl.last_terms.lcs) / 100)


def _cos(a, b):
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-8)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-8)
    return a @ b.T


def _fsd(mu, g, gamma=0.1):
    table = np.zeros((mu.shape[0] + 1, mu.shape[1] + 1))
    for i in range(1, mu.shape[0] + 1):
        for j in range(1, mu.shape[1] + 1):
            step = np.array([table[i - 1, j - 1], g[i - 1, j - 1] + table[i - 1, j], g[i - 1, j - 1] + table[i, j - 1]])
            table[i, j] = mu[i - 1, j - 1] + step.max() + gamma * math.log(np.exp((step - step.max()) / gamma).sum())
    return table[-1, -1]


def _lcs(c, threshold=0.92):
    table = np.zeros((c.shape[0] + 1, c.shape[1] + 1))
    for i in range(1, c.shape[0] + 1):
        for j in range(1, c.shape[1] + 1):
            table[i, j] = table[i - 1, j - 1] + c[i - 1, j - 1] if c[i - 1, j - 1] > threshold \
                else max(table[i - 1, j], table[i, j - 1])
    return table[-1, -1]


def test_official_variant_end_to_end_against_independent_computation(generator):
    # Release recipe (MengyuanChen21/CVPR2022-FTCL @cf607d6, --ftcl path: utils/ftcl_criterion.py, model/FTCLNet.py,
    # the table of docs/losses.md) recomputed here in float64 numpy: top-5 attention
    # snippets in time order; "background" = attention ranks 6-10 in time order; one projection split in halves;
    # FSD s = S(U_a, U_b) on positives, S(U_a, V'_b) on negatives; LCS on the top-30 (here all 12) snippets,
    # strict c > 0.92; each loss mean(neg) - mean(pos) with counts + 1e-10; total 0.8 * FSD + 0.1 * LCS.
    features, attention = _batch(generator, dtype=torch.float64)
    # Near-duplicate snippets across videos 0-2 so that the LCS has matches to count.
    features[1] = features[0].roll(2, dims=0) + 0.01 * features[1]
    features[2] = features[0] + 0.01 * features[2]
    ftcl = FTCL(8, variant="official", warmup_steps=0).double()
    terms = ftcl.forward_terms(features, attention, LABELS)
    weight = ftcl.fsd_loss.projection.weight.detach().numpy()
    bias = ftcl.fsd_loss.projection.bias.detach().numpy()
    x, alpha = features.numpy(), attention.numpy()
    ranks = [np.argsort(-alpha[b], kind="stable") for b in range(4)]
    action = [np.sort(r[:5]) for r in ranks]
    background = [np.sort(r[5:10]) for r in ranks]
    projected = [x[b] @ weight.T + bias for b in range(4)]
    pairs = [(0, 1, True), (0, 2, True), (1, 2, True), (0, 3, False), (1, 3, False), (2, 3, False)]
    fsd_values, lcs_values = [], []
    for a, b, positive in pairs:
        u = projected[a][action[a]]
        v = projected[b][action[b] if positive else background[b]]
        fsd_values.append(_fsd(_cos(u[:, :512], v[:, :512]), _cos(u[:, 512:], v[:, 512:])))
        lcs_values.append(_lcs(_cos(x[a], x[b])))
    assert min(lcs_values[:3]) > 1  # the positives do match

    def mean_difference(values):
        return sum(values[3:]) / (3 + 1e-10) - sum(values[:3]) / (3 + 1e-10)

    assert terms.fsd.item() == pytest.approx(mean_difference(fsd_values), abs=1e-9)
    assert terms.lcs.item() == pytest.approx(mean_difference(lcs_values), abs=1e-9)
    assert terms.loss.item() == pytest.approx(0.8 * terms.fsd.item() + 0.1 * terms.lcs.item(), abs=1e-12)
    assert (terms.num_positive_pairs.item(), terms.num_negative_pairs.item()) == (3, 3)
    assert terms.num_positive_pairs.dtype == torch.int64


def test_paper_variant_wiring_and_weights(generator):
    features, attention = _batch(generator)
    ftcl = FTCL(8, warmup_steps=0)
    assert (ftcl.fsd_weight, ftcl.lcs_weight) == (1.0, 1.0)
    assert FTCL(8, variant="official").fsd_weight == 0.8 and FTCL(8, variant="official").lcs_weight == 0.1
    terms = ftcl.forward_terms(features, attention, LABELS)
    assert isinstance(terms, FTCLTerms)
    torch.testing.assert_close(terms.loss, terms.fsd + terms.lcs)
    torch.testing.assert_close(ftcl(features, attention, LABELS), terms.loss)

    weighted = FTCL(8, fsd_weight=0.5, lcs_weight=2.0, warmup_steps=0)
    weighted.load_state_dict(ftcl.state_dict())
    terms = weighted.forward_terms(features, attention, LABELS)
    torch.testing.assert_close(terms.loss, 0.5 * terms.fsd + 2.0 * terms.lcs)


def test_zero_weight_skips_the_term(generator):
    features, attention = _batch(generator)
    only_lcs = FTCL(8, fsd_weight=0, warmup_steps=0)
    assert only_lcs.fsd_loss is None and not list(only_lcs.parameters())
    terms = only_lcs.forward_terms(features, attention, LABELS)
    assert terms.fsd.item() == 0.0 and terms.fsd.grad_fn is None
    torch.testing.assert_close(terms.loss, terms.lcs)
    only_fsd = FTCL(8, lcs_weight=0).forward_terms(features, attention, LABELS)
    assert only_fsd.lcs.item() == 0.0
    features.requires_grad_(True)
    nothing = FTCL(8, fsd_weight=0, lcs_weight=0)(features, attention, LABELS)
    nothing.backward()
    assert nothing.item() == 0.0 and features.grad is not None


@pytest.mark.parametrize("variant", ["paper", "official"])
@pytest.mark.parametrize("labels", [LABELS[:1], torch.eye(4), torch.zeros(4, 2)], ids=["B1", "disjoint", "unlabeled"])
def test_batches_without_pairs_give_connected_zero(generator, variant, labels):
    features, attention = _batch(generator, batch=labels.shape[0])
    features.requires_grad_(True)
    ftcl = FTCL(8, variant=variant)
    terms = ftcl.forward_terms(features, attention, labels)
    assert terms.loss.item() == 0.0 and terms.num_positive_pairs.item() == 0
    terms.loss.backward()
    assert features.grad is not None and bool((features.grad == 0).all())
    assert all(p.grad is not None for p in ftcl.parameters())


def test_registering_as_submodule_puts_parameters_in_the_optimizer():
    model = torch.nn.Linear(8, 8)
    model.ftcl = FTCL(8)
    # What an optimizer built afterwards receives (building one here would import torch._dynamo: seconds).
    in_optimizer = {id(p) for p in model.parameters()}
    assert all(id(p) in in_optimizer for p in model.ftcl.parameters())
    assert len(list(model.ftcl.parameters())) == 4  # f_mu and f_g: weight and bias each


def test_padding_with_lengths_equals_unpadded(generator):
    features, attention = _batch(generator)
    padded_features = torch.cat([features, torch.rand(4, 5, 8, generator=generator)], dim=1)
    padded_attention = torch.cat([attention, torch.ones(4, 5)], dim=1)
    for variant in ("paper", "official"):
        plain, padded = FTCL(8, variant=variant), FTCL(8, variant=variant)
        padded.load_state_dict(plain.state_dict())
        expected = plain.forward_terms(features, attention, LABELS)
        got = padded.forward_terms(padded_features, padded_attention, LABELS, lengths=torch.full((4,), 12))
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, equal_nan=True)


def test_custom_collaborators_are_used(generator):
    features, attention = _batch(generator)
    miner = PairMiner(negatives_per_positive=None)
    selector = ActionSelector(3)
    fsd_loss = FSDLoss(8, projection_dim=16)
    lcs_loss = LCSLoss(threshold=0.5)
    ftcl = FTCL(8, miner=miner, lcs_selector=selector, fsd_loss=fsd_loss, lcs_loss=lcs_loss)
    assert ftcl.miner is miner and ftcl.lcs_selector is selector and ftcl.fsd_loss is fsd_loss
    terms = ftcl.forward_terms(features, attention, torch.eye(4)[[0, 0, 1, 2]])
    assert (terms.num_positive_pairs.item(), terms.num_negative_pairs.item()) == (1, 5)


def test_proposal_selectors_plug_in(generator):
    features, attention = _batch(generator)
    features.requires_grad_(True)
    lengths = torch.tensor([12, 9, 12, 4])
    action, background = ProposalSelector(6), ProposalSelector(4, kind="background")
    ftcl = FTCL(8, action_selector=action, background_selector=background, warmup_steps=0)
    terms = ftcl.forward_terms(features, attention, LABELS, lengths=lengths)
    # The same FSD term from the selectors and the loss called one by one, on pair-level sequences
    pairs = ftcl.miner(LABELS)
    first, second = pairs.index_a, pairs.index_b
    actions, backgrounds = action(features, attention, lengths=lengths), background(features, attention, lengths=lengths)
    expected = ftcl.fsd_loss(actions.features[first], actions.features[second], backgrounds.features[first],
                             backgrounds.features[second], pairs.is_positive)
    torch.testing.assert_close(terms.fsd, expected)
    default = FTCL(8, fsd_loss=ftcl.fsd_loss, warmup_steps=0).forward_terms(features, attention, LABELS,
                                                                            lengths=lengths)
    assert abs(default.fsd.item() - terms.fsd.item()) > 1e-3  # the default selectors give another term
    terms.loss.backward()
    assert features.grad[3, 4:].abs().sum() == 0  # padding never selected
    assert features.grad[3, :4].abs().sum() > 0  # while the video's true snippets get FTCL's gradient



@pytest.mark.parametrize("variant", ["paper", "official"])
def test_all_selections_reach_the_features_through_one_gather(generator, variant):
    # Performance contract: each gather's backward zero-fills a (B, T, D) gradient, the largest cost of FTCL at
    # the paper's sizes, so the action, background and LCS selections must share one gather.
    features, attention = _batch(generator)
    features.requires_grad_(True)
    loss = FTCL(8, variant=variant)(features, attention, LABELS, lengths=torch.tensor([12, 9, 12, 4]))
    seen, stack, gathers = set(), [loss.grad_fn], 0
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        gathers += type(node).__name__.startswith("GatherBackward")
        stack.extend(child for child, _ in node.next_functions)
    assert gathers == 1

def test_no_input_mutation(generator):
    features, attention = _batch(generator)
    saved = features.clone(), attention.clone(), LABELS.clone()
    FTCL(8)(features, attention, LABELS, lengths=torch.tensor([12, 5, 3, 12])).backward()
    assert torch.equal(features, saved[0]) and torch.equal(attention, saved[1]) and torch.equal(LABELS, saved[2])


def test_float64_and_device(generator, device):
    features, attention = _batch(generator, dtype=torch.float64)
    ftcl = FTCL(8).double().to(device)
    loss = ftcl(features.to(device), attention.to(device), LABELS.to(device))
    assert loss.dtype == torch.float64 and loss.device.type == device.type


def test_errors(generator):
    features, attention = _batch(generator)
    ftcl = FTCL(8)
    with pytest.raises(ValueError, match=r"`features` must have shape \(B, T, 8\), but got \(4, 12, 6\)"):
        ftcl(features[..., :6], attention, LABELS)
    with pytest.raises(ValueError, match=r"`labels` must have shape \(B, C\) with B = 4, but got \(3, 2\)"):
        ftcl(features, attention, LABELS[:3])
    with pytest.raises(ValueError, match="`features` must hold at least one video, but got an empty batch"):
        ftcl(features[:0], attention[:0], LABELS[:0])
    with pytest.raises(TypeError, match="`attention` must be a floating tensor"):
        ftcl(features, attention > 0.5, LABELS)
    with pytest.raises(TypeError, match="`lengths` must be an integer tensor"):
        ftcl(features, attention, LABELS, lengths=torch.ones(4))
    with pytest.raises(ValueError, match="`labels` must be multi-hot"):
        FTCL(8, validate_args=True)(features, attention, LABELS * 2)
    with pytest.raises(ValueError, match="`fsd_weight` must be >= 0.0, but got -1"):
        FTCL(8, fsd_weight=-1)
    with pytest.raises(ValueError, match="`fsd_loss` must be built for feature_dim=8, but has feature_dim=4"):
        FTCL(8, fsd_loss=FSDLoss(4))
    with pytest.raises(ValueError, match="`variant` must be one of 'paper', 'official'"):
        FTCL(8, variant="release")


def test_device_mismatch_is_reported(generator):
    # The "meta" device stands in for a second device on CPU-only machines.
    features, attention = _batch(generator)
    ftcl = FTCL(8)
    with pytest.raises(ValueError, match=r"`attention` must be on the same device as `features` \(cpu\), but got meta"):
        ftcl(features, attention.to("meta"), LABELS)
    with pytest.raises(ValueError, match=r"`labels` must be on the same device as `features` \(cpu\), but got meta"):
        ftcl(features, attention, LABELS.to("meta"))
    with pytest.raises(ValueError, match=r"`features_b` must be on the same device as `features_a`"):
        LCSLoss()(features[:2], features[2:].to("meta"), torch.tensor([True, False]))
