"""Private differentiable DP kernels behind :mod:`ftcl_plugin.functional`.

Both recursions (FSD, Eq. 2; LCS, Eq. 6) run on an anti-diagonal wavefront: cell ``(i, j)`` with
``i + j = d`` depends only on diagonals ``d - 1`` and ``d - 2``, so one vectorised step per diagonal computes
a whole diagonal for all P pairs at once (O(M + N) Python steps, O(P M N) work and memory).

Layout: the padded (M+1) x (N+1) table of every pair is stored *diagonal-major* as one (P, cells) tensor:
diagonal d occupies the contiguous columns ``[offset_d, offset_d + size_d)`` (boundary cells included,
ordered by increasing i). The cells of a diagonal and their up / left / diagonal neighbours are then
contiguous column ranges: every step reads and writes plain blocks through ``narrow`` views (no gathers,
no cache-missing strided access, no per-step index tensors). Inputs are permuted into this layout once per
call (one ``index_copy_``) and gradients are permuted back once (one ``index_select``).

Numerics: the table is accumulated in float64 whatever the input dtype (in float32 the softmax weights
lose ~1e-4 relative at M = N = 750, where S reaches hundreds while gamma = 0.1). For gamma > 0 the table
holds ``S / gamma`` so that the smooth max is a bare ``logaddexp`` chain, with the 1/gamma folded into the
additions.

Backward: an analytic reverse wavefront. The adjoint ``E(i, j) = dS(M, N) / dS(i, j)`` of diagonal d is
complete once diagonals d+1 and d+2 have pushed into it, so only three diagonals of E are alive at a time
(rolling buffers); each is pushed to its three predecessors with the branch weights recomputed from the
saved table (softmax weights for gamma > 0, the argmax branch for gamma = 0). ``dS/d mu = E`` and the
gap gradients are E times the insert / delete weights. First-order gradients only.

No host reads: neither forward nor backward reads a tensor value on the host (no ``.item()``, ``.tolist()``
or data-dependent Python branch), with or without lengths, so on a GPU they never synchronise. Lengths are
clamped into [0, M] / [0, N] on the device, so a bad length that no check caught cannot index out of bounds.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

_ACC = torch.float64
# inputs with at most this many elements are copied into the DP layout as float64 (<= 8 MB per input)
_WIDEN_LIMIT = 2**20
_LN2 = math.log(2.0)
# padded backward: below this many elements the seeds of every diagonal are laid out densely (<= 8 MB)
_DENSE_SEEDS_LIMIT = 2**20


class _Grid:
    """Diagonal-major layout of the padded (M+1) x (N+1) tables of one (M, N) problem size."""

    def __init__(self, m: int, n: int, device: torch.device) -> None:
        self.m, self.n, self.cells, self.device = m, n, (m + 1) * (n + 1), device
        self.width = min(m, n) + 1  # the longest diagonal, boundary cells included
        first = [max(0, d - n) for d in range(m + n + 1)]  # smallest row index i stored on diagonal d
        offset = [0]
        for d in range(m + n + 1):
            offset.append(offset[-1] + min(m, d) - first[d] + 1)
        # per interior diagonal d (cells i = lo..hi), the column of its first cell and of the first cell's
        # up / left / diagonal neighbours, each as (global column, position within its own diagonal)
        self.steps: list[tuple[int, int, int, int, int, int, int, int, int, int]] = []
        for d in range(2, m + n + 1 if m and n else 0):
            lo, hi = max(1, d - n), min(m, d - 1)
            here, up, left, diag = lo - first[d], lo - 1 - first[d - 1], lo - first[d - 1], lo - 1 - first[d - 2]
            self.steps.append((d, hi - lo + 1,
                               offset[d] + here, offset[d - 1] + up, offset[d - 1] + left, offset[d - 2] + diag,
                               here, up, left, diag))
        self.offset = torch.tensor(offset[:-1], dtype=torch.int64, device=device)
        self.first = torch.tensor(first, dtype=torch.int64, device=device)
        self.columns = self._interior()

    def position(self, rows: Tensor, cols: Tensor) -> Tensor:
        """Column of cell ``(rows, cols)`` (broadcasting integer tensors) in the diagonal-major layout."""
        diagonal = rows + cols
        return self.offset[diagonal] + rows - self.first[diagonal]

    def local(self, rows: Tensor, cols: Tensor) -> Tensor:
        """Position of cell ``(rows, cols)`` within its own diagonal."""
        return rows - self.first[rows + cols]

    def _interior(self) -> Tensor:
        """(M*N,) columns of the cells (1..M, 1..N), in row-major order of the unpadded inputs."""
        rows = torch.arange(1, self.m + 1, device=self.device).view(-1, 1)
        cols = torch.arange(1, self.n + 1, device=self.device).view(1, -1)
        return self.position(rows, cols).reshape(-1)

    def skew(self, x: Tensor, widen: bool = False) -> Tensor:
        """(P, M, N) -> (P, cells). Boundary columns are left unset: no step reads them.

        With ``widen`` the copy is float64, which spares every step a mixed-dtype operation (about half
        the per-step cost at small sizes); large inputs keep their dtype to halve the saved memory.
        """
        p = x.shape[0]
        if widen:
            x = x.to(_ACC)
        out = x.new_empty(p, self.cells)
        out.index_copy_(1, self.columns, x.reshape(p, self.m * self.n))
        return out

    def unskew(self, table: Tensor) -> Tensor:
        """(P, cells) -> contiguous (P, M, N) of the interior cells, in the table's dtype."""
        return table.index_select(1, self.columns).view(table.shape[0], self.m, self.n)

    def corner(self, p: int, lengths_a: Tensor | None, lengths_b: Tensor | None) -> tuple[Tensor, Tensor]:
        """(P,) row and column indices of each pair's result cell ``(La, Lb)``, clamped into the table.

        The public entry points refuse lengths outside [1, M] whenever they read values (always on CPU); on
        other devices without ``validate_args`` the clamp keeps a bad length from indexing out of bounds.
        """
        rows = lengths_a if lengths_a is not None else torch.full((p,), self.m, device=self.device)
        cols = lengths_b if lengths_b is not None else torch.full((p,), self.n, device=self.device)
        return rows.to(torch.int64).clamp(0, self.m), cols.to(torch.int64).clamp(0, self.n)

    @functools.cached_property
    def row_col(self) -> tuple[Tensor, Tensor]:
        """(cells,) int32 row and column of every column of the layout, built once per size for the masks."""
        rows = torch.arange(self.m + 1, device=self.device).repeat_interleave(self.n + 1)
        cols = torch.arange(self.n + 1, device=self.device).repeat(self.m + 1)
        order = self.position(rows, cols)
        row_of = torch.empty_like(rows)
        col_of = torch.empty_like(cols)
        row_of[order] = rows
        col_of[order] = cols
        return row_of.to(torch.int32), col_of.to(torch.int32)

    def valid(self, p: int, lengths_a: Tensor | None, lengths_b: Tensor | None) -> Tensor | None:
        """(P, cells) bool mask of the cells inside each pair's true block, or None when unpadded."""
        if lengths_a is None and lengths_b is None:
            return None
        row_of, col_of = self.row_col
        if lengths_b is None:
            return row_of.view(1, -1) <= lengths_a.view(p, 1)
        mask = col_of.view(1, -1) <= lengths_b.view(p, 1)
        if lengths_a is not None:
            mask &= row_of.view(1, -1) <= lengths_a.view(p, 1)
        return mask


