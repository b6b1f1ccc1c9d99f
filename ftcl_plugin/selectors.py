"""Pick the snippet subsequences FTCL contrasts, from each video's action attention.

Every selector maps a (padded) batch ``features (B, T, D)``, ``attention (B, T)`` to a :class:`Selection`: the
gathered snippet features in **temporal order**, the chosen indices and how many of the slots are real. Indices
come from sorting the detached attention (not differentiable, as in the release); the gather keeps the gradient
to ``features``. Videos shorter than the requested size (``T < k``, or a true length below ``k`` in a padded
batch) give fewer real slots; the remaining slots are zero and reported through ``Selection.lengths``, which
the losses pass on to the DP kernels.

Value checks (lengths in [1, T], no NaN in the attention, finite values in every snippet a selector reads) run
always on CPU tensors and on other devices only with ``validate_args=True``; selection itself never reads a
value on the host.
"""

from __future__ import annotations

import abc
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from ._checks import (
    check_choice,
    check_flag,
    check_k_fits,
    check_number,
    check_read_finite,
    check_snippet_batch,
    reads_values,
)

__all__ = ["ActionSelector", "BackgroundSelector", "ProposalSelector", "Selection", "select_all"]


class Selection(NamedTuple):
    """Selected snippets of every video of a batch, in temporal order.

    Shape:
        - features: (B, K, D), the input dtype; slots at or beyond ``lengths[b]`` are zero.
        - indices: (B, K), int64 snippet positions (for a resampled proposal, the nearest snippet); -1 in
          unused slots.
        - lengths: (B,), int64, the number of real slots of each video (1 <= lengths[b] <= K).
    """

    features: Tensor
    indices: Tensor
    lengths: Tensor


def _true_lengths(features: Tensor, lengths: Tensor | None) -> Tensor:
    if lengths is None:
        return torch.full((features.shape[0],), features.shape[1], dtype=torch.int64, device=features.device)
    return lengths.to(torch.int64)


class _Plan(NamedTuple):
    """How a selection reads the features: ``sum_r weights[r] * features[b, sources[r][b, k]]`` per slot.

    Splitting the choice of snippets from the read lets :func:`select_all` read several selections with a
    single gather, whose backward is then one scatter into the (B, T, D) gradient instead of one per selection
    (each of those allocates and zero-fills a tensor of the size of ``features``).
    """

    sources: tuple[Tensor, ...]  # each (B, K) int64 in [0, T)
    weights: tuple[Tensor, ...]  # each (B, K, 1) in the features' dtype
    indices: Tensor
    lengths: Tensor


def _read(plan: _Plan, pieces: tuple[Tensor, ...], validate_args: bool) -> Selection:
    """The selection from the gathered ``features[b, sources[r][b, k]]`` of each source, (B, K, D) each."""
    if reads_values(pieces[0], validate_args):
        real = torch.arange(plan.indices.shape[1], device=plan.lengths.device)[None, :] < plan.lengths[:, None]
        check_read_finite(pieces, plan.sources, real)
    out = pieces[0] * plan.weights[0]
    for piece, weight in zip(pieces[1:], plan.weights[1:]):
        out = out + piece * weight
    return Selection(out, plan.indices, plan.lengths)


def _gather(features: Tensor, index: Tensor) -> Tensor:
    return features.gather(1, index[:, :, None].expand(-1, -1, features.shape[2]))


class _PlannedSelector(nn.Module, abc.ABC):
    """A selector whose forward is a :meth:`_plan` of which snippets to read followed by the read itself."""

    @abc.abstractmethod
    def _plan(self, features: Tensor, attention: Tensor, *, lengths: Tensor | None = None) -> _Plan:
        """Check the inputs and choose the snippets (and interpolation weights) of every slot."""

    def forward(self, features: Tensor, attention: Tensor, *, lengths: Tensor | None = None) -> Selection:
        """Select; see the class docstring."""
        plan = self._plan(features, attention, lengths=lengths)
        return _read(plan, tuple(_gather(features, source) for source in plan.sources),
                     getattr(self, "validate_args", False))


