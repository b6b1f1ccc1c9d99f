"""Selectors: brute-force agreement, temporal order, short videos, padding, gradients, errors."""

from __future__ import annotations

import pytest
import torch

from ftcl_plugin import ActionSelector, BackgroundSelector, ProposalSelector
from ftcl_plugin.selectors import select_all


def _batch(generator, batch=3, snippets=12, dim=4, dtype=torch.float32):
    features = torch.randn(batch, snippets, dim, generator=generator, dtype=dtype)
    attention = torch.rand(batch, snippets, generator=generator, dtype=dtype)
    return features, attention


def _expected_ranks(attention_row, length, k, descending, offset):
    """Brute force: rank the valid snippets, take the window, sort by time."""
    scores = attention_row[:length].tolist()
    ranked = sorted(range(length), key=lambda t: -scores[t] if descending else scores[t])
    count = min(k, length)
    start = max(0, min(offset, length - count))
    return sorted(ranked[start:start + count])


@pytest.mark.parametrize("k", [1, 5, 12, 20])
def test_action_selector_matches_brute_force(generator, k, dtype):
    features, attention = _batch(generator, dtype=dtype)
    selection = ActionSelector(k)(features, attention)
    width = min(k, 12)
    assert selection.features.shape == (3, width, 4) and selection.features.dtype == dtype
    for b in range(3):
        chosen = _expected_ranks(attention[b], 12, k, True, 0)
        assert selection.indices[b].tolist() == chosen
        assert torch.equal(selection.features[b], features[b, chosen])
    assert selection.lengths.tolist() == [width] * 3


@pytest.mark.parametrize("rule,offset", [("lowest", 0), ("next", None), ("next", 2)])
def test_background_selector_matches_brute_force(generator, rule, offset):
    features, attention = _batch(generator)
    selector = BackgroundSelector(4, rule=rule, offset=offset)
    selection = selector(features, attention)
    for b in range(3):
        expected = _expected_ranks(attention[b], 12, 4, rule == "next", 4 if offset is None and rule == "next"
                                   else (offset or 0))
        assert selection.indices[b].tolist() == expected


def test_padding_with_lengths_equals_unpadded(generator):
    features, attention = _batch(generator, snippets=10)
    lengths = torch.tensor([10, 3, 6])
    padded_features = torch.cat([features, torch.randn(3, 4, 4, generator=generator)], dim=1)
    padded_attention = torch.cat([attention, torch.full((3, 4), 5.0)], dim=1)  # padding looks very action-like
    for selector in (ActionSelector(5), BackgroundSelector(5), BackgroundSelector(5, rule="next")):
        padded = selector(padded_features, padded_attention, lengths=lengths)
        for b, length in enumerate(lengths.tolist()):
            alone = selector(features[b:b + 1, :length], attention[b:b + 1, :length])
            count = int(alone.lengths[0])
            assert int(padded.lengths[b]) == count
            assert torch.equal(padded.features[b, :count], alone.features[0, :count])
            assert torch.equal(padded.indices[b, :count], alone.indices[0, :count])
            assert bool((padded.features[b, count:] == 0).all()) and bool((padded.indices[b, count:] == -1).all())


def test_short_videos_are_handled_or_refused(generator):
    features, attention = _batch(generator, snippets=3)
    selection = ActionSelector(30)(features, attention)
    assert selection.features.shape == (3, 3, 4) and selection.lengths.tolist() == [3, 3, 3]
    assert selection.indices.tolist() == [[0, 1, 2]] * 3
    with pytest.raises(ValueError, match=r"`k` \(30\) must be <= the number of snippets T \(3\)"):
        ActionSelector(30, allow_short=False)(features, attention)
    # The "next" window (ranks 3-4) slides back to ranks 2-3 when a video has only 3 snippets.
    assert BackgroundSelector(2, rule="next")(features, attention).lengths.tolist() == [2, 2, 2]


def test_gradient_reaches_only_selected_features(generator):
    features, attention = _batch(generator, dtype=torch.float64)
    features.requires_grad_(True)
    attention.requires_grad_(True)
    selection = ActionSelector(4)(features, attention, lengths=torch.tensor([12, 2, 7]))
    selection.features.sum().backward()
    for b in range(3):
        touched = (features.grad[b].abs().sum(dim=1) > 0).nonzero().flatten().tolist()
        assert touched == [i for i in selection.indices[b].tolist() if i >= 0]
    assert attention.grad is None  # indices come from the detached attention


def test_no_input_mutation(generator):
    features, attention = _batch(generator)
    saved = features.clone(), attention.clone()
    for selector in (ActionSelector(5), BackgroundSelector(5, rule="next"), ProposalSelector(4)):
        selector(features, attention, lengths=torch.tensor([12, 5, 1]))
    assert torch.equal(features, saved[0]) and torch.equal(attention, saved[1])


def test_proposal_selector_hand_example():
    # attention above 0.5 at t = 1..3 (margin 0.4 + 0.3 + 0.2) and t = 5 (0.1): the run 1..3 wins, and
    # 5 points spread over [1, 3] read features 1, 1.5, 2, 2.5, 3 (features are t itself).
    features = torch.arange(6.0).reshape(1, 6, 1)
    attention = torch.tensor([[0.1, 0.9, 0.8, 0.7, 0.0, 0.6]])
    selection = ProposalSelector(5, threshold=0.5)(features, attention)
    assert selection.features.flatten().tolist() == [1.0, 1.5, 2.0, 2.5, 3.0]
    assert selection.indices.tolist() == [[1, 2, 2, 2, 3]]  # round half to even
    background = ProposalSelector(3, threshold=0.5, kind="background")(features, attention)
    # Background runs: {0} with margin 0.4 and {4} with margin 0.5, so t = 4 is read three times.
    assert background.features.flatten().tolist() == [4.0, 4.0, 4.0]


