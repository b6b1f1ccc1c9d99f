"""Private slow reference versions of the DP kernels, used by the tests and ``benchmarks/bench_dp.py``.

* ``fsd_loop`` / ``lcs_loop``: the recursions written cell by cell, per pair, in float64, differentiated
  by plain autograd. They are the ground truth the fast kernels in ``_dp.py`` are tested against, with
  the same tie rules written out explicitly (FSD hard max: match, then insert, then delete; LCS: up), the
  same smooth LCS (an unmatched cell takes ``gamma * log((exp(up / gamma) + exp(left / gamma)) / 2)``) and
  the same NaN rule (a NaN anywhere in a pair's block makes its LCS length NaN).
* ``fsd_wavefront_autograd`` / ``lcs_wavefront_autograd``: the same anti-diagonal wavefront as ``_dp``
  (float64 accumulation) but differentiated by plain autograd instead of the analytic backward; the
  benchmark's "plain autograd" column. Inputs are pre-sorted into diagonal order with one gather and
  split into per-diagonal tensors, so autograd stays linear in the table size (slicing one big tensor
  per step would make every backward step allocate the whole table).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _sizes(p: int, m: int, n: int, lengths_a: Tensor | None, lengths_b: Tensor | None) -> list[tuple[int, int]]:
    rows = [m] * p if lengths_a is None else [int(v) for v in lengths_a.tolist()]
    cols = [n] * p if lengths_b is None else [int(v) for v in lengths_b.tolist()]
    return list(zip(rows, cols))


def _hard_max3(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    if a >= b and a >= c:
        return a
    return b if b >= c else c


def fsd_loop(match: Tensor, insert: Tensor, delete: Tensor | None = None, gamma: float = 0.1,
             lengths_a: Tensor | None = None, lengths_b: Tensor | None = None) -> Tensor:
    """Eq. 2 per pair and per cell in float64 (result in float64, differentiable by autograd)."""
    delete = insert if delete is None else delete
    p, m, n = match.shape
    scores = []
    for k, (rows, cols) in enumerate(_sizes(p, m, n, lengths_a, lengths_b)):
        zero = match.new_zeros((), dtype=torch.float64)
        table = [[zero] * (cols + 1) for _ in range(rows + 1)]
        for i in range(1, rows + 1):
            for j in range(1, cols + 1):
                mu = match[k, i - 1, j - 1].double()
                g = insert[k, i - 1, j - 1].double()
                h = delete[k, i - 1, j - 1].double()
                options = (table[i - 1][j - 1], g + table[i - 1][j], h + table[i][j - 1])
                if gamma > 0:
                    best = gamma * torch.logsumexp(torch.stack(options) / gamma, dim=0)
                else:
                    best = _hard_max3(*options)
                table[i][j] = mu + best
        scores.append(table[rows][cols])
    return torch.stack(scores) if scores else match.new_zeros(0, dtype=torch.float64)


def _lcs_table_loop(c: Tensor, hits: Tensor, gamma: float) -> list[list[Tensor]]:
    rows, cols = c.shape
    zero = c.new_zeros((), dtype=torch.float64)
    table = [[zero] * (cols + 1) for _ in range(rows + 1)]
    for i in range(1, rows + 1):
        for j in range(1, cols + 1):
            up, left = table[i - 1][j], table[i][j - 1]
            if bool(hits[i - 1, j - 1]):
                table[i][j] = table[i - 1][j - 1] + c[i - 1, j - 1].double()
            elif gamma > 0:
                table[i][j] = gamma * (torch.logaddexp(up / gamma, left / gamma) - math.log(2.0))
            else:
                table[i][j] = up if up >= left else left
    return table


def _hit_matrix(c: Tensor, threshold: float, strict: bool) -> Tensor:
    return c > threshold if strict else c >= threshold


def lcs_loop(similarity: Tensor, threshold: float = 0.92, strict: bool = False, gamma: float = 0.0,
             lengths_a: Tensor | None = None, lengths_b: Tensor | None = None) -> Tensor:
    """Eq. 6 per pair and per cell in float64 (threshold compared in the input dtype)."""
    p, m, n = similarity.shape
    lengths = []
    for k, (rows, cols) in enumerate(_sizes(p, m, n, lengths_a, lengths_b)):
        c = similarity[k, :rows, :cols]
        table = _lcs_table_loop(c, _hit_matrix(c, threshold, strict), gamma)
        lengths.append(table[rows][cols] + (math.nan if bool(c.isnan().any()) else 0.0))
    return torch.stack(lengths) if lengths else similarity.new_zeros(0, dtype=torch.float64)


def lcs_path_loop(similarity: Tensor, threshold: float = 0.92, strict: bool = False,
                  lengths_a: Tensor | None = None, lengths_b: Tensor | None = None) -> list[list[tuple[int, int]]]:
    """Traceback of the hard LCS per pair: matched 0-based (i, j) cells in increasing order."""
    p, m, n = similarity.shape
    paths = []
    for k, (rows, cols) in enumerate(_sizes(p, m, n, lengths_a, lengths_b)):
        c = similarity[k, :rows, :cols].detach()
        hits = _hit_matrix(c, threshold, strict)
        table = _lcs_table_loop(c, hits, 0.0)
        i, j, cells = rows, cols, []
        while i > 0 and j > 0:
            if bool(hits[i - 1, j - 1]):
                cells.append((i - 1, j - 1))
                i, j = i - 1, j - 1
            elif table[i - 1][j] >= table[i][j - 1]:
                i -= 1
            else:
                j -= 1
        paths.append(cells[::-1])
    return paths


def _diagonal_order(m: int, n: int, device: torch.device) -> tuple[Tensor, list[int], list[int]]:
    """Flat (i-1)*N + (j-1) indices of the cells sorted by diagonal, the diagonal sizes and first rows."""
    order, sizes, firsts = [], [], []
    for d in range(2, m + n + 1):
        lo, hi = max(1, d - n), min(m, d - 1)
        order.extend((i - 1) * n + (d - i - 1) for i in range(lo, hi + 1))
        sizes.append(hi - lo + 1)
        firsts.append(lo)
    return torch.tensor(order, dtype=torch.int64, device=device), sizes, firsts


def _wavefront(inputs: list[Tensor], m: int, n: int, cell) -> Tensor:
    """Shared autograd wavefront: ``cell(diag, up, left, *chunks)`` computes one diagonal's interior.

    Diagonal d is kept with its boundary cells, i from max(0, d - N) to min(M, d), so the neighbours of
    the interior cells are plain slices of the two previous diagonal tensors.
    """
    p = inputs[0].shape[0]
    device = inputs[0].device
    order, sizes, firsts = _diagonal_order(m, n, device)
    chunks = [x.reshape(p, m * n).index_select(1, order).split(sizes, dim=1) for x in inputs]
    zero = torch.zeros(p, 1, dtype=torch.float64, device=device)
    diagonals = [zero, torch.zeros(p, 2 if m >= 1 and n >= 1 else 1, dtype=torch.float64, device=device)]
    starts = [0, max(0, 1 - n)]  # first row index stored in each diagonal tensor
    for step, d in enumerate(range(2, m + n + 1)):
        lo, count = firsts[step], sizes[step]
        prev1, prev2 = diagonals[-1], diagonals[-2]
        up = prev1[:, lo - 1 - starts[-1]: lo - 1 - starts[-1] + count]
        left = prev1[:, lo - starts[-1]: lo - starts[-1] + count]
        diag = prev2[:, lo - 1 - starts[-2]: lo - 1 - starts[-2] + count]
        interior = cell(diag, up, left, *(c[step] for c in chunks))
        parts = ([zero] if d <= n else []) + [interior] + ([zero] if d <= m else [])
        diagonals.append(torch.cat(parts, dim=1))
        starts.append(max(0, d - n))
    return diagonals[-1][:, -1] if m >= 1 and n >= 1 else torch.zeros(p, dtype=torch.float64, device=device)


def fsd_wavefront_autograd(match: Tensor, insert: Tensor, delete: Tensor | None = None,
                           gamma: float = 0.1) -> Tensor:
    """Eq. 2 on the anti-diagonal wavefront, float64, differentiated by plain autograd (no lengths).

    Same operations as ``_dp.fsd_forward``: the table holds S / gamma and the smooth max is a
    ``logaddexp`` chain.
    """
    p, m, n = match.shape
    inv = 1.0 / gamma if gamma > 0 else 1.0

    def cell(diag: Tensor, up: Tensor, left: Tensor, mu: Tensor, g: Tensor, h: Tensor | None = None) -> Tensor:
        h = g if h is None else h
        insert_option, delete_option = up + inv * g.double(), left + inv * h.double()
        if gamma > 0:
            best = torch.logaddexp(torch.logaddexp(diag, insert_option), delete_option)
        else:
            best = torch.maximum(torch.maximum(diag, insert_option), delete_option)
        return best + inv * mu.double()

    inputs = [match, insert] if delete is None else [match, insert, delete]
    return _wavefront(inputs, m, n, cell) * (gamma if gamma > 0 else 1.0)


def lcs_wavefront_autograd(similarity: Tensor, threshold: float = 0.92, strict: bool = False,
                           gamma: float = 0.0) -> Tensor:
    """Eq. 6 on the anti-diagonal wavefront, float64, differentiated by plain autograd (no lengths).

    Same operations as ``_dp.lcs_forward`` (table of R / gamma for gamma > 0).
    """
    p, m, n = similarity.shape
    inv = 1.0 / gamma if gamma > 0 else 1.0

    def cell(diag: Tensor, up: Tensor, left: Tensor, c: Tensor) -> Tensor:
        rest = torch.logaddexp(up, left) - math.log(2.0) if gamma > 0 else torch.maximum(up, left)
        return torch.where(_hit_matrix(c, threshold, strict), diag + inv * c.double(), rest)

    return _wavefront([similarity], m, n, cell) * (gamma if gamma > 0 else 1.0)