def select_all(selectors: list[nn.Module], features: Tensor, attention: Tensor, *,
               lengths: Tensor | None = None) -> list[Selection]:
    """Run several selectors on one batch, reading the features of all built-in ones with a single gather.

    The result equals ``[selector(features, attention, lengths=lengths) for selector in selectors]``, but the
    backward then zero-fills and scatters into one (B, T, D) gradient instead of one per selector (at the
    paper's sizes those fills dominate the cost of the selections). Selectors that are not built-in (or
    override ``forward``) are simply called.

    Args:
        selectors: Selector modules.
        features: (B, T, D) snippet features.
        attention: (B, T) action attention.
        lengths: (B,) true lengths of a padded batch, optional.

    Shape:
        - features: (B, T, D) float; attention: (B, T) float; lengths: (B,) int, optional.
        - Output: one :class:`Selection` per selector.

    Returns:
        One :class:`Selection` per selector, in order.

    Raises:
        TypeError: As the selectors.
        ValueError: As the selectors.

    Example:
        >>> import torch
        >>> features = torch.arange(6.0).reshape(1, 6, 1)
        >>> attention = torch.tensor([[0.1, 0.9, 0.2, 0.8, 0.0, 0.7]])
        >>> action, background = select_all([ActionSelector(2), BackgroundSelector(2)], features, attention)
        >>> action.indices, background.indices
        (tensor([[1, 3]]), tensor([[0, 4]]))
    """
    plans = [selector._plan(features, attention, lengths=lengths)
             if isinstance(selector, _PlannedSelector) and type(selector).forward is _PlannedSelector.forward
             else None for selector in selectors]
    sources = [source for plan in plans if plan is not None for source in plan.sources]
    pieces = iter(_gather(features, torch.cat(sources, dim=1)).split([s.shape[1] for s in sources], dim=1)
                  if sources else ())
    return [selector(features, attention, lengths=lengths) if plan is None
            else _read(plan, tuple(next(pieces) for _ in plan.sources), getattr(selector, "validate_args", False))
            for selector, plan in zip(selectors, plans)]


def _plan_ranked(features: Tensor, attention: Tensor, lengths: Tensor | None, k: int, *, descending: bool,
                 offset: int) -> _Plan:
    """Ranks ``offset .. offset + k - 1`` of the valid snippets by attention, returned in temporal order.

    When a video has fewer than ``offset + k`` valid snippets the rank window slides back towards rank 0 so
    that it still holds ``min(k, length)`` snippets.
    """
    snippets = features.shape[1]
    width = min(k, snippets)
    true_length = _true_lengths(features, lengths)
    position = torch.arange(snippets, device=features.device)
    valid = position[None, :] < true_length[:, None]
    padding_score = float("-inf") if descending else float("inf")
    score = attention.detach().masked_fill(~valid, padding_score)
    order = torch.sort(score, dim=1, descending=descending, stable=True).indices
    count = true_length.clamp(max=width)
    start = torch.minimum(torch.full_like(count, offset), true_length - count).clamp(min=0)
    slot = torch.arange(width, device=features.device)
    chosen = order.gather(1, start[:, None] + slot[None, :])
    real = slot[None, :] < count[:, None]
    # Real slots sort by time; unused slots carry the sentinel T and so land at the end.
    chosen = torch.where(real, chosen, torch.full_like(chosen, snippets)).sort(dim=1).values
    return _Plan((chosen.clamp(max=snippets - 1),), (real[:, :, None].to(features.dtype),),
                 torch.where(real, chosen, torch.full_like(chosen, -1)), count)


class ActionSelector(_PlannedSelector):
    """The ``k`` most action-like snippets of every video (highest attention), re-ordered by time.

    This is the paper's action proposal for FSD ("snippets with high action activations", ``k = 5`` in the
    authors' release) and its top-J input for LCS (``J = 30`` on THUMOS14, ``10`` on ActivityNet).

    Args:
        k: Number of snippets, ``>= 1``.
        allow_short: When ``T < k``, take all ``T`` snippets (``True``) or raise ``ValueError`` (``False``).
        validate_args: Run the value checks on non-CPU tensors too (each forces a device sync): ``lengths``
            in [1, T], no NaN in ``attention``, finite values in the snippets read; also check every snippet of
            ``features``, read or not. On CPU the value checks always run.

    Shape:
        - features: (B, T, D) float; attention: (B, T) float (any real scores, higher = more action);
          lengths: (B,) int, optional true lengths of a padded batch.
        - Output: :class:`Selection` with K = min(k, T).

    Returns:
        A :class:`Selection` (features, indices, lengths).

    Raises:
        TypeError: If an input has the wrong type or dtype.
        ValueError: If the shapes or devices disagree (``features`` given as (B, D, T) is named as transposed),
            the batch is empty, ``k > T`` with ``allow_short=False``, or a value check fails (see
            ``validate_args``).

    Example:
        >>> import torch
        >>> features = torch.arange(6.0).reshape(1, 6, 1)
        >>> attention = torch.tensor([[0.1, 0.9, 0.2, 0.8, 0.0, 0.7]])
        >>> ActionSelector(3)(features, attention).indices
        tensor([[1, 3, 5]])
    """

    def __init__(self, k: int, *, allow_short: bool = True, validate_args: bool = False) -> None:
        super().__init__()
        check_number(k, "k", minimum=1, integer=True)
        check_flag(allow_short, "allow_short")
        check_flag(validate_args, "validate_args")
        self.k = k
        self.allow_short = allow_short
        self.validate_args = validate_args

    def extra_repr(self) -> str:
        return f"k={self.k}, allow_short={self.allow_short}"

    def _plan(self, features: Tensor, attention: Tensor, *, lengths: Tensor | None = None) -> _Plan:
        check_snippet_batch(features, attention, lengths, self.validate_args)
        if not self.allow_short:
            check_k_fits(self.k, "k", features.shape[1])
        return _plan_ranked(features, attention, lengths, self.k, descending=True, offset=0)


