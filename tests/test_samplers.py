"""ClassPairSampler: a same-class pair in every batch, epoch coverage, reproducibility, errors."""

from __future__ import annotations

import pytest
import torch

from ftcl_plugin.data.samplers import ClassPairSampler


def _has_pair(labels: torch.Tensor, batch: list[int], identical: bool = False) -> bool:
    rows = labels[batch] != 0
    for i in range(len(batch)):
        for j in range(i + 1, len(batch)):
            if identical and bool(rows[i].any()) and torch.equal(rows[i], rows[j]):
                return True
            if not identical and bool((rows[i] & rows[j]).any()):
                return True
    return False


def _activitynet_like(generator: torch.Generator, videos: int = 1000, classes: int = 200) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.randint(classes, (videos,), generator=generator), classes).float()


def test_every_batch_has_a_pair_with_many_classes(generator):
    labels = _activitynet_like(generator)
    # Random batches of 8 from 200 classes mostly lack a pair (about 13% have one): hence the sampler.
    random_batches = torch.randperm(1000, generator=generator).reshape(-1, 8).tolist()
    assert sum(_has_pair(labels, b) for b in random_batches) < len(random_batches)
    sampler = ClassPairSampler(labels, 16, generator=generator)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 63
    assert all(_has_pair(labels, batch) for batch in batches)
    assert sorted(v for b in batches for v in b) == list(range(1000))  # each video once per epoch
    assert all(len(b) == 16 for b in batches[:-1]) and len(batches[-1]) == 1000 - 62 * 16


def test_few_pairs_are_borrowed(generator):
    # Only class 0 has two videos: every batch still gets a pair, by drawing an extra partner.
    labels = torch.eye(21)[[0] + list(range(21))]
    batches = list(ClassPairSampler(labels, 4, generator=generator))
    assert len(batches) == 6 and all(_has_pair(labels, b) for b in batches)
    assert all(len(b) <= 4 for b in batches)


def test_last_batch_of_one_video_gets_a_partner(generator):
    labels = torch.eye(3).repeat_interleave(3, dim=0)  # 9 videos, batch 4: sizes 4, 4, 1 -> 1 grows to 2
    batches = list(ClassPairSampler(labels, 4, generator=generator))
    assert [len(b) for b in batches] == [4, 4, 2] and all(_has_pair(labels, b) for b in batches)


def test_drop_last_and_identical_rule(generator):
    labels = torch.tensor([[1, 0], [1, 0], [1, 1], [1, 1], [0, 1], [0, 1], [1, 0]], dtype=torch.float32)
    sampler = ClassPairSampler(labels, 3, generator=generator, drop_last=True, positive_rule="identical_labels")
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2 and all(len(b) == 3 for b in batches)
    assert all(_has_pair(labels, b, identical=True) for b in batches)


def test_reproducible_and_epochs_differ():
    labels = torch.eye(5).repeat_interleave(4, dim=0)
    first = ClassPairSampler(labels, 4, generator=torch.Generator().manual_seed(7))
    second = ClassPairSampler(labels, 4, generator=torch.Generator().manual_seed(7))
    epoch = list(first)
    assert epoch == list(second)
    assert list(first) != epoch  # the generator advances between epochs
    assert list(ClassPairSampler(labels, 4)) == list(ClassPairSampler(labels, 4))  # default: seeded locally


def test_works_as_a_dataloader_batch_sampler(generator):
    labels = torch.eye(4).repeat_interleave(3, dim=0)
    dataset = torch.utils.data.TensorDataset(torch.arange(12), labels)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=ClassPairSampler(labels, 4, generator=generator))
    seen = [index for indices, _ in loader for index in indices.tolist()]
    assert sorted(seen) == list(range(12))


def test_no_input_mutation(generator):
    labels = _activitynet_like(generator, videos=50, classes=5)
    saved = labels.clone()
    list(ClassPairSampler(labels, 8))
    assert torch.equal(labels, saved)


def test_errors():
    with pytest.raises(ValueError, match="`labels` must let at least two videos form a pair"):
        ClassPairSampler(torch.eye(4), 2)
    with pytest.raises(ValueError, match="`batch_size` must be >= 2, but got 1"):
        ClassPairSampler(torch.ones(4, 1), 1)
    with pytest.raises(ValueError, match=r"`labels` must have shape \(N, C\), but got \(4,\)"):
        ClassPairSampler(torch.ones(4), 2)
    with pytest.raises(TypeError, match="`labels` must be a torch.Tensor, but got list"):
        ClassPairSampler([[1]], 2)
