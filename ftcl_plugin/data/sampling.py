"""Temporal samplers of the baselines: how a video of L snippets becomes the network's T input rows.

Training samplers are random (stratified, ACM-Net's, W-TALC's random crop); test samplers are deterministic.
Each one reproduces a released codebase's rule exactly, including its rounding, so a clean-room baseline sees the
same snippets as the original would.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from .._checks import check_choice, check_number

Sampling = Literal["random", "acmnet_random", "crop", "uniform", "acmnet_uniform", "uniform_fixed", "full"]
SAMPLINGS = ("random", "acmnet_random", "crop", "uniform", "acmnet_uniform", "uniform_fixed", "full")
_RANDOM = ("random", "acmnet_random", "crop")


def sample_indices(length: int, num_segments: int | None, sampling: Sampling,
                   generator: np.random.Generator | None = None) -> np.ndarray:
    """Snippet indices that turn a video of ``length`` snippets into the network's input.

    Training (random; ``generator`` required), with ``b_i = i*L/T``:

    - ``"random"`` (stratified random; CoLA's ``random_perturb``, zhang-can/CoLA ``core/dataset.py``): index ``i`` is
      drawn uniformly from ``[floor(b_i), floor(b_{i+1})]`` when the two differ, else it is ``floor(b_i)``; the last
      index is uniform in ``[floor(b_{T-1}), L-1]``. Exactly T non-decreasing indices: a video shorter than T is
      stretched with repeats, a longer one is covered stratum by stratum.
    - ``"acmnet_random"`` (ACM-Net's ``random_sample``, ispc-lab/ACM-Net ``dataset/dataset_class.py``): for
      ``L < T``, T indices drawn uniformly **with replacement** from ``[0, L)`` and sorted (so some snippets are
      missed and others repeated many times); for ``L = T``, the identity; for ``L > T``, index ``i < T-1`` is
      uniform in ``[floor(b_i), floor(b_{i+1})]`` (both ends included, so neighbouring strata share their edge) and
      the last index is uniform in ``[idx_{T-2}, L-1]``, starting from the index already drawn before it. ``T = 1``
      (where ACM-Net raises) draws uniformly from ``[0, L-1]``.
    - ``"crop"`` (W-TALC's ``process_feat``, sujoyp/wtalc-pytorch ``utils.py``): for ``L > T``, a contiguous window of
      T snippets whose start is uniform in ``[0, L-T-1]`` (the last possible start is never drawn, as in W-TALC);
      otherwise all L snippets (W-TALC zero-pads them to T; :func:`~ftcl_plugin.data.collate_videos` pads a batch to
      its longest video, which is what W-TALC's batch trimming leaves).

    Test (deterministic):

    - ``"uniform"`` (CoLA's ``uniform_sampling``): all L snippets when ``L <= T``, else ``floor(i*L/T)``.
    - ``"acmnet_uniform"`` (ACM-Net's ``uniform_sample``): all L snippets when ``1 < L <= T``; otherwise
      ``floor(i * fl(L/T))`` with the ratio rounded to float64 first, which differs from ``floor(i*L/T)`` at some
      ``i`` when ``L/T`` is not exact; ``L = 1`` gives two copies of snippet 0.
    - ``"uniform_fixed"``: ``floor(i*L/T)`` for every L, so exactly T rows (a short video repeats snippets), the
      fixed-length test input of sum-pooling STPN.
    - ``"full"`` (or ``num_segments=None``): all L snippets.

    Args:
        length: L >= 1, the video's snippet count.
        num_segments: T >= 1, or None for full length.
        sampling: one of the names above.
        generator: the numpy Generator of the random samplers (required there).

    Shape:
        - output: (T,) for ``"random"``, ``"acmnet_random"`` and ``"uniform_fixed"``; (min(L, T),) for ``"crop"``
          and ``"uniform"``; as ``"uniform"`` for ``"acmnet_uniform"`` except (2,) at L = 1; (L,) for ``"full"``.

    Returns:
        int64 indices into the video's snippets, non-decreasing.

    Raises:
        ValueError: for L < 1, T < 1, an unknown ``sampling``, or a random sampler without a generator.

    Example:
        >>> sample_indices(10, 4, "uniform").tolist()
        [0, 2, 5, 7]
        >>> sample_indices(3, 5, "uniform").tolist(), sample_indices(3, 5, "uniform_fixed").tolist()
        ([0, 1, 2], [0, 0, 1, 1, 2])
        >>> sample_indices(1, 750, "acmnet_uniform").tolist()
        [0, 0]
        >>> import numpy as np
        >>> idx = sample_indices(3, 6, "random", np.random.default_rng(0))
        >>> len(idx), bool((np.diff(idx) >= 0).all())
        (6, True)
        >>> window = sample_indices(20, 8, "crop", np.random.default_rng(0))
        >>> len(window), bool((np.diff(window) == 1).all()), int(window[0]) <= 11
        (8, True, True)
    """
    check_number(length, "length", minimum=1, integer=True)
    check_choice(sampling, "sampling", SAMPLINGS)
    if num_segments is not None:
        check_number(num_segments, "num_segments", minimum=1, integer=True)
    if sampling == "full" or num_segments is None:
        return np.arange(length, dtype=np.int64)
    if sampling == "uniform":
        if length <= num_segments:
            return np.arange(length, dtype=np.int64)
        return (np.arange(num_segments, dtype=np.int64) * length) // num_segments
    if sampling == "acmnet_uniform":
        if 1 < length <= num_segments:
            return np.arange(length, dtype=np.int64)
        count = 2 if length == 1 else num_segments
        # The ratio is rounded before the product, as ACM-Net computes it; see the docstring.
        return np.floor(np.arange(count) * (length / count)).astype(np.int64)
    if sampling == "uniform_fixed":
        return (np.arange(num_segments, dtype=np.int64) * length) // num_segments
    if generator is None:
        raise ValueError(f"`generator` must be a numpy.random.Generator for sampling={sampling!r}, but got None.")
    if sampling == "crop":
        if length <= num_segments:
            return np.arange(length, dtype=np.int64)
        return int(generator.integers(0, length - num_segments)) + np.arange(num_segments, dtype=np.int64)
    if length == num_segments:
        return np.arange(length, dtype=np.int64)
    if sampling == "acmnet_random":
        return _acmnet_random(length, num_segments, generator)
    # Integer arithmetic for floor(i * L / T) avoids float edge effects at exact multiples.
    edges = (np.arange(num_segments + 1, dtype=np.int64) * length) // num_segments
    low, high = edges[:-1].copy(), edges[1:].copy()
    # Bins whose edges share a floor keep that snippet (repeats for short videos); the last index may run to L-1.
    high[:-1] = np.where(low[:-1] != high[:-1], high[:-1], low[:-1])
    high[-1] = length - 1
    high = np.minimum(high, length - 1)
    return low + (generator.random(num_segments) * (high - low + 1)).astype(np.int64).clip(0, high - low)


def _acmnet_random(length: int, num_segments: int, generator: np.random.Generator) -> np.ndarray:
    """ACM-Net's training sampler for ``L != T`` (see :func:`sample_indices`)."""
    if length < num_segments:
        return np.sort(generator.integers(0, length, size=num_segments)).astype(np.int64)
    # floor(i * L / T) in integers equals ACM-Net's int() of the float quotient: i*L/T is either an integer,
    # represented exactly, or at least 1/T away from one, far more than float64's rounding.
    edges = (np.arange(num_segments, dtype=np.int64) * length) // num_segments
    indices = np.empty(num_segments, dtype=np.int64)
    indices[:-1] = edges[:-1] + generator.integers(0, edges[1:] - edges[:-1] + 1)
    start = indices[-2] if num_segments > 1 else 0
    indices[-1] = generator.integers(start, length)
    return indices