class BackgroundSelector(_PlannedSelector):
    """``k`` background snippets of every video, re-ordered by time.

    - ``rule="lowest"`` (paper default): the ``k`` least action-like snippets, the paper's background
      proposal ("just the opposite" of the action proposal).
    - ``rule="next"``: attention ranks ``offset + 1 .. offset + k`` (``offset`` defaults to ``k``), i.e. the
      release's "background", which is really the next most action-like snippets after the action proposal.
      When a video has fewer than ``offset + k`` snippets the window slides back towards rank 1.

    Args:
        k: Number of snippets, ``>= 1``.
        rule: ``"lowest"`` or ``"next"``.
        offset: For ``rule="next"``, how many top-ranked snippets to skip; ``None`` means ``k``.
        allow_short: When ``T < k``, take all ``T`` snippets (``True``) or raise ``ValueError`` (``False``).
        validate_args: Run the value checks on non-CPU tensors too (each forces a device sync): ``lengths``
            in [1, T], no NaN in ``attention``, finite values in the snippets read; also check every snippet of
            ``features``, read or not. On CPU the value checks always run.

    Shape:
        - features: (B, T, D); attention: (B, T); lengths: (B,) optional.
        - Output: :class:`Selection` with K = min(k, T).

    Returns:
        A :class:`Selection` (features, indices, lengths).

    Raises:
        TypeError: If an input has the wrong type or dtype.
        ValueError: If the shapes or devices disagree, the batch is empty, an option is out of range,
            ``k > T`` with ``allow_short=False``, or a value check fails (see ``validate_args``).

    Example:
        >>> import torch
        >>> features = torch.arange(6.0).reshape(1, 6, 1)
        >>> attention = torch.tensor([[0.1, 0.9, 0.2, 0.8, 0.0, 0.7]])
        >>> BackgroundSelector(2)(features, attention).indices
        tensor([[0, 4]])
        >>> BackgroundSelector(2, rule="next")(features, attention).indices   # ranks 3 and 4
        tensor([[2, 5]])
    """

    def __init__(self, k: int, *, rule: Literal["lowest", "next"] = "lowest", offset: int | None = None,
                 allow_short: bool = True, validate_args: bool = False) -> None:
        super().__init__()
        check_number(k, "k", minimum=1, integer=True)
        check_choice(rule, "rule", ("lowest", "next"))
        if offset is not None:
            check_number(offset, "offset", minimum=0, integer=True)
        check_flag(allow_short, "allow_short")
        check_flag(validate_args, "validate_args")
        self.k = k
        self.rule = rule
        self.offset = (k if offset is None else offset) if rule == "next" else 0
        self.allow_short = allow_short
        self.validate_args = validate_args

    def extra_repr(self) -> str:
        return f"k={self.k}, rule={self.rule!r}, offset={self.offset}, allow_short={self.allow_short}"

    def _plan(self, features: Tensor, attention: Tensor, *, lengths: Tensor | None = None) -> _Plan:
        check_snippet_batch(features, attention, lengths, self.validate_args)
        if not self.allow_short:
            check_k_fits(self.k, "k", features.shape[1])
        return _plan_ranked(features, attention, lengths, self.k, descending=self.rule == "next",
                            offset=self.offset)


