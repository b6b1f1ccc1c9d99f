"""The baselines' temporal samplers (ftcl_plugin.data.sampling): ACM-Net's training and test samplers, W-TALC's
random crop and the fixed-length uniform sampler, each against its rule worked out by hand."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from ftcl_plugin.data import sample_indices


def _draws(length: int, segments: int, sampling: str, count: int) -> np.ndarray:
    return np.stack([sample_indices(length, segments, sampling, np.random.default_rng(seed)) for seed in range(count)])


# ---- ACM-Net's training sampler ("acmnet_random", dataset/dataset_class.py random_sample) ------------------------


def test_acmnet_random_is_the_identity_at_l_equal_t():
    assert sample_indices(750, 750, "acmnet_random", np.random.default_rng(0)).tolist() == list(range(750))


@pytest.mark.parametrize(("length", "segments"), [(3, 8), (300, 750), (1, 5)])
def test_acmnet_random_short_videos_are_sorted_draws_within_the_video(length, segments):
    for seed in range(20):
        idx = sample_indices(length, segments, "acmnet_random", np.random.default_rng(seed))
        assert idx.shape == (segments,) and idx.dtype == np.int64
        assert idx.min() >= 0 and idx.max() < length and bool((np.diff(idx) >= 0).all())


def test_acmnet_random_short_videos_are_iid_with_replacement():
    # T = 6 i.i.d. uniform draws from L = 3 snippets, sorted: the counts are multinomial(6, 1/3, 1/3, 1/3).
    # By hand: P(a given snippet never drawn) = (2/3)^6 = 64/729 = 0.0878; P(one snippet drawn all 6 times) =
    # 3 * (1/3)^6 = 1/243 = 0.0041; mean count per snippet = 2. The stratified sampler ("random") never misses a
    # snippet.
    draws = _draws(3, 6, "acmnet_random", 6000)
    counts = np.stack([np.bincount(row, minlength=3) for row in draws])
    assert counts.sum(axis=1).tolist() == [6] * 6000
    assert (counts == 0).mean() == pytest.approx(64 / 729, abs=0.01)
    assert (counts == 6).any(axis=1).mean() == pytest.approx(1 / 243, abs=0.003)
    assert counts.mean() == pytest.approx(2.0, abs=0.02)
    assert all(np.unique(row).size == 3 for row in _draws(3, 6, "random", 200))


def test_acmnet_random_coverage_at_thumos14_sizes():
    # L = 300, T = 750: a snippet is missed with probability (299/300)^750 = 0.0818, so 91.8 % are covered;
    # the stratified sampler covers all 300, with at most 4 copies of a snippet.
    draws = _draws(300, 750, "acmnet_random", 40)
    coverage = np.mean([np.unique(row).size / 300 for row in draws])
    assert coverage == pytest.approx(1 - (299 / 300) ** 750, abs=0.005)
    assert max(np.bincount(row).max() for row in draws) > 4
    stratified = _draws(300, 750, "random", 40)
    assert all(np.unique(row).size == 300 and np.bincount(row).max() <= 4 for row in stratified)


def test_acmnet_random_long_videos_follow_the_bin_rule():
    # L = 10, T = 4: edges i * 10 / 4 = 0, 2.5, 5, 7.5 -> floors 0, 2, 5, 7. Index 0 is uniform on {0, 1, 2},
    # index 1 on {2, .., 5}, index 2 on {5, 6, 7} (both ends included), and the last index is uniform on
    # [index 2, 9], so it can be 5 or 6, below floor(7.5) (the stratified sampler's last index is in {7, 8, 9}).
    # P(last = 9) = 1/3 * (1/5 + 1/4 + 1/3) = 47/180.
    draws = _draws(10, 4, "acmnet_random", 6000)
    assert [set(draws[:, i].tolist()) for i in range(3)] == [{0, 1, 2}, {2, 3, 4, 5}, {5, 6, 7}]
    assert set(draws[:, 3].tolist()) == set(range(5, 10))
    assert bool((draws[:, 3] >= draws[:, 2]).all())
    assert (draws[:, 3] == 9).mean() == pytest.approx(47 / 180, abs=0.02)
    for i, size in enumerate((3, 4, 3)):
        frequencies = np.bincount(draws[:, i])[draws[:, i].min():] / 6000
        np.testing.assert_allclose(frequencies, 1 / size, atol=0.025)
    assert set(_draws(10, 4, "random", 500)[:, 3].tolist()) == {7, 8, 9}


def test_acmnet_random_single_segment_draws_from_the_whole_video():
    assert set(_draws(5, 1, "acmnet_random", 300)[:, 0].tolist()) == set(range(5))


# ---- ACM-Net's test sampler ("acmnet_uniform", uniform_sample) ---------------------------------------------------


def test_acmnet_uniform_rounds_the_ratio_first():
    # fl(1050 / 750) = 1.3999999999999999 (just below 1.4), so 45 * it = 62.99999999999999 -> 62, where
    # floor(45 * 1050 / 750) = 63 ("uniform", CoLA's rule). Index 45 is the first of the positions that differ.
    acm, cola = sample_indices(1050, 750, "acmnet_uniform"), sample_indices(1050, 750, "uniform")
    assert acm.shape == cola.shape == (750,)
    assert (int(acm[45]), int(cola[45])) == (62, 63)
    assert int(np.flatnonzero(acm != cola)[0]) == 45
    # 1500 / 750 = 2 is exact: both rules agree.
    assert np.array_equal(sample_indices(1500, 750, "acmnet_uniform"), np.arange(750) * 2)


def test_acmnet_uniform_short_videos_and_the_single_snippet_case():
    assert sample_indices(300, 750, "acmnet_uniform").tolist() == list(range(300))
    assert sample_indices(750, 750, "acmnet_uniform").tolist() == list(range(750))
    assert sample_indices(1, 750, "acmnet_uniform").tolist() == [0, 0]  # ACM-Net doubles a 1-snippet video


# ---- W-TALC's random crop ("crop", utils.py process_feat) -------------------------------------------------------


def test_crop_is_a_contiguous_window_whose_start_never_reaches_l_minus_t():
    # L = 10, T = 4: W-TALC draws the start with randint(L - T) = randint(6), i.e. 0..5; start 6 (the window
    # 6..9) is never drawn.
    draws = _draws(10, 4, "crop", 3000)
    assert bool((np.diff(draws, axis=1) == 1).all())
    starts = Counter(draws[:, 0].tolist())
    assert sorted(starts) == [0, 1, 2, 3, 4, 5]
    np.testing.assert_allclose([starts[s] / 3000 for s in range(6)], 1 / 6, atol=0.03)


def test_crop_keeps_short_videos_whole():
    generator = np.random.default_rng(0)
    assert sample_indices(750, 750, "crop", generator).tolist() == list(range(750))
    assert sample_indices(12, 750, "crop", generator).tolist() == list(range(12))


# ---- the fixed-length uniform sampler ("uniform_fixed") ---------------------------------------------------------


def test_uniform_fixed_always_gives_t_rows():
    # floor(i * 3 / 5) for i = 0..4: 0, 0.6, 1.2, 1.8, 2.4 -> 0, 0, 1, 1, 2
    assert sample_indices(3, 5, "uniform_fixed").tolist() == [0, 0, 1, 1, 2]
    assert np.array_equal(sample_indices(1000, 750, "uniform_fixed"), sample_indices(1000, 750, "uniform"))
    assert sample_indices(1, 4, "uniform_fixed").tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("sampling", ["acmnet_random", "crop"])
def test_random_samplers_need_a_generator_and_are_reproducible(sampling):
    with pytest.raises(ValueError, match=f"`generator` must be a numpy.random.Generator for sampling='{sampling}'"):
        sample_indices(1000, 750, sampling)
    first = sample_indices(1000, 750, sampling, np.random.default_rng(7))
    assert np.array_equal(first, sample_indices(1000, 750, sampling, np.random.default_rng(7)))
    assert not np.array_equal(first, sample_indices(1000, 750, sampling, np.random.default_rng(8)))
