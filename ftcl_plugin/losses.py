"""FTCL's two contrastive losses over video pairs: FSD contrasting (Sec. 3.2) and LCS contrasting (Sec. 3.3).

Both take per-pair snippet sequences (already selected and in temporal order, see :mod:`.selectors`) and the
pair labels (see :mod:`.miners`), and delegate the recursions to :mod:`ftcl_plugin.functional`.

Defaults, one place (``variant="paper"`` / ``variant="official"``):

================================  =====================  ================================  ==============================
number                            paper                  official (authors' release)       where it comes from
================================  =====================  ================================  ==============================
projection output size            1024 per head          1024 split in halves (512 each)   paper Sec. 4.1 / release
insert/delete activation          ``x - 1`` (penalty)    identity (a bonus)                paper Sec. 3.2 text / release
smooth-max temperature ``gamma``  0.1                    0.1                               paper gamma=10 (Eq. 5) = release
FSD ranking loss                  softplus(x / 0.2)      mean(neg) - mean(pos)             authors' unused helper / release
LCS threshold                     ``c >= 0.92``          ``c > 0.92``                      paper Eq. 6 / release
LCS loss                          BCE on r / min(M, N)   mean(neg) - mean(pos)             Eq. 7 with its sign fixed / release
cosine eps                        1e-8                   1e-8                              plugin decision (release has none)
================================  =====================  ================================  ==============================
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal, NamedTuple, Union

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ._checks import (
    check_choice,
    check_flag,
    check_gamma,
    check_integer_tensor,
    check_is_positive,
    check_ndim,
    check_number,
    check_pair_sequences,
    check_tensor,
)
from .functional import fsd_similarity, lcs_length
from .measures import FSDSimilarity, LCSSimilarity, SoftDTWSimilarity, calibrated_threshold

__all__ = ["FSDLoss", "FSDTerms", "LCSLoss", "LCSTerms", "Variant"]

# A measure replacing a loss's own (``similarity=``): maps (P, M, N) cosines and lengths to (P,) scores.
Measure = Union[FSDSimilarity, LCSSimilarity, SoftDTWSimilarity]
_MEASURES = (FSDSimilarity, LCSSimilarity, SoftDTWSimilarity)

Variant = Literal["paper", "official"]
_VARIANTS = ("paper", "official")
# The release divides each sum by (count + 1e-10), so an empty subset contributes exactly 0.
_RELEASE_COUNT_EPS = 1e-10
_KERNEL_DTYPES = (torch.float32, torch.float64)
# A softplus whose slope sigmoid(x / eta) fell below this sends almost no gradient: the pair counts as saturated.
ACTIVE_SLOPE = 0.01


def _kernel_dtype(value: Tensor) -> Tensor:
    """The DP kernels run in float32/float64; half-precision activations (autocast) are promoted."""
    return value if value.dtype in _KERNEL_DTYPES else value.float()


def _autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast disabled on ``device`` (a no-op context when it is not active there).

    Under ``torch.autocast`` the cosine products would run in float16/bfloat16 and feed the DP kernels, whose
    float32/float64 accumulation is what keeps long alignments exact; so the similarity and DP stage always
    runs in float32 or higher, whatever the host's autocast does.
    """
    if _autocast_enabled(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no device argument
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def _release_mean_difference(values: Tensor, positive: Tensor) -> Tensor:
    """``sum(neg) / (N_neg + 1e-10) - sum(pos) / (N_pos + 1e-10)``, the release's linear pair loss."""
    zero = torch.zeros_like(values)
    num_positive = positive.sum().to(values.dtype)
    num_negative = (~positive).sum().to(values.dtype)
    negative_mean = torch.where(positive, zero, values).sum() / (num_negative + _RELEASE_COUNT_EPS)
    positive_mean = torch.where(positive, values, zero).sum() / (num_positive + _RELEASE_COUNT_EPS)
    return negative_mean - positive_mean


def _check_pair_indices(index_a: Tensor, index_b: Tensor, is_positive: Tensor, videos: Tensor,
                        validate_args: bool) -> None:
    check_tensor(index_a, "index_a")
    check_ndim(index_a, "index_a", 1, "(P,)")
    for name, value in (("index_a", index_a), ("index_b", index_b)):
        check_integer_tensor(value, name, (index_a.shape[0],), "(P,)", videos, "the video features")
    check_is_positive(is_positive, index_a.shape[0], videos, validate_args)


def _take_lengths(lengths: Tensor | None, index: Tensor) -> Tensor | None:
    return None if lengths is None else lengths[index]


class FSDTerms(NamedTuple):
    """What :meth:`FSDLoss.forward_terms` computed.

    Shape:
        - loss: (), the FSD loss.
        - action_action: (P,), ``s(U, V)``: action proposal of video a against that of video b.
        - action_background: (P,), ``s(U, V')``: action proposal of a against the background of b.
        - background_action: (P,), ``s(U', V)``: background of a against the action proposal of b.
        - active: (P,), bool: the pair's loss term still sends gradient. Paper variant: a positive pair one of
          whose ranking terms has slope ``sigmoid(x / eta) >= 0.01`` (a saturated softplus sends almost
          none); official variant: every pair (its loss is linear).

    The three similarities are divided by the mean length of their two sequences when the loss is
    ``length_normalized``.
    """

    loss: Tensor
    action_action: Tensor
    action_background: Tensor
    background_action: Tensor
    active: Tensor


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


class _Projected(NamedTuple):
    """Unit-norm projections of snippets: f_mu, f_g and f_h (``None`` when f_h = f_g)."""

    match: Tensor
    insert: Tensor
    delete: Tensor | None


def _take(projected: _Projected, index: Tensor) -> _Projected:
    return _Projected(*(None if part is None else _rows(part, index) for part in projected))


def _rows(videos: Tensor, index: Tensor) -> Tensor:
    # index_select, not videos[index]: its backward is an index_add, much faster on CPU than the accumulating
    # index_put behind advanced indexing.
    return videos.index_select(0, index)


def _unit(features: Tensor, eps: float) -> Tensor:
    """Rows scaled to unit norm (norms clamped below at ``eps``), as ``cosine_similarity_matrix`` does."""
    # Normalising each video once and indexing the pairs afterwards spares the normalisation (and its backward)
    # of every per-pair copy; the unit rows, hence the cosines, are the same.
    return F.normalize(features, dim=-1, eps=eps)


def _cosine(unit_a: Tensor, unit_b: Tensor) -> Tensor:
    """(P, M, N) cosine similarities of unit rows (P, M, D) and (P, N, D), never in reduced precision."""
    with _autocast_off(unit_a.device):
        return torch.bmm(_kernel_dtype(unit_a), _kernel_dtype(unit_b).transpose(1, 2))


def _mean_length(lengths_a: Tensor | None, lengths_b: Tensor | None, size_a: int, size_b: int,
                 pairs: int) -> Tensor | float:
    """(M_p + N_p) / 2 per pair: the true lengths where given, the padded sizes otherwise."""
    if lengths_a is None and lengths_b is None:
        return (size_a + size_b) / 2
    first = lengths_a if lengths_a is not None else torch.full((pairs,), size_a, device=lengths_b.device)
    second = lengths_b if lengths_b is not None else torch.full((pairs,), size_b, device=first.device)
    return (first + second) / 2


def _check_measure(similarity: Any, variant: str) -> None:
    if similarity is None:
        return
    if not isinstance(similarity, _MEASURES):
        names = ", ".join(cls.__name__ for cls in _MEASURES)
        raise TypeError(f"`similarity` must be None or one of {names}, but got {type(similarity).__name__}.")
    if variant != "paper":
        raise ValueError("`similarity` must be None with variant='official' (the release has no other measure).")


def _stack(parts: list[Tensor | None]) -> Tensor | None:
    return None if parts[0] is None else torch.cat(parts)


class FSDLoss(nn.Module):
    r"""Fine-grained sequence distance (FSD) contrasting, Sec. 3.2 of the paper.

    Each snippet is mapped by learnable projections ``f_mu`` and ``f_g`` (``f_h = f_g`` unless
    ``separate_delete``), and the residual matrices of Eq. 3 are
    ``mu_ij = sigma_mu(cos(f_mu(u_i), f_mu(v_j)))``, ``g_ij = sigma_g(cos(f_g(u_i), f_g(v_j)))``, with
    ``sigma_mu`` the identity and ``sigma_g`` set by ``insert_activation``. The FSD recursion (Eq. 2, smooth max
    of temperature ``gamma``) gives a similarity ``s`` per pair of sequences.

    ``variant="paper"``: for every **positive** pair with action proposals U, V and backgrounds U', V' (Eq. 4)

    .. math::
        \ell(s_{UV'} - s_{UV}) + \ell(s_{U'V} - s_{UV}),\qquad \ell(x) = \mathrm{softplus}(x / \eta)

    averaged over the positive pairs (negative pairs are ignored; none gives a zero that keeps the graph).

    ``variant="official"`` reproduces the authors' release: one ``Linear(D, projection_dim)`` whose first half
    of outputs is ``f_mu`` and second half ``f_g = f_h`` (its weights load from the release's
    ``feature_trans``), identity activations, and ``s_b = s(U, V)`` for positive pairs, ``s(U, V')`` for
    negative pairs, reduced to ``mean(s_neg) - mean(s_pos)`` (each mean divides by ``count + 1e-10``).

    Args:
        feature_dim: Size D of the snippet features.
        variant: ``"paper"`` or ``"official"``, see above.
        projection_dim: Output size of each paper projection (1024, Sec. 4.1), or of the single split official
            projection (1024, i.e. 512 per head; the second half gets the extra unit when odd).
        insert_activation: ``"penalty"`` (``g = cos - 1 <= 0``, paper default: the text asks for a penalty) or
            ``"identity"`` (official default); ``None`` means the variant's default.
        separate_delete: Give ``f_h`` its own projection (paper variant only; the paper sets ``f_h = f_g``).
        gamma: Smooth-max temperature: 0 (the hard max) or in [1e-4, 1e4]; 0.1 is the paper's gamma=10.
        ranking_temperature: ``eta`` of the paper variant's ranking loss, ``> 0``.
        length_normalized: Divide every similarity ``s`` by the mean length ``(M + N) / 2`` of its two sequences
            before the ranking loss (paper variant only). ``s`` sums residuals along an alignment path of up to
            ``M + N - 1`` cells, so its differences grow with the proposal length while ``eta`` stays fixed, and
            the softplus saturates as soon as the projections separate action from background. Per snippet the
            similarity is bounded whatever the length: every path has at least ``max(M, N)`` cells with
            ``mu >= -1``, and with the penalty activation at most ``M + N - 1`` cells each adding at most 1, so
            for square proposals ``-1 <= s_hat < 2 + 2.2 gamma``: the gap of a ranking term stays below about
            3.2, and with ``ranking_temperature >= 1`` its slope stays above ``sigmoid(-3.2) = 0.04`` (the term
            never saturates). The paper is silent on the scale; ``False`` (the default here) is Eq. 4 exactly.
            :class:`~ftcl_plugin.FTCL` uses ``True`` with ``ranking_temperature=1.0``.
        similarity: A measure from :mod:`ftcl_plugin.measures` that replaces FSD (paper variant only): the
            ranking of Eq. 4 then runs on ``similarity`` of the raw snippets' cosines, with no projections (the
            paper's Table 3 "both-LCS" and Table 4 "DTW" arms). ``None``: FSD with its learned residuals.
        eps: Lower bound on the norms in the cosine similarities.
        validate_args: Also run the value checks (pair labels, lengths, finiteness) on non-CPU tensors, which
            forces device syncs; on CPU tensors they always run.

    Features whose dtype differs from the projections' (float64 features, float32 module) are cast to the
    projections' dtype; under ``torch.autocast`` the projections follow autocast, and the similarities and the
    DP always run in float32 or float64.

    Shape:
        - features_a, features_b: (P, M, D) and (P, N, D) action proposals of the two videos of each pair.
        - background_a, background_b: (P, M', D) and (P, N', D) background proposals.
        - is_positive: (P,), bool (or 0/1).
        - lengths_a, lengths_b, background_lengths_a, background_lengths_b: (P,) int64 true lengths inside
          padded sequences, optional.
        - Output: () scalar.

    Returns:
        ``forward``: the FSD loss; ``forward_terms`` / ``forward_videos``: :class:`FSDTerms`.

    Raises:
        TypeError: If an input has the wrong type or dtype, or an option has the wrong type.
        ValueError: If shapes, feature size or devices disagree, or an option is out of range.

    Example:
        >>> import torch
        >>> generator = torch.Generator().manual_seed(0)
        >>> loss_fn = FSDLoss(8, projection_dim=4)
        >>> actions = torch.randn(2, 3, 5, 8, generator=generator)       # (video a / b, P, M, D)
        >>> backgrounds = torch.randn(2, 3, 5, 8, generator=generator)
        >>> loss = loss_fn(actions[0], actions[1], backgrounds[0], backgrounds[1], torch.tensor([True, True, False]))
        >>> loss.shape, bool(loss > 0)
        (torch.Size([]), True)

    References:
        Gao et al., Fine-grained Temporal Contrastive Learning for Weakly-supervised Temporal Action
        Localization, CVPR 2022, Eq. 2-5.
    """

    def __init__(self, feature_dim: int, *, variant: Variant = "paper", projection_dim: int = 1024,
                 insert_activation: Literal["penalty", "identity"] | None = None, separate_delete: bool = False,
                 gamma: float = 0.1, ranking_temperature: float = 0.2, length_normalized: bool = False,
                 similarity: Measure | None = None, eps: float = 1e-8, validate_args: bool = False) -> None:
        super().__init__()
        check_number(feature_dim, "feature_dim", minimum=1, integer=True)
        check_choice(variant, "variant", _VARIANTS)
        _check_measure(similarity, variant)
        check_number(projection_dim, "projection_dim", minimum=2 if variant == "official" else 1, integer=True)
        if insert_activation is not None:
            check_choice(insert_activation, "insert_activation", ("penalty", "identity"))
        check_flag(separate_delete, "separate_delete")
        if separate_delete and variant == "official":
            raise ValueError("`separate_delete` must be False with variant='official' (the release shares f_g).")
        check_gamma(gamma)
        check_number(ranking_temperature, "ranking_temperature", minimum=0.0, strict_minimum=True)
        check_flag(length_normalized, "length_normalized")
        if length_normalized and similarity is not None:
            raise ValueError("`length_normalized` applies to FSD's own similarity; the measures in "
                             "ftcl_plugin.measures are already per snippet.")
        if length_normalized and variant == "official":
            raise ValueError("`length_normalized` must be False with variant='official' (the release ranks raw "
                             "similarities).")
        check_number(eps, "eps", minimum=0.0, strict_minimum=True)
        check_flag(validate_args, "validate_args")
        self.length_normalized = length_normalized
        self.similarity = similarity
        self.feature_dim = feature_dim
        self.variant = variant
        self.projection_dim = projection_dim
        self.insert_activation = insert_activation or ("penalty" if variant == "paper" else "identity")
        self.gamma = gamma
        self.ranking_temperature = ranking_temperature
        self.eps = eps
        self.validate_args = validate_args
        if similarity is not None:
            pass  # the measure reads the snippets themselves: no projections
        elif variant == "official":
            self.projection = nn.Linear(feature_dim, projection_dim)
        else:
            self.match_projection = nn.Linear(feature_dim, projection_dim)
            self.insert_projection = nn.Linear(feature_dim, projection_dim)
            self.delete_projection = nn.Linear(feature_dim, projection_dim) if separate_delete else None

    def extra_repr(self) -> str:
        return (f"feature_dim={self.feature_dim}, variant={self.variant!r}, projection_dim={self.projection_dim}, "
                f"insert_activation={self.insert_activation!r}, gamma={self.gamma}, "
                f"length_normalized={self.length_normalized}"
                + ("" if self.similarity is None else f", similarity={self.similarity!r}"))

    def _project(self, features: Tensor) -> _Projected:
        """The projections of every snippet, each scaled to unit norm (the cosines are then plain products)."""
        if self.similarity is not None:
            return _Projected(_unit(_kernel_dtype(features), self.eps), None, None)
        weight = (self.projection if self.variant == "official" else self.match_projection).weight
        if features.dtype != weight.dtype and not _autocast_enabled(features.device.type):
            features = features.to(weight.dtype)
        if self.variant == "official":
            projected = _kernel_dtype(self.projection(features))
            half = self.projection_dim // 2
            return _Projected(_unit(projected[..., :half], self.eps), _unit(projected[..., half:], self.eps), None)
        delete = None if self.delete_projection is None else \
            _unit(_kernel_dtype(self.delete_projection(features)), self.eps)
        return _Projected(_unit(_kernel_dtype(self.match_projection(features)), self.eps),
                          _unit(_kernel_dtype(self.insert_projection(features)), self.eps), delete)

    def _gap(self, cosine: Tensor) -> Tensor:
        return cosine - 1 if self.insert_activation == "penalty" else cosine

    def forward_terms(self, features_a: Tensor, features_b: Tensor, background_a: Tensor, background_b: Tensor,
                      is_positive: Tensor, *, lengths_a: Tensor | None = None, lengths_b: Tensor | None = None,
                      background_lengths_a: Tensor | None = None,
                      background_lengths_b: Tensor | None = None) -> FSDTerms:
        """The loss and the three per-pair similarities; arguments as :class:`FSDLoss`."""
        check_pair_sequences([("features_a", features_a), ("features_b", features_b),
                              ("background_a", background_a), ("background_b", background_b)], self.feature_dim)
        check_is_positive(is_positive, features_a.shape[0], features_a, self.validate_args)
        # Action and background of a video go through the projections together (one matrix product each).
        return self._score(self._project(torch.cat([features_a, background_a], dim=1)),
                           self._project(torch.cat([features_b, background_b], dim=1)), features_a.shape[1],
                           features_b.shape[1], is_positive != 0, lengths_a, lengths_b, background_lengths_a,
                           background_lengths_b)

    def forward_videos(self, actions: Tensor, backgrounds: Tensor, index_a: Tensor, index_b: Tensor,
                       is_positive: Tensor, *, action_lengths: Tensor | None = None,
                       background_lengths: Tensor | None = None) -> FSDTerms:
        """:meth:`forward_terms` for pairs of videos of one batch, projecting each video once.

        Pair p contrasts video ``index_a[p]`` with video ``index_b[p]``; the result equals
        ``forward_terms(actions[index_a], actions[index_b], backgrounds[index_a], backgrounds[index_b], ...)``
        but projects and normalises B videos instead of 4 P sequences (what :class:`~ftcl_plugin.FTCL` uses).

        Args:
            actions: Action proposals of every video, (B, M, D).
            backgrounds: Background proposals of every video, (B, M', D).
            index_a: (P,) int64 indices of the first videos.
            index_b: (P,) int64 indices of the second videos.
            is_positive: (P,) pair labels.
            action_lengths: (B,) true lengths of ``actions``, optional.
            background_lengths: (B,) true lengths of ``backgrounds``, optional.

        Returns:
            :class:`FSDTerms` over the P pairs.
        """
        check_pair_sequences([("actions", actions), ("backgrounds", backgrounds)], self.feature_dim)
        _check_pair_indices(index_a, index_b, is_positive, actions, self.validate_args)
        videos = self._project(torch.cat([actions, backgrounds], dim=1))
        return self._score(_take(videos, index_a), _take(videos, index_b), actions.shape[1], actions.shape[1],
                           is_positive != 0, _take_lengths(action_lengths, index_a),
                           _take_lengths(action_lengths, index_b), _take_lengths(background_lengths, index_a),
                           _take_lengths(background_lengths, index_b))

    def _score(self, first: _Projected, second: _Projected, actions_a: int, actions_b: int, positive: Tensor,
               lengths_a: Tensor | None, lengths_b: Tensor | None, background_lengths_a: Tensor | None,
               background_lengths_b: Tensor | None) -> FSDTerms:
        """Score the pairs; ``first`` / ``second`` hold action then background snippets along dim 1."""
        if first.match.shape[0] == 0:
            # No pairs: a zero that still reaches every projection and input (sums of empty tensors are 0).
            zero = sum(part.sum() for group in (first, second) for part in group if part is not None)
            empty = first.match.new_zeros(0)
            return FSDTerms(zero, empty, empty, empty, positive.new_zeros(0, dtype=torch.bool))
        # One product per residual covers the action/background blocks of all three comparisons.
        match = _cosine(first.match, second.match)
        action_a, background_a = slice(None, actions_a), slice(actions_a, None)
        action_b, background_b = slice(None, actions_b), slice(actions_b, None)
        blocks = [(action_a, action_b, lengths_a, lengths_b),
                  (action_a, background_b, lengths_a, background_lengths_b),
                  (background_a, action_b, background_lengths_a, lengths_b)]
        if self.similarity is not None:
            action_action, action_background, background_action = (
                self.similarity(match[:, rows, cols], la, lb) for rows, cols, la, lb in blocks)
        else:
            insert = self._gap(_cosine(first.insert, second.insert))
            delete = None
            if first.delete is not None and second.delete is not None:
                delete = self._gap(_cosine(first.delete, second.delete))
            action_action, action_background, background_action = self._similarities(match, insert, delete, blocks)
        if self.length_normalized:
            pairs, size = action_action.shape[0], match.shape[1:]
            action_action = action_action / _mean_length(lengths_a, lengths_b, actions_a, actions_b, pairs)
            action_background = action_background / _mean_length(
                lengths_a, background_lengths_b, actions_a, size[1] - actions_b, pairs)
            background_action = background_action / _mean_length(
                background_lengths_a, lengths_b, size[0] - actions_a, actions_b, pairs)
        if self.variant == "official":
            chosen = torch.where(positive, action_action, action_background)
            loss = _release_mean_difference(chosen, positive)
            active = torch.ones_like(positive)
        else:
            scale = self.ranking_temperature
            margins = torch.stack(((action_background - action_action) / scale,
                                   (background_action - action_action) / scale))
            per_pair = F.softplus(margins).sum(0)
            count = positive.sum().clamp(min=1).to(per_pair.dtype)
            loss = torch.where(positive, per_pair, torch.zeros_like(per_pair)).sum() / count
            active = positive & (torch.sigmoid(margins.detach()).amax(0) >= ACTIVE_SLOPE)
        return FSDTerms(loss, action_action, action_background, background_action, active)

    def _similarities(self, match: Tensor, insert: Tensor, delete: Tensor | None,
                      blocks: list[tuple[slice, slice, Tensor | None, Tensor | None]]) -> list[Tensor]:
        """FSD similarity of each (rows, columns, lengths_a, lengths_b) block of the residual matrices.

        Blocks of one shape (the default 5 + 5 proposals) run as one kernel call over 3 P sequences.
        """
        parts = [(match[:, rows, cols], insert[:, rows, cols], None if delete is None else delete[:, rows, cols],
                  lengths_a, lengths_b) for rows, cols, lengths_a, lengths_b in blocks]
        stackable = (len({part[0].shape for part in parts}) == 1
                     and all(len({part[i] is None for part in parts}) == 1 for i in (3, 4)))
        if not stackable:
            return [self._fsd(*part) for part in parts]
        return list(self._fsd(*(_stack([part[i] for part in parts]) for i in range(5))).chunk(len(parts)))

    def _fsd(self, match: Tensor, insert: Tensor, delete: Tensor | None, lengths_a: Tensor | None,
             lengths_b: Tensor | None) -> Tensor:
        return fsd_similarity(match, insert, delete, gamma=self.gamma, lengths_a=lengths_a, lengths_b=lengths_b,
                              validate_args=self.validate_args)

    def forward(self, features_a: Tensor, features_b: Tensor, background_a: Tensor, background_b: Tensor,
                is_positive: Tensor, *, lengths_a: Tensor | None = None, lengths_b: Tensor | None = None,
                background_lengths_a: Tensor | None = None, background_lengths_b: Tensor | None = None) -> Tensor:
        """The scalar FSD loss; see the class docstring."""
        return self.forward_terms(features_a, features_b, background_a, background_b, is_positive,
                                  lengths_a=lengths_a, lengths_b=lengths_b,
                                  background_lengths_a=background_lengths_a,
                                  background_lengths_b=background_lengths_b).loss


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
        check_choice(variant, "variant", _VARIANTS)
        _check_measure(similarity, variant)
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
        first, second = _kernel_dtype(features_a), _kernel_dtype(features_b)
        if features_a.shape[0] == 0:
            return self._empty(first.sum() + second.sum(), first)
        return self._score(_cosine(_unit(first, self.eps), _unit(second, self.eps)), is_positive != 0, lengths_a,
                           lengths_b)

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
            probability = score.clamp(self.probability_eps, 1 - self.probability_eps)
            loss = -torch.where(positive, probability.log(), torch.log1p(-probability)).mean()
            return LCSTerms(loss, score, score, score.detach() > 0,
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
            loss = _release_mean_difference(length, positive)
        else:
            probability = normalized.clamp(self.probability_eps, 1 - self.probability_eps)
            # Written out rather than F.binary_cross_entropy, which refuses to run under autocast.
            loss = -torch.where(positive, probability.log(), torch.log1p(-probability)).mean()
        return LCSTerms(loss, length, normalized, length.detach() > 0,
                        torch.as_tensor(threshold, dtype=similarity.dtype, device=similarity.device))

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
        _check_pair_indices(index_a, index_b, is_positive, snippets, self.validate_args)
        # Normalise each video once, then index the pairs: no normalisation of (and backward through) P copies.
        unit = _unit(_kernel_dtype(snippets), self.eps)
        first, second = _rows(unit, index_a), _rows(unit, index_b)
        if index_a.shape[0] == 0:
            return self._empty(first.sum() + second.sum(), unit)
        return self._score(_cosine(first, second), is_positive != 0, _take_lengths(lengths, index_a),
                           _take_lengths(lengths, index_b))

    def forward(self, features_a: Tensor, features_b: Tensor, is_positive: Tensor, *,
                lengths_a: Tensor | None = None, lengths_b: Tensor | None = None) -> Tensor:
        """The scalar LCS loss; see the class docstring."""
        return self.forward_terms(features_a, features_b, is_positive, lengths_a=lengths_a,
                                  lengths_b=lengths_b).loss
