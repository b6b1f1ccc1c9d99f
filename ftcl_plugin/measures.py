"""Sequence similarities the two losses can use in place of their own (the paper's Tables 3 and 4).

FTCL gives each role its own measure: FSD (with learned residual projections) separates action from background
in :class:`~ftcl_plugin.FSDLoss`, the LCS length adapts classification to localization in
:class:`~ftcl_plugin.LCSLoss`. The paper's ablations swap them: "both-FSD" and "both-LCS" use one measure for both
roles (Table 3), "DTW" a standard differentiable DTW for both (Table 4). Each measure here maps the cosine
similarities of the snippets of P sequence pairs to one score per pair, on the losses' scale:

- :class:`FSDSimilarity`: the FSD recursion (Eq. 2) on the cosines themselves, ``mu = c``, ``g = h = c - 1`` (the
  paper's penalty), no learned projections, per snippet of path (divided by the mean length).
- :class:`LCSSimilarity`: the LCS length (Eq. 6) divided by the shorter length, in [0, 1].
- :class:`SoftDTWSimilarity`: ``exp(-soft_dtw(1 - c) / max(M, N))`` in (0, 1] (Cuturi and Blondel, ICML 2017).

Pass one as ``similarity=`` to either loss; the mining, selection, reduction and everything the facade adds
(schedule, cap, ``last_terms``) stay the same.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_flag, check_gamma, check_number
from .functional import fsd_similarity, lcs_length, soft_dtw

__all__ = ["FSDSimilarity", "LCSSimilarity", "SoftDTWSimilarity", "calibrated_threshold"]


def _sizes(similarity: Tensor, lengths_a: Tensor | None, lengths_b: Tensor | None) -> tuple[Tensor, Tensor]:
    rows = similarity.new_full((similarity.shape[0],), similarity.shape[1]) if lengths_a is None else lengths_a
    cols = similarity.new_full((similarity.shape[0],), similarity.shape[2]) if lengths_b is None else lengths_b
    return rows.to(similarity.dtype), cols.to(similarity.dtype)


def calibrated_threshold(similarity: Tensor, threshold: float, fraction: float | None, lengths_a: Tensor | None,
                         lengths_b: Tensor | None) -> Tensor | float:
    """``threshold``, lowered for this batch so that at least ``fraction`` of its valid cells reach it.

    The result is the smaller of ``threshold`` and the largest value that ``ceil(fraction * n)`` of the ``n``
    valid cells (padding excluded) reach; it is found by sorting (padding sorts last as ``-inf``), so the number
    of valid cells is never read on the host. ``fraction`` ``None`` or 0 returns ``threshold`` itself.

    Args:
        similarity: (P, M, N) similarities (detached here: the threshold gets no gradient).
        threshold: The fixed threshold ``tau``.
        fraction: The least fraction of cells that must match, in [0, 1].
        lengths_a: (P,) true lengths of the rows, or ``None``.
        lengths_b: (P,) true lengths of the columns, or ``None``.

    Returns:
        ``threshold`` (a float) or a 0-dim tensor of the similarity's dtype and device.
    """
    if not fraction:
        return threshold
    values = similarity.detach()
    if lengths_a is not None or lengths_b is not None:
        rows = torch.arange(values.shape[1], device=values.device)
        cols = torch.arange(values.shape[2], device=values.device)
        inside = torch.ones_like(values, dtype=torch.bool)
        if lengths_a is not None:
            inside &= (rows[None, :] < lengths_a[:, None])[:, :, None]
        if lengths_b is not None:
            inside &= (cols[None, :] < lengths_b[:, None])[:, None, :]
        values = values.masked_fill(~inside, float("-inf"))
        count = inside.sum()
    else:
        count = torch.tensor(values.numel(), device=values.device)
    ranked = values.flatten().sort(descending=True).values
    needed = (count.double() * fraction).ceil().long().clamp(min=1)
    quantile = ranked.gather(0, (needed - 1).view(1)).squeeze(0)
    return quantile.clamp(max=threshold)


class FSDSimilarity:
    """The FSD recursion on raw cosines, per snippet of path: ``S(M, N) / ((M + N) / 2)``.

    ``mu = c`` and ``g = h = c - 1`` (the paper's insert/delete penalty), smooth max of temperature ``gamma``.
    Bounded like :class:`~ftcl_plugin.FSDLoss` with ``length_normalized=True``: about [-1, 2.2] for square
    inputs.

    Args:
        gamma: Smooth-max temperature: 0 (hard max) or in [1e-4, 1e4] (0.1 is the paper's gamma = 10).

    Example:
        >>> import torch
        >>> FSDSimilarity(gamma=0.0)(torch.eye(3)[None])   # the diagonal matches: 3 cells of 1 over 3
        tensor([1.])
    """

    def __init__(self, gamma: float = 0.1) -> None:
        check_gamma(gamma)
        self.gamma = gamma

    def __call__(self, similarity: Tensor, lengths_a: Tensor | None = None,
                 lengths_b: Tensor | None = None) -> Tensor:
        """Score (P, M, N) cosines: (P,)."""
        rows, cols = _sizes(similarity, lengths_a, lengths_b)
        value = fsd_similarity(similarity, similarity - 1, gamma=self.gamma, lengths_a=lengths_a, lengths_b=lengths_b)
        return value / ((rows + cols) / 2)

    def __repr__(self) -> str:
        return f"FSDSimilarity(gamma={self.gamma})"


class LCSSimilarity:
    """The LCS length (Eq. 6) over the shorter length: the share of snippets matched, weighted by similarity.

    Args:
        threshold: Match threshold ``tau`` in [-1, 1] (0.92, paper Sec. 4.1).
        strict: Match on ``c > tau`` instead of ``c >= tau``.
        min_match_fraction: Lower ``tau`` for a batch in which fewer than this fraction of the cells reach it
            (see :func:`calibrated_threshold`); ``None`` keeps ``tau``.

    Example:
        >>> import torch
        >>> LCSSimilarity()(torch.tensor([[[0.95, 0.10], [0.20, 0.93]]]))   # (0.95 + 0.93) / 2
        tensor([0.9400])
    """

    def __init__(self, threshold: float = 0.92, *, strict: bool = False,
                 min_match_fraction: float | None = None) -> None:
        check_number(threshold, "threshold", minimum=-1.0, maximum=1.0)
        check_flag(strict, "strict")
        if min_match_fraction is not None:
            check_number(min_match_fraction, "min_match_fraction", minimum=0.0, maximum=1.0)
        self.threshold, self.strict, self.min_match_fraction = threshold, strict, min_match_fraction

    def __call__(self, similarity: Tensor, lengths_a: Tensor | None = None,
                 lengths_b: Tensor | None = None) -> Tensor:
        """Score (P, M, N) cosines: (P,)."""
        rows, cols = _sizes(similarity, lengths_a, lengths_b)
        threshold = calibrated_threshold(similarity, self.threshold, self.min_match_fraction, lengths_a, lengths_b)
        length = lcs_length(similarity, threshold=threshold, strict=self.strict, lengths_a=lengths_a,
                            lengths_b=lengths_b)
        return length / rows.minimum(cols).clamp(min=1)

    def __repr__(self) -> str:
        return (f"LCSSimilarity(threshold={self.threshold}, strict={self.strict}, "
                f"min_match_fraction={self.min_match_fraction})")


class SoftDTWSimilarity:
    """``exp(-soft_dtw(1 - c) / max(M, N))``: one minus-cost per step of the soft-DTW alignment, in (0, 1].

    Args:
        gamma: Soft-min temperature, ``> 0``, on cosine distances in [0, 2] (0.1).

    Example:
        >>> import torch
        >>> score = SoftDTWSimilarity(gamma=0.01)(torch.eye(2)[None])   # the diagonal costs 0
        >>> bool(score > 0.98)
        True
    """

    def __init__(self, gamma: float = 0.1) -> None:
        check_number(gamma, "gamma", minimum=0.0, strict_minimum=True)
        self.gamma = gamma

    def __call__(self, similarity: Tensor, lengths_a: Tensor | None = None,
                 lengths_b: Tensor | None = None) -> Tensor:
        """Score (P, M, N) cosines: (P,)."""
        rows, cols = _sizes(similarity, lengths_a, lengths_b)
        cost = soft_dtw(1 - similarity, gamma=self.gamma, lengths_a=lengths_a, lengths_b=lengths_b)
        return (-cost / rows.maximum(cols)).exp()

    def __repr__(self) -> str:
        return f"SoftDTWSimilarity(gamma={self.gamma})"