def test_proposal_selector_fallback_midpoint_and_mean_threshold():
    features = torch.arange(6.0).reshape(1, 6, 1)
    attention = torch.tensor([[0.1, 0.9, 0.8, 0.7, 0.0, 0.6]])
    # Nothing reaches 2.0: fall back to the single most action-like snippet, t = 1.
    assert ProposalSelector(2, threshold=2.0)(features, attention).features.flatten().tolist() == [1.0, 1.0]
    # length=1 reads the middle of the run [1, 3].
    assert ProposalSelector(1, threshold=0.5)(features, attention).features.flatten().tolist() == [2.0]
    # Default threshold = mean attention (0.5167): runs {1, 2, 3} and {5}; the first has the larger margin.
    assert ProposalSelector(3)(features, attention).indices.tolist() == [[1, 2, 3]]


def test_proposal_selector_respects_lengths_and_passes_gradients(generator):
    features, attention = _batch(generator, dtype=torch.float64)
    features.requires_grad_(True)
    lengths = torch.tensor([12, 4, 1])
    padded_attention = attention.clone()
    padded_attention[1, 4:] = 10.0  # padding must never be picked
    selection = ProposalSelector(6)(features, padded_attention, lengths=lengths)
    assert bool((selection.indices[1] < 4).all()) and selection.indices[2].tolist() == [0] * 6
    assert selection.lengths.tolist() == [6, 6, 6]
    selection.features.sum().backward()
    assert features.grad[1, 4:].abs().sum() == 0 and features.grad[1, :4].abs().sum() > 0



class _Reversed(ActionSelector):
    """Overrides forward, so select_all must call it rather than read its plan."""

    def forward(self, features, attention, *, lengths=None):
        selection = super().forward(features, attention, lengths=lengths)
        return selection._replace(features=selection.features.flip(1))


def test_select_all_equals_separate_calls_with_one_gather(generator):
    features, attention = _batch(generator, dtype=torch.float64)
    lengths = torch.tensor([12, 4, 2])
    selectors = [ActionSelector(5), BackgroundSelector(3, rule="next"), ProposalSelector(4, kind="background"),
                 _Reversed(3), ActionSelector(30)]
    weights = [torch.rand(3, k, 4, generator=generator, dtype=torch.float64) for k in (5, 3, 4, 3, 12)]
    results = []
    for fused in (True, False):
        leaf = features.clone().requires_grad_(True)
        if fused:
            selections = select_all(selectors, leaf, attention, lengths=lengths)
        else:
            selections = [selector(leaf, attention, lengths=lengths) for selector in selectors]
        sum((s.features * w).sum() for s, w in zip(selections, weights)).backward()
        results.append((selections, leaf.grad))
        if fused:  # the four planned selectors share one gather: one GatherBackward in the graph
            graph = [s.features.grad_fn for s in selections]
            assert sum(1 for node in _graph_nodes(graph) if type(node).__name__.startswith("GatherBackward")) == 2
    (fused, fused_grad), (separate, separate_grad) = results
    for a, b in zip(fused, separate):
        for x, y in zip(a, b):
            assert torch.equal(x, y)
    torch.testing.assert_close(fused_grad, separate_grad)
    assert select_all([], features, attention) == []


def _graph_nodes(roots):
    seen, stack = set(), [node for node in roots if node is not None]
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(child for child, _ in node.next_functions if child is not None)
    return seen

def test_errors(generator):
    features, attention = _batch(generator)
    selector = ActionSelector(5)
    with pytest.raises(ValueError, match=r"`features` must have shape \(B, T, D\), but got \(3, 12\)"):
        selector(features[:, :, 0], attention)
    with pytest.raises(ValueError, match=r"`attention` must have shape \(B, T\) = \(3, 12\)"):
        selector(features, attention[:, :5])
    with pytest.raises(TypeError, match="`features` must be a floating tensor"):
        selector(features.long(), attention)
    with pytest.raises(ValueError, match="`features` must hold at least one video"):
        selector(features[:0], attention[:0])
    with pytest.raises(TypeError, match="`lengths` must be an integer tensor, but got dtype float32"):
        selector(features, attention, lengths=torch.ones(3))
    with pytest.raises(ValueError, match=r"`lengths` must have shape \(B,\) = \(3,\), but got \(2,\)"):
        selector(features, attention, lengths=torch.ones(2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"`lengths` must lie in \[1, 12\], but got values in \[0, 3\]"):
        ActionSelector(5, validate_args=True)(features, attention, lengths=torch.tensor([3, 0, 1]))
    with pytest.raises(ValueError, match="`k` must be >= 1, but got 0"):
        ActionSelector(0)
    with pytest.raises(TypeError, match="`k` must be an int, but got float"):
        BackgroundSelector(2.5)
    with pytest.raises(ValueError, match="`rule` must be one of 'lowest', 'next', but got 'top'"):
        BackgroundSelector(2, rule="top")
    with pytest.raises(ValueError, match="`kind` must be one of 'action', 'background'"):
        ProposalSelector(2, kind="both")