@functools.lru_cache(maxsize=32)
def _grid(m: int, n: int, device: torch.device) -> _Grid:
    """The (immutable) layout of one problem size, built once: training calls the kernels with few sizes."""
    return _Grid(m, n, device)


def _read_corner(table: Tensor, grid: _Grid, rows: Tensor, cols: Tensor, scale: float,
                 dtype: torch.dtype) -> Tensor:
    pairs = torch.arange(table.shape[0], device=table.device)
    return (table[pairs, grid.position(rows, cols)] * scale).to(dtype)


class _Adjoint:
    """Three rolling (P, width) float64 diagonals of the adjoint E: the current one and its two predecessors.

    The output gradient of pair p enters E at its result cell ``(rows[p], cols[p])``. Unpadded, every pair's
    result lies on the last diagonal. Padded pairs end on different diagonals, and reading which ones on the
    host would synchronise the device, so every diagonal receives a row of seeds that is zero except for the
    pairs ending there: for small problems a dense (steps, P, width) block that each recycled buffer is reset
    to instead of zero (no extra op per step), otherwise one ``index_add_`` of a (P,) row per step.
    """

    def __init__(self, grid: _Grid, p: int, grad: Tensor, rows: Tensor, cols: Tensor, padded: bool,
                 device: torch.device) -> None:
        values = grad.to(_ACC)
        # each pair's result cell as its position within its diagonal and as a flat index into a buffer
        local = grid.local(rows, cols)
        self.flat = torch.arange(p, device=device) * grid.width + local
        self.values, self.last = values, grid.m + grid.n
        self.per_step: tuple[Tensor, ...] | None = None
        self.dense: Tensor | None = None
        steps = len(grid.steps)
        if padded and steps:
            live = (rows > 0) & (cols > 0)  # a result on the boundary is the constant 0: no gradient
            # step k handles diagonal k + 2; each pair writes its own slot, so no two writes collide
            step = (rows + cols - 2).clamp(min=0)
            values = torch.where(live, values, torch.zeros_like(values))
            pairs = torch.arange(p, device=device)
            if steps * p * grid.width <= _DENSE_SEEDS_LIMIT:
                self.dense = torch.zeros(steps, p, grid.width, dtype=_ACC, device=device)
                self.dense[step, pairs, local] = values
            else:
                seeds = torch.zeros(steps, p, dtype=_ACC, device=device)
                seeds[step, pairs] = values
                self.per_step = seeds.unbind(0)
        # buffers[k] holds diagonal d - k while diagonal d is processed, starting from d = M + N
        self.buffers = [self._start(self.last - k, p, grid.width, device) for k in range(3)]

    def _start(self, d: int, p: int, width: int, device: torch.device) -> Tensor:
        if self.dense is not None and d >= 2:
            return self.dense[d - 2].clone()
        return torch.zeros(p, width, dtype=_ACC, device=device)

    def enter(self, d: int) -> tuple[Tensor, Tensor, Tensor]:
        """(E_d, E_{d-1}, E_{d-2}) with the output gradient injected where a pair's result lies on d."""
        current = self.buffers[0]
        if self.per_step is not None:
            current.view(-1).index_add_(0, self.flat, self.per_step[d - 2])
        elif self.dense is None and d == self.last:
            current.view(-1).index_add_(0, self.flat, self.values)
        return current, self.buffers[1], self.buffers[2]

    def leave(self, d: int) -> None:
        """Step to diagonal d - 1: E_d is final (already written out), its buffer is recycled for d - 3."""
        done = self.buffers[0]
        if self.dense is not None and d - 3 >= 2:
            done.copy_(self.dense[d - 5])
        else:
            done.zero_()
        self.buffers = [self.buffers[1], self.buffers[2], done]


