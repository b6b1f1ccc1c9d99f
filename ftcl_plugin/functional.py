"""Stateless, batched, differentiable FTCL scores: the FSD recursion (Eq. 2) and the LCS recursion (Eq. 6).

Every function takes P pairs at once as (P, M, N) matrices, follows the input's device and dtype
(float32 or float64; the DP table itself is accumulated in float64), and supports padded batches through
``lengths_a`` / ``lengths_b``: the result equals the computation on the unpadded ``[:La, :Lb]`` block and
the padding receives exactly zero gradient.

``gamma`` is a smoothing temperature: in FSD ``max`` becomes ``gamma * logsumexp(a / gamma)``; ``gamma=0`` is
the exact hard max. Our ``gamma=0.1`` is the paper's gamma=10 (Eq. 5 with the missing ``1/gamma`` prefactor
that the authors' release applies). Accepted: 0, or ``1e-4 <= gamma <= 1e4`` (see ``docs/kernels.md``).
See ``docs/kernels.md`` for the math, the tie rules and the benchmark.

NaN in, NaN out: a NaN anywhere in a pair's (true) block makes that pair's FSD similarity and LCS length
NaN. The values of ``lengths_a`` / ``lengths_b`` (in [1, M] and [1, N]) are checked always on CPU tensors
and on other devices only with ``validate_args=True``, because there the check costs a host-device
synchronisation; the kernels themselves never synchronise.

Gradients come from analytic backward passes (first order only: double backward is not supported).
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _dp, _softdtw
from ._checks import (
    check_flag,
    check_gamma,
    check_lengths,
    check_number,
    check_scalar_tensor,
    check_score_matrix,
    check_sequence_features,
)

__all__ = ["cosine_similarity_matrix", "fsd_alignment", "fsd_similarity", "lcs_length", "lcs_path", "soft_dtw"]


def _lengths(lengths: Tensor | None, name: str, reference: Tensor, dim: int,
             validate_args: bool) -> Tensor | None:
    if lengths is None:  # the kernels skip all masking for unpadded inputs
        return None
    check_lengths(lengths, name, reference.shape[0], reference.shape[dim], reference, validate_args)
    return lengths.to(torch.int64)


def _fsd_inputs(match: Tensor, insert: Tensor, delete: Tensor | None, gamma: float,
                lengths_a: Tensor | None, lengths_b: Tensor | None,
                validate_args: bool) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None]:
    check_score_matrix(match, "match")
    check_score_matrix(insert, "insert", match, "match")
    if delete is not None:
        check_score_matrix(delete, "delete", match, "match")
    check_gamma(gamma)
    check_flag(validate_args, "validate_args")
    la = _lengths(lengths_a, "lengths_a", match, 1, validate_args)
    lb = _lengths(lengths_b, "lengths_b", match, 2, validate_args)
    return match, insert, delete, la, lb


def fsd_similarity(match: Tensor, insert: Tensor, delete: Tensor | None = None, *, gamma: float = 0.1,
                   lengths_a: Tensor | None = None, lengths_b: Tensor | None = None,
                   validate_args: bool = False) -> Tensor:
    r"""Fine-grained sequence distance similarity ``S(M, N)`` of Eq. 2, batched over pairs.

    .. math::
        S(i, j) = \mu_{ij} + \max\{S(i-1, j-1),\ g_{ij} + S(i-1, j),\ h_{ij} + S(i, j-1)\},\quad
        S(0, \cdot) = S(\cdot, 0) = 0

    with ``max`` replaced by ``gamma * logsumexp(a / gamma)`` when ``gamma > 0``. Insert and delete add the
    residual of the target cell ``(i, j)``, as the paper and the authors' release do.

    A NaN residual in a pair's block makes its S NaN. Residuals of ``-inf`` are allowed (they forbid a move
    or a cell) and keep the gradients finite, as plain autograd of the recursion does; ``+inf`` gives
    ``S = +inf``.

    Args:
        match: Match residuals mu.
        insert: Insert residuals g (added when stepping from ``(i-1, j)``).
        delete: Delete residuals h (added when stepping from ``(i, j-1)``); ``None`` means ``h = g``, as in
            the paper's implementation details.
        gamma: Smoothing temperature: 0 (the hard max) or in [1e-4, 1e4]; 0.1 is the paper's gamma=10.
        lengths_a: True lengths M_p of the first sequences inside the padded M; ``None`` means all M.
        lengths_b: True lengths N_p of the second sequences inside the padded N; ``None`` means all N.
        validate_args: Also check the values of ``lengths_a`` / ``lengths_b`` on non-CPU devices (forces a
            device sync; on CPU they are always checked).

    Shape:
        - match, insert, delete: (P, M, N), float32 or float64, all on one device.
        - lengths_a, lengths_b: (P,), integer.
        - Output: (P,), the input dtype.

    Returns:
        ``S(M_p, N_p)`` for every pair p.

    Raises:
        TypeError: If an input is not a tensor, has another dtype than float32/float64, or ``gamma`` is
            not a number.
        ValueError: If the shapes or devices disagree, ``gamma`` is out of range, or (see ``validate_args``)
            a length lies outside [1, M] or [1, N].

    Example:
        >>> import torch
        >>> match = torch.eye(2).unsqueeze(0)          # the diagonal matches
        >>> insert = torch.full((1, 2, 2), -1.0)       # a gap costs 1
        >>> fsd_similarity(match, insert, gamma=0.0)
        tensor([2.])
    """
    match, insert, delete, la, lb = _fsd_inputs(match, insert, delete, gamma, lengths_a, lengths_b, validate_args)
    return _dp.fsd(match, insert, delete, float(gamma), la, lb)


def fsd_alignment(match: Tensor, insert: Tensor, delete: Tensor | None = None, *, gamma: float = 0.1,
                  lengths_a: Tensor | None = None, lengths_b: Tensor | None = None,
                  validate_args: bool = False) -> Tensor:
    """What the FSD recursion aligned: the expected-match matrix ``dS(M, N) / d match``.

    Entry ``(p, i, j)`` is the (soft, for ``gamma > 0``) probability that the best alignment of pair p
    passes through cell ``(i, j)``; with ``gamma=0`` it is the 0/1 indicator of the argmax path (ties
    prefer match, then insert, then delete). Padding is 0. The result is detached (not differentiable).

    Args:
        match: Match residuals mu.
        insert: Insert residuals g.
        delete: Delete residuals h; ``None`` means ``h = g``.
        gamma: Smoothing temperature: 0 or in [1e-4, 1e4].
        lengths_a: True lengths of the first sequences; ``None`` means all M.
        lengths_b: True lengths of the second sequences; ``None`` means all N.
        validate_args: Also check the values of the lengths on non-CPU devices (forces a device sync).

    Shape:
        - match, insert, delete: (P, M, N).
        - Output: (P, M, N), the input dtype.

    Returns:
        The occupancy of every cell.

    Raises:
        TypeError: As :func:`fsd_similarity`.
        ValueError: As :func:`fsd_similarity`.

    Example:
        >>> import torch
        >>> match = torch.eye(2).unsqueeze(0)
        >>> fsd_alignment(match, torch.full((1, 2, 2), -1.0), gamma=0.0)
        tensor([[[1., 0.],
                 [0., 1.]]])
    """
    match, insert, delete, la, lb = _fsd_inputs(match, insert, delete, gamma, lengths_a, lengths_b, validate_args)
    return _dp.fsd_occupancy(match, insert, delete, float(gamma), la, lb)


def _lcs_inputs(similarity: Tensor, threshold: float | Tensor, gamma: float, strict: bool,
                lengths_a: Tensor | None, lengths_b: Tensor | None,
                validate_args: bool) -> tuple[Tensor | None, Tensor | None]:
    check_score_matrix(similarity, "similarity")
    if isinstance(threshold, Tensor):
        check_scalar_tensor(threshold, "threshold", similarity, "similarity")
    else:
        check_number(threshold, "threshold")
    check_gamma(gamma)
    check_flag(strict, "strict")
    check_flag(validate_args, "validate_args")
    la = _lengths(lengths_a, "lengths_a", similarity, 1, validate_args)
    lb = _lengths(lengths_b, "lengths_b", similarity, 2, validate_args)
    return la, lb


def lcs_length(similarity: Tensor, *, threshold: float | Tensor = 0.92, gamma: float = 0.0, strict: bool = False,
               lengths_a: Tensor | None = None, lengths_b: Tensor | None = None,
               validate_args: bool = False) -> Tensor:
    r"""Soft longest-common-subsequence length ``R(M, N)`` of Eq. 6, batched over pairs.

    .. math::
        R(i, j) = \begin{cases} R(i-1, j-1) + c_{ij} & c_{ij} \ge \tau \\
                  \max\{R(i-1, j),\ R(i, j-1)\} & \text{otherwise} \end{cases},\quad
        R(0, \cdot) = R(\cdot, 0) = 0

    A matched cell always takes the diagonal (it is not compared with its neighbours), exactly as the paper
    and the authors' release do, so R is not the max-weight common subsequence for uneven weights. With
    ``gamma=0`` the max is hard (ties go up, to ``R(i-1, j)``, as in the release) and the gradient is 1 on
    every matched cell of the traced path and 0 elsewhere. With ``gamma > 0`` (an extension, not in the
    paper) the max of an unmatched cell becomes the log-mean-exp
    ``gamma * log((exp(R(i-1, j) / gamma) + exp(R(i, j-1) / gamma)) / 2)``: never above the max, equal to
    it on a tie, at most ``gamma * ln 2`` below it, so a pair without any match still has length 0. Its
    gradient spreads the adjoint over up and left with weights ``sigmoid((up - left) / gamma)`` and
    ``1 - sigmoid(...)``. The threshold test itself has no gradient.

    A NaN similarity fails every threshold test, so the recursion alone would score it as "no match"; instead
    a NaN anywhere in a pair's block makes that pair's length NaN.

    Args:
        similarity: Snippet similarities c (cosine in the paper).
        threshold: Match threshold tau (0.92 in the paper): a number, or a 0-dim float tensor on the device of
            ``similarity`` (e.g. computed from the batch; it gets no gradient, and reading it needs no sync).
        gamma: Smoothing temperature of the non-matching branch: 0 (the hard max) or in [1e-4, 1e4].
        strict: Match on ``c > tau`` (the authors' release) instead of the paper's ``c >= tau``.
        lengths_a: True lengths of the first sequences; ``None`` means all M.
        lengths_b: True lengths of the second sequences; ``None`` means all N.
        validate_args: Also check the values of the lengths on non-CPU devices (forces a device sync).

    Shape:
        - similarity: (P, M, N), float32 or float64.
        - lengths_a, lengths_b: (P,), integer.
        - Output: (P,), the input dtype.

    Returns:
        ``R(M_p, N_p)`` for every pair p. For ``threshold >= 0`` and any gamma,
        ``0 <= R <= min(M_p, N_p) * max(0, max(c))``; for gamma > 0 it lies at most
        ``gamma * ln(2) * (M_p + N_p - 1)`` below the hard (``gamma=0``) value, never above it.

    Raises:
        TypeError: If ``similarity`` is not a float32/float64 tensor, or an option has the wrong type.
        ValueError: If ``similarity`` is not 3-D, ``gamma`` or ``threshold`` is out of range, or the lengths
            do not fit (their values: see ``validate_args``).

    Example:
        >>> import torch
        >>> similarity = torch.tensor([[[0.95, 0.10], [0.20, 0.93]]])
        >>> lcs_length(similarity)
        tensor([1.8800])
    """
    la, lb = _lcs_inputs(similarity, threshold, gamma, strict, lengths_a, lengths_b, validate_args)
    threshold = threshold.detach() if isinstance(threshold, Tensor) else float(threshold)
    return _dp.lcs(similarity, threshold, strict, float(gamma), la, lb)


def lcs_path(similarity: Tensor, *, threshold: float = 0.92, strict: bool = False,
             lengths_a: Tensor | None = None, lengths_b: Tensor | None = None,
             validate_args: bool = False) -> list[Tensor]:
    """The matched cells of the hard LCS (``gamma=0``) of every pair, for qualitative analysis (Sec. 4.3).

    The traceback follows the branch the recursion took: a matched cell steps diagonally, otherwise the
    larger of up/left (ties go up), so ``similarity[p][path[:, 0], path[:, 1]].sum()`` equals
    ``lcs_length(similarity, gamma=0)[p]`` up to rounding.

    Args:
        similarity: Snippet similarities c.
        threshold: Match threshold tau.
        strict: Match on ``c > tau`` instead of ``c >= tau``.
        lengths_a: True lengths of the first sequences; ``None`` means all M.
        lengths_b: True lengths of the second sequences; ``None`` means all N.
        validate_args: Also check the values of the lengths on non-CPU devices (forces a device sync).

    Shape:
        - similarity: (P, M, N).
        - Output: a list of P int64 tensors of shape (K_p, 2), on the input's device.

    Returns:
        The 0-based ``(i, j)`` index pairs of the matched snippets, in increasing order.

    Raises:
        TypeError: As :func:`lcs_length`.
        ValueError: As :func:`lcs_length`.

    Example:
        >>> import torch
        >>> similarity = torch.tensor([[[0.95, 0.10], [0.20, 0.93]]])
        >>> lcs_path(similarity)
        [tensor([[0, 0],
                [1, 1]])]
    """
    la, lb = _lcs_inputs(similarity, threshold, 0.0, strict, lengths_a, lengths_b, validate_args)
    return _dp.lcs_path(similarity, float(threshold), strict, la, lb)


def cosine_similarity_matrix(features_a: Tensor, features_b: Tensor, *, eps: float = 1e-8) -> Tensor:
    """Pairwise cosine similarities between the snippets of two batches of sequences.

    Rows are normalised by ``max(||x||, eps)``, so a zero vector gives similarity 0 instead of NaN (the
    authors' release has no eps; on non-degenerate inputs the results agree).

    Args:
        features_a: First sequences.
        features_b: Second sequences.
        eps: Lower bound on the norms, ``> 0``.

    Shape:
        - features_a: (P, M, D); features_b: (P, N, D), float32 or float64.
        - Output: (P, M, N).

    Returns:
        ``cos(features_a[p, i], features_b[p, j])`` at ``(p, i, j)``.

    Raises:
        TypeError: If an input is not a float32/float64 tensor, or the dtypes differ.
        ValueError: If the shapes or devices disagree, or ``eps <= 0``.

    Example:
        >>> import torch
        >>> a = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
        >>> cosine_similarity_matrix(a, a)
        tensor([[[1., 0.],
                 [0., 1.]]])
    """
    check_sequence_features(features_a, features_b)
    check_number(eps, "eps", minimum=0.0, strict_minimum=True)
    unit_a = torch.nn.functional.normalize(features_a, dim=-1, eps=eps)
    unit_b = torch.nn.functional.normalize(features_b, dim=-1, eps=eps)
    return torch.bmm(unit_a, unit_b.transpose(1, 2))


def soft_dtw(cost: Tensor, *, gamma: float = 0.1, lengths_a: Tensor | None = None,
             lengths_b: Tensor | None = None, validate_args: bool = False) -> Tensor:
    r"""Soft-DTW alignment cost (Cuturi and Blondel, ICML 2017), batched over pairs: the paper's "DTW" (Table 4).

    .. math::
        R(i, j) = \mathrm{cost}_{ij} + \mathrm{softmin}_\gamma\{R(i-1, j-1), R(i-1, j), R(i, j-1)\},\quad
        R(0, 0) = 0,\ R(0, j) = R(i, 0) = \infty

    with ``softmin_gamma(x) = -gamma log sum exp(-x / gamma)``. Unlike FSD and LCS, DTW must align both sequences
    from end to end. Differentiated by plain autograd over anti-diagonals (no analytic backward: it serves the
    comparison only).

    Args:
        cost: Pairwise costs (e.g. cosine distances ``1 - c``).
        gamma: Soft-min temperature, ``> 0``.
        lengths_a: True lengths of the first sequences; ``None`` means all M.
        lengths_b: True lengths of the second sequences; ``None`` means all N.
        validate_args: Also check the values of the lengths (forces a device sync).

    Shape:
        - cost: (P, M, N), float32 or float64.
        - Output: (P,).

    Returns:
        ``R(M_p, N_p)`` for every pair p.

    Raises:
        TypeError: If ``cost`` is not a float32/float64 tensor.
        ValueError: If ``cost`` is not 3-D, the lengths do not fit, or ``gamma <= 0``.

    Example:
        >>> import torch
        >>> cost = 1 - torch.eye(2)[None]            # matching diagonal: zero cost
        >>> bool(soft_dtw(cost, gamma=0.01).abs() < 0.02)
        True
    """
    check_score_matrix(cost, "cost")
    check_number(gamma, "gamma", minimum=0.0, strict_minimum=True)
    la = _lengths(lengths_a, "lengths_a", cost, 1, validate_args)
    lb = _lengths(lengths_b, "lengths_b", cost, 2, validate_args)
    return _softdtw.soft_dtw(cost, float(gamma), la, lb)
