"""``skip_reads``: a resumed epoch counts the reads of the batches it skips, so later reads draw what they would
have drawn in an uninterrupted epoch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ftcl_plugin.data import open_dataset
from ftcl_plugin.data.synthetic import generate


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Videos of 48 snippets sampled to 8: a stratified random draw differs from read to read.
    return generate(tmp_path_factory.mktemp("skip"), num_train=3, num_test=1, feature_dim=4, min_length=48,
                    max_length=48)


@pytest.mark.parametrize("sampling", ["random", "crop", "acmnet_random"])
def test_skipped_reads_give_the_uninterrupted_draws(root: Path, sampling: str) -> None:
    # An epoch reads videos 0, 1, 0, 2, 0; a resumed run skips the first three reads.
    order = [0, 1, 0, 2, 0]
    straight = open_dataset(root, "train", num_segments=8 if sampling != "crop" else 16, sampling=sampling, seed=3)
    expected = [straight[i].features for i in order]
    resumed = open_dataset(root, "train", num_segments=8 if sampling != "crop" else 16, sampling=sampling, seed=3)
    resumed.skip_reads(order[:3])
    assert all(torch.equal(resumed[i].features, want) for i, want in zip(order[3:], expected[3:]))
    # Without the skipped reads counted, the third read of video 0 would repeat its first draw instead.
    fresh = open_dataset(root, "train", num_segments=8 if sampling != "crop" else 16, sampling=sampling, seed=3)
    assert torch.equal(fresh[0].features, expected[0]) and not torch.equal(expected[0], expected[4])


def test_skip_reads_restarts_with_the_epoch_and_refuses_bad_indices(root: Path) -> None:
    data = open_dataset(root, "train", num_segments=8, sampling="random", seed=3)
    first = data[1].features
    data.skip_reads([1, 1])
    data.set_epoch(0)  # a new epoch forgets the counts
    assert torch.equal(data[1].features, first)
    with pytest.raises(IndexError, match="index 3 is out of range for a dataset of 3 videos."):
        data.skip_reads([0, 3])
    # The refused call counted nothing, not even its valid first index: video 0's next read is its first draw.
    reference = open_dataset(root, "train", num_segments=8, sampling="random", seed=3)
    assert torch.equal(data[0].features, reference[0].features)
