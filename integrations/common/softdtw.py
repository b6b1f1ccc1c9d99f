"""Soft-DTW (Cuturi and Blondel, ICML 2017) in FTCL's contrastive setting: the "DTW" row of the paper's Table 4.

The paper replaces its FSD and LCS recursions (Eq. 2 and 6) with a standard differentiable DTW and reports lower
mAP. :class:`SoftDTWContrast` does the same with the public FTCL building blocks (pair miner, action and background
selectors): both roles score a sequence pair by its length-normalised soft-DTW alignment cost on cosine distances.

- separation (FSD's role): for every same-class pair, the action-action similarity ``s = -dtw(U_a, U_b)`` must
  exceed both action-background similarities ``-dtw(U_a, V'_b)`` and ``-dtw(V'_a, U_b)``:
  ``softplus(s_UV' - s_UV) + softplus(s_U'V - s_UV)`` (FTCL's Eq. 4 with a smooth ranking loss);
- adaptation (LCS's role): for every mined pair, ``r = exp(-dtw(U_a, U_b))`` in (0, 1] is pushed by binary
  cross-entropy to 1 for a same-class pair and to 0 otherwise (FTCL's Eq. 7).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SoftDTWContrast", "SoftDTWTerms", "soft_dtw"]

_BIG = 1e10  # stands for +inf outside the DP's valid region; finite, so logsumexp keeps finite gradients


def soft_dtw(cost: Tensor, *, gamma: float = 0.1, lengths_a: Tensor | None = None,
             lengths_b: Tensor | None = None) -> Tensor:
    """Soft-DTW alignment cost, computed over anti-diagonals (one vectorised step per diagonal).

    ``R(i, j) = cost(i, j) + softmin_gamma(R(i-1, j-1), R(i-1, j), R(i, j-1))``, ``R(0, 0) = 0``, other borders
    ``+inf``, with ``softmin_gamma(x) = -gamma log sum exp(-x / gamma)``; the result is ``R(M_p, N_p)``.

    Args:
        cost: ``(P, M, N)`` pairwise costs.
        gamma: smoothing (> 0; smaller is closer to hard DTW).
        lengths_a: ``(P,)`` true lengths of the first sequences (default ``M``).
        lengths_b: ``(P,)`` true lengths of the second sequences (default ``N``).

    Returns:
        ``(P,)`` soft-DTW costs.

    Raises:
        ValueError: for a cost that is not 3-D or a non-positive ``gamma``.
    """
    if cost.dim() != 3:
        raise ValueError(f"`cost` must have shape (P, M, N), but got {tuple(cost.shape)}.")
    if not gamma > 0:
        raise ValueError(f"`gamma` must be > 0, but got {gamma}.")
    pairs, rows, cols = cost.shape
    device = cost.device
    lengths_a = torch.full((pairs,), rows, device=device) if lengths_a is None else lengths_a.to(device)
    lengths_b = torch.full((pairs,), cols, device=device) if lengths_b is None else lengths_b.to(device)
    # padded[p, i, j] = cost[p, i-1, j-1]; row/column 0 are the borders.
    padded = F.pad(cost, (1, 0, 1, 0))
    i = torch.arange(rows + 1, device=device)
    big = cost.new_full((pairs, rows + 1), _BIG)
    previous2 = torch.where(i == 0, 0.0, big)  # diagonal 0: R(0, 0) = 0
    previous1 = big  # diagonal 1: R(0, 1) = R(1, 0) = inf
    diagonals = [previous2, previous1]
    for d in range(2, rows + cols + 1):
        j = d - i
        valid = (i >= 1) & (j >= 1) & (j <= cols)
        cells = padded[:, i, j.clamp(0, cols)]
        shifted2 = F.pad(previous2, (1, 0), value=_BIG)[:, :-1]  # R(i-1, j-1)
        shifted1 = F.pad(previous1, (1, 0), value=_BIG)[:, :-1]  # R(i-1, j)
        stacked = torch.stack([shifted2, shifted1, previous1], dim=0)  # previous1 = R(i, j-1)
        softmin = -gamma * torch.logsumexp(-stacked / gamma, dim=0)
        current = torch.where(valid, cells + softmin, big)
        diagonals.append(current)
        previous2, previous1 = previous1, current
    final = torch.stack(diagonals, dim=1)  # (P, M+N+1, M+1)
    return final[torch.arange(pairs, device=device), lengths_a + lengths_b, lengths_a]


class SoftDTWTerms(NamedTuple):
    """The loss and its parts, with the same fields as ``ftcl_plugin.FTCLTerms``.

    Attributes:
        loss: weighted sum (scalar).
        fsd: the separation term (scalar).
        lcs: the adaptation term (scalar).
        num_positive_pairs: int64 scalar.
        num_negative_pairs: int64 scalar.
    """

    loss: Tensor
    fsd: Tensor
    lcs: Tensor
    num_positive_pairs: Tensor
    num_negative_pairs: Tensor


class SoftDTWContrast(nn.Module):
    """FTCL's two contrastive roles with a standard soft-DTW in place of FSD and LCS (Table 4's "DTW" row).

    Args:
        feature_dim: ``E`` of the embedding (kept for a drop-in signature; no projection heads are learned).
        k: snippets selected per video for both roles (30, the paper's J on THUMOS14).
        gamma: soft-DTW smoothing on cosine distances in [0, 2] (0.1, the paper's 1/10 temperature).
        separation_weight: weight of the separation term.
        adaptation_weight: weight of the adaptation term.

    Shape:
        features ``(B, T, E)``, attention ``(B, T)``, labels ``(B, C)``, lengths ``(B,)`` -> scalar.
    """

    def __init__(self, feature_dim: int, *, k: int = 30, gamma: float = 0.1, separation_weight: float = 1.0,
                 adaptation_weight: float = 1.0) -> None:
        super().__init__()
        from ftcl_plugin import ActionSelector, BackgroundSelector, PairMiner

        self.feature_dim = int(feature_dim)
        self.gamma = float(gamma)
        self.separation_weight, self.adaptation_weight = float(separation_weight), float(adaptation_weight)
        self.miner = PairMiner()
        self.action = ActionSelector(k)
        self.background = BackgroundSelector(k)

    def _similarity(self, first: Tensor, second: Tensor, lengths_a: Tensor, lengths_b: Tensor) -> Tensor:
        """Minus the soft-DTW cost on cosine distances, divided by the longer length (scale-free in k)."""
        cost = 1 - F.cosine_similarity(first[:, :, None], second[:, None], dim=-1, eps=1e-8)
        dtw = soft_dtw(cost, gamma=self.gamma, lengths_a=lengths_a, lengths_b=lengths_b)
        return -dtw / torch.maximum(lengths_a, lengths_b).to(dtw.dtype)

    def forward_terms(self, features: Tensor, attention: Tensor, labels: Tensor, *,
                      lengths: Tensor | None = None) -> SoftDTWTerms:
        """The loss and its parts.

        Args:
            features: ``(B, T, E)`` snippet embedding.
            attention: ``(B, T)`` action attention.
            labels: ``(B, C)`` multi-hot labels.
            lengths: ``(B,)`` true lengths of a padded batch.

        Returns:
            :class:`SoftDTWTerms`.
        """
        pairs = self.miner(labels)
        action = self.action(features, attention, lengths=lengths)
        background = self.background(features, attention, lengths=lengths)
        a, b, positive = pairs.index_a, pairs.index_b, pairs.is_positive
        zero = features.sum() * 0  # keeps the graph connected when a batch has no pairs
        num_pos = positive.sum().to(torch.int64)
        num_neg = (~positive).sum().to(torch.int64)
        if a.numel() == 0:
            return SoftDTWTerms(zero, zero, zero, num_pos, num_neg)
        act_a, act_b = action.features[a], action.features[b]
        len_a, len_b = action.lengths[a], action.lengths[b]
        s_uv = self._similarity(act_a, act_b, len_a, len_b)
        r = s_uv.exp().clamp(1e-6, 1 - 1e-6)  # exp(-normalised dtw) in (0, 1]
        adaptation = F.binary_cross_entropy(r, positive.to(r.dtype))
        if bool(positive.any()):
            pa, pb = a[positive], b[positive]
            s_pos = s_uv[positive]
            s_uv_bg = self._similarity(action.features[pa], background.features[pb], action.lengths[pa],
                                       background.lengths[pb])
            s_bg_uv = self._similarity(background.features[pa], action.features[pb], background.lengths[pa],
                                       action.lengths[pb])
            separation = (F.softplus(s_uv_bg - s_pos) + F.softplus(s_bg_uv - s_pos)).mean()
        else:
            separation = zero
        loss = self.separation_weight * separation + self.adaptation_weight * adaptation
        return SoftDTWTerms(loss, separation, adaptation, num_pos, num_neg)

    def forward(self, features: Tensor, attention: Tensor, labels: Tensor, *, lengths: Tensor | None = None) -> Tensor:
        """The scalar loss (see :meth:`forward_terms`).

        Args:
            features: ``(B, T, E)``.
            attention: ``(B, T)``.
            labels: ``(B, C)``.
            lengths: ``(B,)`` or ``None``.

        Returns:
            The scalar loss.
        """
        return self.forward_terms(features, attention, labels, lengths=lengths).loss
