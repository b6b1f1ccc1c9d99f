"""LCS contrasting (Sec. 3.3 of the paper): thresholded cosines, the LCS recursion, and its pair loss."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from ._checks import (
    check_choice,
    check_flag,
    check_gamma,
    check_is_positive,
    check_number,
    check_pair_sequences,
)
from ._pairwise import (
    VARIANTS,
    Measure,
    Variant,
    check_measure,
    check_pair_indices,
    pair_cosines,
    release_mean_difference,
    take_lengths,
    to_kernel_dtype,
    unit_rows,
    video_rows,
)
from .functional import lcs_length
from .measures import calibrated_threshold


class LCSTerms(NamedTuple):
    """What :meth:`LCSLoss.forward_terms` computed.

    Shape:
        - loss: (), the LCS loss.
        - length: (P,), the soft LCS length ``r = R(M, N)`` of every pair.
        - normalized_length: (P,), ``r / min(M_p, N_p)`` (in [0, 1] for cosine similarities).
        - matched: (P,), bool: the pair's LCS path holds at least one match (``r > 0``), so the pair sends
          gradient.
        - threshold: (), the match threshold actually used (below ``threshold`` when ``min_match_fraction``
          lowered it for this batch).
    """

    loss: Tensor
    length: Tensor
    normalized_length: Tensor
    matched: Tensor
    threshold: Tensor


class LCSLoss(nn.Module):
    r"""Longest common subsequence (LCS) contrasting, Sec. 3.3 of the paper.

    The snippet similarities ``c_ij = cos(x_i, z_j)`` of the two videos of each pair feed the LCS recursion
    (Eq. 6, threshold ``tau``; a matched cell always takes the diagonal), giving a soft length ``r``.

    ``variant="paper"``: Eq. 7 read as a proper binary cross-entropy on the normalised length
    ``r_hat = clamp(r / min(M, N), eps, 1 - eps)``:
    :math:`-[\delta \log \hat r + (1 - \delta) \log(1 - \hat r)]`, averaged over all pairs (Eq. 7 as printed
    lacks the minus sign and the normalisation, and is NaN for ``r > 1``). Matching is ``c >= tau``.

    ``variant="official"`` reproduces the authors' release: strict ``c > tau`` on the raw cosine (``tau``
    rounded to the similarity's dtype, as the release's float32 comparison does), and the linear
    ``mean(r_neg) - mean(r_pos)`` (each mean divides by ``count + 1e-10``).

    The LCS has no parameters: it shapes the features that feed it. With the hard threshold (``gamma=0``) only
    matched cells get gradient; pairs without any match get none.

    ``min_match_fraction`` keeps the term alive on any embedding. The paper's ``tau = 0.92`` was tuned on the
    authors' 2048-d ACM-Net embedding; on others no snippet pair may reach it, and then every length is 0 and
    the term sends no gradient at all. With ``min_match_fraction=f``, whenever fewer than a fraction ``f`` of
    the batch's similarity cells (over all pairs, padding excluded) reach ``tau``, the threshold of that batch
    is lowered to the largest value that ``f`` of the cells reach (a detached batch quantile, so no gradient
    flows through it); when enough cells reach ``tau`` it is exactly Eq. 6. ``None`` (the default here) keeps
    ``tau`` fixed; :class:`~ftcl_plugin.FTCL` sets it.

    Args:
        variant: ``"paper"`` or ``"official"``.
        threshold: Match threshold ``tau`` (0.92, Sec. 4.1), in ``[-1, 1]`` (cosine similarities).
        strict: Match on ``c > tau``; ``None`` means the variant's default (paper ``False``, official ``True``).
        gamma: Smoothing temperature of the non-matching max: 0 (hard, as paper and release; the default) or in
            [1e-4, 1e4].
        eps: Lower bound on the norms in the cosine similarities.
        probability_eps: Clamp of ``r_hat`` into ``[probability_eps, 1 - probability_eps]`` (paper variant).
        min_match_fraction: In ``[0, 1]``: lower the threshold of a batch so that at least this fraction of its
            similarity cells match (see above); ``None`` or 0 keeps ``threshold`` fixed.
        similarity: A measure from :mod:`ftcl_plugin.measures` that replaces the LCS length (paper variant
            only): the BCE of Eq. 7 then runs on ``similarity`` of the cosines, clamped into
            ``[probability_eps, 1 - probability_eps]`` (the paper's Table 3 "both-FSD" and Table 4 "DTW" arms);
            ``threshold``, ``strict``, ``gamma`` and ``min_match_fraction`` then do not apply.
        validate_args: Also run the value checks (pair labels, lengths) on non-CPU tensors, which forces device
            syncs; on CPU tensors they always run.

    Shape:
        - features_a, features_b: (P, M, D) and (P, N, D) top-J snippets of the two videos, in temporal order.
        - is_positive: (P,), bool (or 0/1).
        - lengths_a, lengths_b: (P,) int64, optional true lengths.
        - Output: () scalar.

    Returns:
        ``forward``: the LCS loss; ``forward_terms`` / ``forward_videos``: :class:`LCSTerms`.

    Raises:
        TypeError: If an input has the wrong type or dtype, or an option has the wrong type.
        ValueError: If shapes or devices disagree, or an option is out of range.

    Example:
        >>> import torch
        >>> x = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
        >>> terms = LCSLoss().forward_terms(x, x, torch.tensor([True]))   # identical videos
        >>> terms.length, terms.normalized_length, bool(terms.loss < 1e-5)
        (tensor([2.]), tensor([1.]), True)
    """

    def __init__(self, *, variant: Variant = "paper", threshold: float = 0.92, strict: bool | None = None,
                 gamma: float = 0.0, eps: float = 1e-8, probability_eps: float = 1e-6,
                 min_match_fraction: float | None = None, similarity: Measure | None = None,
                 validate_args: bool = False) -> None:
        super().__init__()
        check_choice(variant, "variant", VARIANTS)
        check_measure(similarity, variant)
        check_number(threshold, "threshold", minimum=-1.0, maximum=1.0)
        if min_match_fraction is not None:
            check_number(min_match_fraction, "min_match_fraction", minimum=0.0, maximum=1.0)
        if strict is not None:
            check_flag(strict, "strict")
        check_gamma(gamma)
        check_number(eps, "eps", minimum=0.0, strict_minimum=True)
        check_number(probability_eps, "probability_eps", minimum=0.0, maximum=0.5, strict_minimum=True)
        check_flag(validate_args, "validate_args")
        self.variant = variant
        self.threshold = threshold
        self.strict = (variant == "official") if strict is None else strict
        self.gamma = gamma
        self.eps = eps
        self.probability_eps = probability_eps
        self.min_match_fraction = min_match_fraction
        self.similarity = similarity
        self.validate_args = validate_args

    def extra_repr(self) -> str:
        return (f"variant={self.variant!r}, threshold={self.threshold}, strict={self.strict}, gamma={self.gamma}, "
                f"min_match_fraction={self.min_match_fraction}"
                + ("" if self.similarity is None else f", similarity={self.similarity!r}"))

    def forward_terms(self, features_a: Tensor, features_b: Tensor, is_positive: Tensor, *,
                      lengths_a: Tensor | None = None, lengths_b: Tensor | None = None) -> LCSTerms:
        """The loss and the per-pair lengths; arguments as :class:`LCSLoss`."""
        check_pair_sequences([("features_a", features_a), ("features_b", features_b)], None)
        check_is_positive(is_positive, features_a.shape[0], features_a, self.validate_args)
        first, second = to_kernel_dtype(features_a), to_kernel_dtype(features_b)
        if features_a.shape[0] == 0:
            return self._empty(first.sum() + second.sum(), first)
        return self._score(pair_cosines(unit_rows(first, self.eps), unit_rows(second, self.eps)), is_positive != 0,
                           lengths_a, lengths_b)

    def _empty(self, zero: Tensor, like: Tensor) -> LCSTerms:
        empty = like.new_zeros(0)
        return LCSTerms(zero, empty, empty, empty.bool(), like.new_tensor(self.threshold))

    def _threshold(self, similarity: Tensor, lengths_a: Tensor | None, lengths_b: Tensor | None) -> Tensor | float:
        """The batch's match threshold: ``tau``, lowered to the batch quantile that ``min_match_fraction`` asks."""
        threshold = self.threshold
        if self.variant == "official":
            # The release compares a float32 cosine with the Python float 0.92, i.e. with float32(0.92).
            threshold = float(torch.tensor(threshold, dtype=similarity.dtype))
        return calibrated_threshold(similarity, threshold, self.min_match_fraction, lengths_a, lengths_b)

    def _score(self, similarity: Tensor, positive: Tensor, lengths_a: Tensor | None,
               lengths_b: Tensor | None) -> LCSTerms:
        if self.similarity is not None:
            score = self.similarity(similarity, lengths_a, lengths_b)
            return LCSTerms(self._binary_cross_entropy(score, positive), score, score, score.detach() > 0,
                            torch.full((), float("nan"), dtype=similarity.dtype, device=similarity.device))
        threshold = self._threshold(similarity, lengths_a, lengths_b)
        length = lcs_length(similarity, threshold=threshold, gamma=self.gamma, strict=self.strict,
                            lengths_a=lengths_a, lengths_b=lengths_b, validate_args=self.validate_args)
        size_a = similarity.shape[1] if lengths_a is None else lengths_a
        size_b = similarity.shape[2] if lengths_b is None else lengths_b
        shorter = torch.minimum(torch.as_tensor(size_a, device=length.device),
                                torch.as_tensor(size_b, device=length.device)).to(length.dtype)
        # An empty sequence has LCS length 0, so its normalised length is 0 (not 0 / 0).
        normalized = length / shorter.clamp(min=1)
        if self.variant == "official":
            loss = release_mean_difference(length, positive)
        else:
            loss = self._binary_cross_entropy(normalized, positive)
        return LCSTerms(loss, length, normalized, length.detach() > 0,
                        torch.as_tensor(threshold, dtype=similarity.dtype, device=similarity.device))

    def _binary_cross_entropy(self, score: Tensor, positive: Tensor) -> Tensor:
        """Eq. 7 with its sign: the mean BCE of ``score`` clamped into [probability_eps, 1 - probability_eps]."""
        probability = score.clamp(self.probability_eps, 1 - self.probability_eps)
        # Written out rather than F.binary_cross_entropy, which refuses to run under autocast.
        return -torch.where(positive, probability.log(), torch.log1p(-probability)).mean()

    def forward_videos(self, snippets: Tensor, index_a: Tensor, index_b: Tensor, is_positive: Tensor, *,
                       lengths: Tensor | None = None) -> LCSTerms:
        """:meth:`forward_terms` for pairs of videos of one batch (what :class:`~ftcl_plugin.FTCL` uses).

        Args:
            snippets: Selected snippets of every video, (B, J, D).
            index_a: (P,) int64 indices of the first videos.
            index_b: (P,) int64 indices of the second videos.
            is_positive: (P,) pair labels.
            lengths: (B,) true lengths of ``snippets``, optional.

        Returns:
            :class:`LCSTerms` over the P pairs.
        """
        check_pair_sequences([("snippets", snippets)], None)
        check_pair_indices(index_a, index_b, is_positive, snippets, self.validate_args)
        # Normalise each video once, then index the pairs: no normalisation of (and backward through) P copies.
        unit = unit_rows(to_kernel_dtype(snippets), self.eps)
        first, second = video_rows(unit, index_a), video_rows(unit, index_b)
        if index_a.shape[0] == 0:
            return self._empty(first.sum() + second.sum(), unit)
        return self._score(pair_cosines(first, second), is_positive != 0, take_lengths(lengths, index_a),
                           take_lengths(lengths, index_b))

    def forward(self, features_a: Tensor, features_b: Tensor, is_positive: Tensor, *,
                lengths_a: Tensor | None = None, lengths_b: Tensor | None = None) -> Tensor:
        """The scalar LCS loss; see the class docstring."""
        return self.forward_terms(features_a, features_b, is_positive, lengths_a=lengths_a,
                                  lengths_b=lengths_b).loss