# --------------------------------------------------------------------------------------------------
# FSD (Eq. 2)
# --------------------------------------------------------------------------------------------------


def fsd_forward(grid: _Grid, mu: Tensor, g: Tensor, h: Tensor, gamma: float) -> Tensor:
    """(P, cells) float64 table of S / gamma (of S for gamma = 0) from skewed inputs."""
    p = mu.shape[0]
    inv = 1.0 / gamma if gamma > 0 else 1.0
    smooth_max = torch.logaddexp if gamma > 0 else torch.maximum
    table = torch.zeros(p, grid.cells, dtype=_ACC, device=mu.device)
    # out-of-place steps on narrow() views: measured faster than preallocated out= buffers at every size
    for _, count, start, up, left, diag, *_ in grid.steps:
        insert = torch.add(table.narrow(1, up, count), g.narrow(1, start, count), alpha=inv)
        delete = torch.add(table.narrow(1, left, count), h.narrow(1, start, count), alpha=inv)
        best = smooth_max(smooth_max(table.narrow(1, diag, count), insert), delete)
        torch.add(best, mu.narrow(1, start, count), alpha=inv, out=table.narrow(1, start, count))
    return table


def fsd_backward(grid: _Grid, table: Tensor, mu: Tensor, g: Tensor, h: Tensor | None, grad: Tensor,
                 rows: Tensor, cols: Tensor, lengths_a: Tensor | None, lengths_b: Tensor | None, gamma: float,
                 dtype: torch.dtype, needs: tuple[bool, bool, bool]) -> list[Tensor | None]:
    """Reverse wavefront: gradients of ``sum_p grad_p * S_p`` w.r.t. (match, insert, delete), as needed.

    ``h=None`` means h = g, and then the delete flow is part of the ``insert`` gradient.
    """
    same_gap = h is None
    h = g if same_gap else h
    p, device = table.shape[0], table.device
    inv = 1.0 / gamma if gamma > 0 else 1.0
    padded = lengths_a is not None or lengths_b is not None
    adjoint = _Adjoint(grid, p, grad, rows, cols, padded, device)
    valid = grid.valid(p, lengths_a, lengths_b)
    grad_mu, grad_g, grad_h = (torch.empty(p, grid.cells, dtype=dtype, device=device) if need else None
                               for need in needs)
    for d, count, start, up, left, diag, here, up_at, left_at, diag_at in reversed(grid.steps):
        current, previous, before = adjoint.enter(d)
        e = current.narrow(1, here, count)
        match_option = table.narrow(1, diag, count)
        insert_option = torch.add(table.narrow(1, up, count), g.narrow(1, start, count), alpha=inv)
        delete_option = torch.add(table.narrow(1, left, count), h.narrow(1, start, count), alpha=inv)
        if gamma > 0:
            # softmax weights of the three options, from the options themselves: as fast as
            # exp(a_k - (S - mu) / gamma), which is NaN where mu = -inf makes S = -inf and loses digits to
            # cancellation when S / gamma is large
            flow = torch.softmax(torch.stack((match_option, insert_option, delete_option)), 0).mul_(e)
            if valid is not None:
                # padded cells carry zero adjoint, but 0 * exp(nan) would leak NaN/inf padding in
                flow.masked_fill_(~valid.narrow(1, start, count), 0.0)
            to_match, to_insert, to_delete = flow.unbind(0)
        else:
            # argmax branch; ties prefer match, then insert, then delete. Products with the exactly-zero
            # adjoint of padded cells stay 0 whatever the padding holds, so no mask is needed here.
            to_match = e * (match_option >= torch.maximum(insert_option, delete_option))
            rest = e - to_match
            to_insert = rest * (insert_option >= delete_option)
            to_delete = rest - to_insert
        before.narrow(1, diag_at, count).add_(to_match)
        previous.narrow(1, up_at, count).add_(to_insert)
        previous.narrow(1, left_at, count).add_(to_delete)
        if grad_mu is not None:
            grad_mu.narrow(1, start, count).copy_(e)
        if grad_g is not None:
            if same_gap:  # h = g: the delete flow also belongs to `insert`
                torch.add(to_insert, to_delete, out=grad_g.narrow(1, start, count))
            else:
                grad_g.narrow(1, start, count).copy_(to_insert)
        if grad_h is not None:
            grad_h.narrow(1, start, count).copy_(to_delete)
        adjoint.leave(d)
    # unskew one gradient at a time, dropping each skewed buffer as soon as it is copied out
    pending = [grad_mu, grad_g, grad_h]
    del grad_mu, grad_g, grad_h
    grads = []
    while pending:
        skewed = pending.pop(0)
        grads.append(None if skewed is None else grid.unskew(skewed))
        del skewed
    return grads


