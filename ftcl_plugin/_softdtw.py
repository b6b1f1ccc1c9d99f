"""Soft-DTW (Cuturi and Blondel, ICML 2017) over anti-diagonals, differentiated by plain autograd.

Only the baselines' comparison needs it (the paper's Table 4 replaces FSD and LCS by a standard differentiable
DTW), so it trades the analytic backward of :mod:`._dp` for a short, obviously correct implementation: one
vectorised step per anti-diagonal, autograd through the stacked diagonals.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Stands for +inf outside the DP's valid region; finite, so logsumexp keeps finite gradients.
_BIG = 1e10


def soft_dtw(cost: Tensor, gamma: float, lengths_a: Tensor | None, lengths_b: Tensor | None) -> Tensor:
    """``R(M_p, N_p)`` of ``R(i, j) = cost(i, j) + softmin_gamma(R(i-1, j-1), R(i-1, j), R(i, j-1))`` per pair.

    ``R(0, 0) = 0``, the other borders ``+inf``, ``softmin_gamma(x) = -gamma log sum exp(-x / gamma)``.
    """
    pairs, rows, cols = cost.shape
    device = cost.device
    lengths_a = torch.full((pairs,), rows, device=device) if lengths_a is None else lengths_a.to(device)
    lengths_b = torch.full((pairs,), cols, device=device) if lengths_b is None else lengths_b.to(device)
    # padded[p, i, j] = cost[p, i-1, j-1]; row and column 0 are the borders
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
        stacked = torch.stack([shifted2, shifted1, previous1], dim=0)  # previous1 holds R(i, j-1)
        current = torch.where(valid, cells - gamma * torch.logsumexp(-stacked / gamma, dim=0), big)
        diagonals.append(current)
        previous2, previous1 = previous1, current
    final = torch.stack(diagonals, dim=1)  # (P, M + N + 1, M + 1)
    return final[torch.arange(pairs, device=device), lengths_a + lengths_b, lengths_a]
