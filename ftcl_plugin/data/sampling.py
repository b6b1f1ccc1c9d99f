"""Temporal samplers of the baselines: stratified random for training, uniform or full length for testing."""

from __future__ import annotations

from typing import Literal

import numpy as np

from .._checks import check_choice, check_number

Sampling = Literal["random", "uniform", "full"]
SAMPLINGS = ("random", "uniform", "full")


def sample_indices(length: int, num_segments: int | None, sampling: Sampling,
                   generator: np.random.Generator | None = None) -> np.ndarray:
    """Snippet indices that turn a video of ``length`` snippets into the network's input.

    - ``"random"`` (stratified random, CoLA/STPN's training sampler): bin edges ``b_i = i*L/T``; index ``i`` is
      drawn uniformly from ``[floor(b_i), floor(b_{i+1})]`` when the two differ, else it is ``floor(b_i)``; the
      last index is uniform in ``[floor(b_{T-1}), L-1]``. Always exactly T non-decreasing indices, so a video
      shorter than T is stretched with repeats and a longer one is covered stratum by stratum.
    - ``"uniform"`` (the test sampler): all L snippets when ``L <= T``, else ``floor(i*L/T)``. Deterministic.
    - ``"full"`` (or ``num_segments=None``): all L snippets.

    Args:
        length: L >= 1, the video's snippet count.
        num_segments: T >= 1, or None for full length.
        sampling: ``"random"``, ``"uniform"`` or ``"full"``.
        generator: the numpy Generator for ``"random"`` (required there).

    Shape:
        - output: (T,) for ``"random"``, (min(L, T),) for ``"uniform"``, (L,) for ``"full"``.

    Returns:
        int64 indices into the video's snippets.

    Raises:
        ValueError: for L < 1, T < 1, an unknown ``sampling``, or ``"random"`` without a generator.

    Example:
        >>> sample_indices(10, 4, "uniform").tolist()
        [0, 2, 5, 7]
        >>> sample_indices(3, 5, "uniform").tolist()
        [0, 1, 2]
        >>> import numpy as np
        >>> idx = sample_indices(3, 6, "random", np.random.default_rng(0))
        >>> len(idx), bool((np.diff(idx) >= 0).all())
        (6, True)
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
    if generator is None:
        raise ValueError("`generator` must be a numpy.random.Generator for sampling='random', but got None.")
    if length == num_segments:
        return np.arange(length, dtype=np.int64)
    # Integer arithmetic for floor(i * L / T) avoids float edge effects at exact multiples.
    edges = (np.arange(num_segments + 1, dtype=np.int64) * length) // num_segments
    low, high = edges[:-1].copy(), edges[1:].copy()
    # Bins whose edges share a floor keep that snippet (repeats for short videos); the last index may run to L-1.
    high[:-1] = np.where(low[:-1] != high[:-1], high[:-1], low[:-1])
    high[-1] = length - 1
    high = np.minimum(high, length - 1)
    return low + (generator.random(num_segments) * (high - low + 1)).astype(np.int64).clip(0, high - low)
