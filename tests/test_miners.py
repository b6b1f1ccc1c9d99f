"""PairMiner: pair rules, balanced sampling, degenerate batches, errors."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

from ftcl_plugin import PairMiner, Pairs

# Videos: 0 {A}, 1 {A}, 2 {A, B}, 3 {B}, 4 {C}, 5 {} (no label).
LABELS = torch.tensor([[1, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=torch.float32)


def _as_sets(pairs: Pairs) -> tuple[set, set]:
    positive, negative = set(), set()
    for a, b, p in zip(pairs.index_a.tolist(), pairs.index_b.tolist(), pairs.is_positive.tolist()):
        (positive if p else negative).add((a, b))
    return positive, negative


def _brute_force(labels: torch.Tensor, rule: str) -> tuple[set, set]:
    positive, negative = set(), set()
    sets = [frozenset(torch.nonzero(row).flatten().tolist()) for row in labels]
    for a, b in itertools.combinations(range(len(sets)), 2):
        if not sets[a] & sets[b]:
            negative.add((a, b))
        elif rule == "shared_class" or (sets[a] == sets[b] and (rule == "identical_labels" or len(sets[a]) == 1)):
            positive.add((a, b))
    return positive, negative


@pytest.mark.parametrize("rule", ["shared_class", "identical_labels", "identical_single_label"])
def test_rules_match_brute_force(rule):
    pairs = PairMiner(positive_rule=rule, negatives_per_positive=None)(LABELS)
    assert _as_sets(pairs) == _brute_force(LABELS, rule)
    assert pairs.index_a.dtype == torch.int64 and pairs.is_positive.dtype == torch.bool
    assert bool((pairs.index_a < pairs.index_b).all())


def test_rules_on_hand_example():
    # Worked out by hand from LABELS: shared_class positives (0,1) (0,2) (1,2) (2,3); identical only (0,1).
    assert _as_sets(PairMiner(negatives_per_positive=None)(LABELS))[0] == {(0, 1), (0, 2), (1, 2), (2, 3)}
    identical = PairMiner(positive_rule="identical_labels", negatives_per_positive=None)(LABELS)
    assert _as_sets(identical)[0] == {(0, 1)}
    # The unlabeled video 5 is disjoint from everyone, never positive.
    assert all((a, 5) in _as_sets(identical)[1] for a in range(5))


def test_int_and_bool_labels_agree_with_float():
    reference = _as_sets(PairMiner(negatives_per_positive=None)(LABELS))
    for dtype in (torch.int64, torch.bool):
        assert _as_sets(PairMiner(negatives_per_positive=None)(LABELS.to(dtype))) == reference


def test_balanced_sampling_counts_and_subset():
    generator = torch.Generator().manual_seed(3)
    labels = torch.eye(4).repeat_interleave(3, dim=0)  # 4 classes x 3 videos: 12 positives, 54 negatives
    pairs = PairMiner(generator=generator)(labels)
    positive, negative = _as_sets(pairs)
    all_positive, all_negative = _brute_force(labels, "shared_class")
    assert positive == all_positive and len(negative) == 12 and negative <= all_negative
    half = PairMiner(negatives_per_positive=0.5)(labels)
    assert int((~half.is_positive).sum()) == 6


def test_sampling_is_reproducible_and_advances():
    labels = torch.eye(4).repeat_interleave(3, dim=0)
    first = PairMiner(generator=torch.Generator().manual_seed(1))
    second = PairMiner(generator=torch.Generator().manual_seed(1))
    draws = [_as_sets(first(labels))[1] for _ in range(3)]
    assert draws[0] == _as_sets(second(labels))[1]
    assert len({frozenset(d) for d in draws}) > 1  # successive batches draw different negatives


def test_max_positive_pairs():
    labels = torch.ones(5, 1)  # 10 positive pairs
    pairs = PairMiner(max_positive_pairs=4)(labels)
    assert int(pairs.is_positive.sum()) == 4 and pairs.is_positive.all()


@pytest.mark.parametrize("labels", [torch.eye(3), torch.ones(1, 2), torch.zeros(2, 2)], ids=["disjoint", "B1", "none"])
def test_degenerate_batches_give_no_pairs(labels):
    pairs = PairMiner()(labels)
    assert pairs.index_a.shape == (0,) and pairs.index_b.shape == (0,) and pairs.is_positive.shape == (0,)


def test_pair_order_invariance_under_batch_permutation():
    permutation = torch.tensor([3, 0, 5, 1, 4, 2])
    pairs = PairMiner(negatives_per_positive=None)(LABELS[permutation])
    mapped = {(min(int(permutation[a]), int(permutation[b])), max(int(permutation[a]), int(permutation[b])), bool(p))
              for a, b, p in zip(pairs.index_a, pairs.index_b, pairs.is_positive)}
    positive, negative = _brute_force(LABELS, "shared_class")
    assert mapped == {(a, b, True) for a, b in positive} | {(a, b, False) for a, b in negative}


def test_no_input_mutation_and_deepcopy():
    labels = LABELS.clone()
    miner = PairMiner()
    miner(labels)
    assert torch.equal(labels, LABELS)
    clone = copy.deepcopy(miner)  # e.g. an EMA copy of a model that holds FTCL
    assert _as_sets(clone(LABELS)) == _as_sets(copy.deepcopy(miner)(LABELS))


def test_device_follows_labels(device):
    pairs = PairMiner()(LABELS.to(device))
    assert pairs.index_a.device.type == device.type and pairs.is_positive.device.type == device.type


def test_errors():
    with pytest.raises(ValueError, match=r"`labels` must have shape \(B, C\), but got \(6,\)"):
        PairMiner()(torch.ones(6))
    with pytest.raises(TypeError, match="`labels` must be a torch.Tensor, but got list"):
        PairMiner()([[1, 0]])
    with pytest.raises(ValueError, match="`labels` must be multi-hot"):
        PairMiner(validate_args=True)(torch.tensor([[0.5, 1.0], [1.0, 0.0]]))
    with pytest.raises(ValueError, match="`positive_rule` must be one of"):
        PairMiner(positive_rule="same")
    with pytest.raises(ValueError, match="`negatives_per_positive` must be >= 0.0, but got -1"):
        PairMiner(negatives_per_positive=-1)
    with pytest.raises(TypeError, match="`generator` must be a torch.Generator or None, but got int"):
        PairMiner(generator=0)
