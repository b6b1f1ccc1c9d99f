"""ClassPairSampler: a same-class pair in every batch, epoch coverage, reproducibility, errors. SimilarPairSampler:
W-TALC's batches (pairs drawn by class with replacement, then random videos)."""

from __future__ import annotations

import pytest
import torch

from ftcl_plugin.data.samplers import ClassPairSampler, SimilarPairSampler


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


# ---- SimilarPairSampler (W-TALC's video_dataset.py load_data) --------------------------------------------------


def _uneven_labels() -> torch.Tensor:
    # class 0: video 0 only; class 1: videos 1..9; video 10 has classes 1 and 2; class 3 has no video.
    labels = torch.zeros(11, 4)
    labels[0, 0] = 1
    labels[1:11, 1] = 1
    labels[10, 2] = 1
    return labels


def test_similar_pairs_share_a_class_at_fixed_positions():
    labels = _uneven_labels()
    batches = list(SimilarPairSampler(labels, 10, num_pairs=3, num_batches=200,
                                      generator=torch.Generator().manual_seed(0)))
    assert len(batches) == 200 and all(len(b) == 10 for b in batches)
    for batch in batches:
        for first in (0, 2, 4):
            assert bool((labels[batch[first]] * labels[batch[first + 1]]).sum() > 0)


def test_similar_pairs_draw_classes_uniformly_and_videos_with_replacement():
    # Classes are drawn uniformly among the 3 that have videos (class 3 has none), not in proportion to their
    # videos: P(class 0) = 1/3, and class 0's only video then fills both places, so P(pair = (0, 0)) = 1/3.
    # Class 2's only video is 10, so P(pair = (10, 10)) >= 1/3. Class 1 has 10 videos (1..10): P(same video
    # twice) = 1/10, so P(a pair is one video twice) = 1/3 + 1/3 + 1/3 * 1/10 = 0.7.
    labels = _uneven_labels()
    sampler = SimilarPairSampler(labels, 6, num_pairs=3, num_batches=2000, generator=torch.Generator().manual_seed(1))
    pairs = [(b[i], b[i + 1]) for b in sampler for i in (0, 2, 4)]
    assert sum(p == (0, 0) for p in pairs) / len(pairs) == pytest.approx(1 / 3, abs=0.015)
    assert sum(p[0] == p[1] for p in pairs) / len(pairs) == pytest.approx(0.7, abs=0.015)


def test_similar_pairs_fill_the_rest_uniformly_and_default_length():
    labels = _uneven_labels()
    sampler = SimilarPairSampler(labels, 10, num_pairs=3, generator=torch.Generator().manual_seed(2))
    assert len(sampler) == len(list(sampler)) == 2  # ceil(11 / 10) batches: a pass draws about N videos
    rest = [v for b in SimilarPairSampler(labels, 10, num_pairs=3, num_batches=3000,
                                          generator=torch.Generator().manual_seed(3)) for v in b[6:]]
    counts = torch.bincount(torch.tensor(rest), minlength=11).double() / len(rest)
    torch.testing.assert_close(counts, torch.full((11,), 1 / 11, dtype=torch.float64), atol=0.01, rtol=0)
    assert all(len(b) == 4 for b in SimilarPairSampler(labels, 4, num_pairs=2, generator=torch.Generator()))


def test_similar_pairs_reproducible_and_no_input_mutation():
    labels = _uneven_labels()
    saved = labels.clone()
    first = list(SimilarPairSampler(labels, 10, num_batches=5, generator=torch.Generator().manual_seed(4)))
    again = list(SimilarPairSampler(labels, 10, num_batches=5, generator=torch.Generator().manual_seed(4)))
    assert first == again and torch.equal(labels, saved)
    assert list(SimilarPairSampler(labels, 10, num_batches=5)) == list(SimilarPairSampler(labels, 10, num_batches=5))


def test_similar_pairs_errors():
    with pytest.raises(ValueError, match="`num_pairs` must be <= 2, but got 3"):
        SimilarPairSampler(torch.eye(4), 5, num_pairs=3)
    with pytest.raises(ValueError, match="`labels` must give at least one class a video"):
        SimilarPairSampler(torch.zeros(4, 2), 10)
    with pytest.raises(ValueError, match="`num_batches` must be >= 1, but got 0"):
        SimilarPairSampler(torch.eye(4), 4, num_pairs=1, num_batches=0)
    with pytest.raises(TypeError, match="`generator` must be a torch.Generator or None, but got int"):
        SimilarPairSampler(torch.eye(4), 4, num_pairs=1, generator=0)
    with pytest.raises(ValueError, match=r"`labels` must have shape \(N, C\), but got \(4,\)"):
        SimilarPairSampler(torch.ones(4), 4)