class ProposalSelector(_PlannedSelector):
    """One contiguous proposal per video from thresholded attention, resampled to a fixed length.

    The paper builds FSD's proposals from the learned CAS (Sec. 3.2, 4.1). Per video, the snippets whose
    attention is ``>= threshold`` (``kind="action"``) or ``<= threshold`` (``kind="background"``) form runs of
    consecutive snippets; the run with the largest total margin ``|attention - threshold|`` is taken, and
    ``length`` points spread evenly from its first to its last snippet are read off the features by linear
    interpolation (so short runs are stretched and long runs subsampled). A video without any qualifying
    snippet falls back to its single most (least) action-like snippet.

    Args:
        length: Number of output points, ``>= 1``.
        threshold: Attention threshold; ``None`` means each video's mean attention over its true length (scale
            free, for attention that is not in [0, 1]).
        kind: ``"action"`` or ``"background"``.
        validate_args: Run the value checks on non-CPU tensors too (each forces a device sync): ``lengths``
            in [1, T], no NaN in ``attention``, finite values in the snippets read; also check every snippet of
            ``features``, read or not. On CPU the value checks always run.

    Shape:
        - features: (B, T, D); attention: (B, T); lengths: (B,) optional.
        - Output: :class:`Selection` with K = ``length``; ``indices`` holds the nearest snippet of each point.

    Returns:
        A :class:`Selection` (features, indices, lengths).

    Raises:
        TypeError: If an input has the wrong type or dtype.
        ValueError: If the shapes or devices disagree, the batch is empty, an option is out of range, or a
            value check fails (see ``validate_args``).

    Example:
        >>> import torch
        >>> features = torch.arange(6.0).reshape(1, 6, 1)
        >>> attention = torch.tensor([[0.1, 0.9, 0.8, 0.7, 0.0, 0.6]])
        >>> ProposalSelector(5, threshold=0.5)(features, attention).features.flatten()
        tensor([1.0000, 1.5000, 2.0000, 2.5000, 3.0000])
    """

    def __init__(self, length: int, *, threshold: float | None = None,
                 kind: Literal["action", "background"] = "action", validate_args: bool = False) -> None:
        super().__init__()
        check_number(length, "length", minimum=1, integer=True)
        if threshold is not None:
            check_number(threshold, "threshold")
        check_choice(kind, "kind", ("action", "background"))
        check_flag(validate_args, "validate_args")
        self.length = length
        self.threshold = threshold
        self.kind = kind
        self.validate_args = validate_args

    def extra_repr(self) -> str:
        return f"length={self.length}, threshold={self.threshold}, kind={self.kind!r}"

    def _plan(self, features: Tensor, attention: Tensor, *, lengths: Tensor | None = None) -> _Plan:
        check_snippet_batch(features, attention, lengths, self.validate_args)
        batch, snippets, _ = features.shape
        device = features.device
        true_length = _true_lengths(features, lengths)
        position = torch.arange(snippets, device=device)
        valid = position[None, :] < true_length[:, None]
        # Work on a score where "higher = more wanted" for both kinds.
        score = attention.detach() if self.kind == "action" else -attention.detach()
        score = score.to(torch.float64 if attention.dtype == torch.float64 else torch.float32)
        if self.threshold is None:
            cut = torch.where(valid, score, 0).sum(1, keepdim=True) / true_length[:, None].to(score.dtype)
        else:
            cut = torch.full((batch, 1), self.threshold if self.kind == "action" else -self.threshold,
                             dtype=score.dtype, device=device)
        inside = (score >= cut) & valid
        best_snippet = torch.where(valid, score, float("-inf")).argmax(dim=1)
        fallback = position[None, :] == best_snippet[:, None]
        inside = torch.where(inside.any(dim=1, keepdim=True), inside, fallback)

        # Label each run of consecutive qualifying snippets 1, 2, ... (0 = outside) and score it.
        previous = torch.cat([torch.zeros_like(inside[:, :1]), inside[:, :-1]], dim=1)
        run = torch.cumsum(inside & ~previous, dim=1) * inside
        margin = torch.where(inside, score - cut, 0)
        total = score.new_zeros(batch, snippets + 1).scatter_add(1, run, margin)
        members = torch.zeros_like(total).scatter_add(1, run, inside.to(score.dtype))
        total = torch.where(members > 0, total, float("-inf"))
        total[:, 0] = float("-inf")
        best = total.argmax(dim=1)
        in_best = run == best[:, None]
        first = torch.where(in_best, position, snippets).min(dim=1).values
        last = torch.where(in_best, position, -1).max(dim=1).values

        if self.length == 1:
            fraction = torch.full((1,), 0.5, dtype=score.dtype, device=device)
        else:
            fraction = torch.linspace(0.0, 1.0, self.length, dtype=score.dtype, device=device)
        point = first[:, None] + (last - first)[:, None].to(score.dtype) * fraction[None, :]
        low = point.floor().long().clamp(max=snippets - 1)
        high = torch.minimum(low + 1, last[:, None])
        weight = (point - low.to(score.dtype)).to(features.dtype)[:, :, None]
        count = torch.full((batch,), self.length, dtype=torch.int64, device=device)
        return _Plan((low, high), (1 - weight, weight), point.round().long(), count)