def _fsd_setup(match: Tensor, insert: Tensor, delete: Tensor | None, gamma: float,
               lengths_a: Tensor | None, lengths_b: Tensor | None) -> tuple:
    """Forward pass without autograd: (grid, table, mu, g, h or None, rows, cols)."""
    p, m, n = match.shape
    grid = _grid(m, n, match.device)
    widen = match.numel() <= _WIDEN_LIMIT
    mu = grid.skew(match, widen)
    g = grid.skew(insert, widen)
    h = None if delete is None else grid.skew(delete, widen)
    table = fsd_forward(grid, mu, g, g if h is None else h, gamma)
    rows, cols = grid.corner(p, lengths_a, lengths_b)
    return grid, table, mu, g, h, rows, cols


class _FSD(torch.autograd.Function):
    @staticmethod
    def forward(ctx, match: Tensor, insert: Tensor, delete: Tensor | None, gamma: float,
                lengths_a: Tensor | None, lengths_b: Tensor | None) -> Tensor:
        grid, table, mu, g, h, rows, cols = _fsd_setup(match, insert, delete, gamma, lengths_a, lengths_b)
        ctx.grid, ctx.gamma, ctx.dtype = grid, gamma, match.dtype
        ctx.save_for_backward(table, mu, g, h, rows, cols, lengths_a, lengths_b)
        return _read_corner(table, grid, rows, cols, gamma if gamma > 0 else 1.0, match.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        table, mu, g, h, rows, cols, lengths_a, lengths_b = ctx.saved_tensors
        needs = tuple(ctx.needs_input_grad[:3])
        grads = fsd_backward(ctx.grid, table, mu, g, h, grad, rows, cols, lengths_a, lengths_b, ctx.gamma,
                             ctx.dtype, needs)
        return (*grads, None, None, None)


def fsd_occupancy(match: Tensor, insert: Tensor, delete: Tensor | None, gamma: float,
                  lengths_a: Tensor | None, lengths_b: Tensor | None) -> Tensor:
    """dS / d match per pair (the expected alignment), without autograd (works in inference mode)."""
    with torch.no_grad():
        grid, table, mu, g, h, rows, cols = _fsd_setup(match, insert, delete, gamma, lengths_a, lengths_b)
        seed = torch.ones(match.shape[0], dtype=match.dtype, device=match.device)
        grads = fsd_backward(grid, table, mu, g, h, seed, rows, cols, lengths_a, lengths_b, gamma,
                             match.dtype, (True, False, False))
    return grads[0]


def fsd(match: Tensor, insert: Tensor, delete: Tensor | None, gamma: float,
        lengths_a: Tensor | None, lengths_b: Tensor | None) -> Tensor:
    """S(La, Lb) per pair of Eq. 2 (``delete=None`` means h = g); lengths ``None`` mean unpadded."""
    return _FSD.apply(match, insert, delete, gamma, lengths_a, lengths_b)


# --------------------------------------------------------------------------------------------------
# LCS (Eq. 6)
# --------------------------------------------------------------------------------------------------


def _lcs_inputs(grid: _Grid, similarity: Tensor, threshold: float | Tensor, strict: bool) -> tuple[Tensor, Tensor]:
    """Skewed similarity (float64 when small) and the skewed match mask, decided in the input dtype."""
    c = grid.skew(similarity)
    # compared in the input dtype, as the release compares float32 cosines with 0.92
    hits = c > threshold if strict else c >= threshold
    return (c.to(_ACC) if similarity.numel() <= _WIDEN_LIMIT else c), hits


def _log_mean_exp(a: Tensor, b: Tensor) -> Tensor:
    """``log((exp(a) + exp(b)) / 2)``: between the mean and the max of a and b, equal to both on a tie."""
    return torch.logaddexp(a, b).sub_(_LN2)


def lcs_forward(grid: _Grid, c: Tensor, hits: Tensor, gamma: float) -> Tensor:
    """(P, cells) float64 table of R / gamma (of R for gamma = 0) from the skewed similarity and matches.

    For gamma > 0 an unmatched cell takes the log-mean-exp of up and left, not their logsumexp, which would
    add up to gamma * ln 2 at every unmatched cell and give a pair without any match a length of about
    gamma * ln(#paths).
    """
    p = c.shape[0]
    inv = 1.0 / gamma if gamma > 0 else 1.0
    table = torch.zeros(p, grid.cells, dtype=_ACC, device=c.device)
    smooth_max = _log_mean_exp if gamma > 0 else torch.maximum
    for _, count, start, up, left, diag, *_ in grid.steps:
        rest = smooth_max(table.narrow(1, up, count), table.narrow(1, left, count))
        matched = torch.add(table.narrow(1, diag, count), c.narrow(1, start, count), alpha=inv)
        torch.where(hits.narrow(1, start, count), matched, rest, out=table.narrow(1, start, count))
    return table


def _has_nan(similarity: Tensor, rows: Tensor, cols: Tensor, padded: bool) -> Tensor:
    """(P,) bool: whether the pair's true block ``[:rows[p], :cols[p]]`` holds a NaN (no host read)."""
    p, m, n = similarity.shape
    if m == 0 or n == 0:
        return torch.zeros(p, dtype=torch.bool, device=similarity.device)
    if not padded:
        # max propagates NaN (and only NaN turns it NaN): a third of the cost of isnan(...).any()
        return torch.isnan(similarity.amax(dim=(1, 2)))
    # padding may hold NaN that must not count: mask the columns, reduce the rows, then mask the rows
    nan = torch.isnan(similarity)
    nan &= (torch.arange(n, device=similarity.device)[None, :] < cols[:, None])[:, None, :]
    return (nan.any(2) & (torch.arange(m, device=similarity.device)[None, :] < rows[:, None])).any(1)


class _LCS(torch.autograd.Function):
    @staticmethod
    def forward(ctx, similarity: Tensor, threshold: float, strict: bool, gamma: float,
                lengths_a: Tensor | None, lengths_b: Tensor | None) -> Tensor:
        p, m, n = similarity.shape
        grid = _grid(m, n, similarity.device)
        c, hits = _lcs_inputs(grid, similarity, threshold, strict)
        table = lcs_forward(grid, c, hits, gamma)
        rows, cols = grid.corner(p, lengths_a, lengths_b)
        ctx.grid, ctx.gamma, ctx.dtype = grid, gamma, similarity.dtype
        ctx.padded = lengths_a is not None or lengths_b is not None
        ctx.save_for_backward(table, hits, rows, cols, lengths_a, lengths_b)
        value = _read_corner(table, grid, rows, cols, gamma if gamma > 0 else 1.0, similarity.dtype)
        # NaN fails every threshold test, so the recursion alone would score a NaN cell as "no match" and
        # return a finite length: a NaN anywhere in a pair's block makes that pair's length NaN instead
        return value.masked_fill_(_has_nan(similarity, rows, cols, ctx.padded), math.nan)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        table, hits, rows, cols, lengths_a, lengths_b = ctx.saved_tensors
        grid, gamma, dtype = ctx.grid, ctx.gamma, ctx.dtype
        p, device = table.shape[0], table.device
        adjoint = _Adjoint(grid, p, grad, rows, cols, ctx.padded, device)
        valid = grid.valid(p, lengths_a, lengths_b)
        grad_c = torch.empty(p, grid.cells, dtype=dtype, device=device)
        for d, count, start, up, left, _diag, here, up_at, left_at, diag_at in reversed(grid.steps):
            current, previous, before = adjoint.enter(d)
            e = current.narrow(1, here, count)
            # a matched cell sends its whole adjoint diagonally, and dR(i, j) / dc(i, j) = 1
            matched = e * hits.narrow(1, start, count)
            rest = e - matched
            up_value, left_value = table.narrow(1, up, count), table.narrow(1, left, count)
            if gamma > 0:
                # d logmeanexp(u, l) / du = exp(u) / (exp(u) + exp(l)) = sigmoid(u - l)
                to_up = torch.sigmoid(up_value - left_value).mul_(rest)
                if valid is not None:
                    # 0 * sigmoid(nan) would leak NaN from inf padding into the true block
                    to_up.masked_fill_(~valid.narrow(1, start, count), 0.0)
            else:
                # ties go up, to R(i-1, j), as in the release
                to_up = rest * (up_value >= left_value)
            grad_c.narrow(1, start, count).copy_(matched)
            before.narrow(1, diag_at, count).add_(matched)
            previous.narrow(1, up_at, count).add_(to_up)
            previous.narrow(1, left_at, count).add_(rest.sub_(to_up))
            adjoint.leave(d)
        return grid.unskew(grad_c), None, None, None, None, None


def lcs(similarity: Tensor, threshold: float | Tensor, strict: bool, gamma: float,
        lengths_a: Tensor | None, lengths_b: Tensor | None) -> Tensor:
    """R(La, Lb) per pair of Eq. 6; lengths ``None`` mean unpadded."""
    return _LCS.apply(similarity, threshold, strict, gamma, lengths_a, lengths_b)


def lcs_path(similarity: Tensor, threshold: float, strict: bool,
             lengths_a: Tensor | None, lengths_b: Tensor | None) -> list[Tensor]:
    """Matched (i, j) cells (0-based, increasing) of the hard LCS traceback, per pair.

    The traceback runs for all pairs at once, one move per step (at most M + N steps), following the
    branch the forward took: matched cells go diagonal, otherwise up when ``R(i-1, j) >= R(i, j-1)``.
    """
    sim = similarity.detach()
    p, m, n = sim.shape
    device = sim.device
    if m == 0 or n == 0:
        return [torch.zeros(0, 2, dtype=torch.int64, device=device) for _ in range(p)]
    grid = _grid(m, n, device)
    c, hits = _lcs_inputs(grid, sim, threshold, strict)
    table = lcs_forward(grid, c, hits, 0.0)
    pairs = torch.arange(p, device=device)
    rows, cols = grid.corner(p, lengths_a, lengths_b)
    visited, was_match = [], []
    for _ in range(m + n):
        inside = (rows > 0) & (cols > 0)
        # outside the table interior the reads below are clamped to a valid cell and then ignored
        hit = hits[pairs, grid.position(rows.clamp(min=1), cols.clamp(min=1))] & inside
        up = table[pairs, grid.position((rows - 1).clamp(min=0), cols)]
        left = table[pairs, grid.position(rows, (cols - 1).clamp(min=0))]
        go_up = inside & ~hit & (up >= left)
        go_left = inside & ~hit & ~go_up
        visited.append(torch.stack((rows - 1, cols - 1), dim=-1))
        was_match.append(hit)
        rows = rows - (hit | go_up).long()
        cols = cols - (hit | go_left).long()
    # one transfer, then split per pair (the traceback ran backwards: flip to increasing order)
    cells = torch.stack(visited).flip(0).cpu()
    matched = torch.stack(was_match).flip(0).cpu()
    return [cells[:, k][matched[:, k]].to(device) for k in range(p)]
