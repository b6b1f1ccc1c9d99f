"""FSD contrasting (Sec. 3.2 of the paper): learned residuals, the FSD recursion, and its ranking loss."""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

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
    autocast_enabled,
    check_measure,
    check_pair_indices,
    mean_length,
    pair_cosines,
    release_mean_difference,
    stack_parts,
    take_lengths,
    to_kernel_dtype,
    unit_rows,
    video_rows,
)
from .functional import fsd_similarity

# A softplus whose slope sigmoid(x / eta) fell below this sends almost no gradient: the pair counts as saturated.
ACTIVE_SLOPE = 0.01


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


class _Projected(NamedTuple):
    """Unit-norm projections of snippets: f_mu, f_g and f_h (``None`` when f_h = f_g)."""

    match: Tensor
    insert: Tensor
    delete: Tensor | None


def _take(projected: _Projected, index: Tensor) -> _Projected:
    return _Projected(*(None if part is None else video_rows(part, index) for part in projected))


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
        >>> terms = loss_fn.forward_terms(actions[0], actions[1], backgrounds[0], backgrounds[1],
        ...                               torch.tensor([True, True, False]))
        >>> terms.loss.shape, terms.action_action.shape, bool(terms.active[2])   # a negative pair is never active
        (torch.Size([]), torch.Size([3]), False)

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
        check_choice(variant, "variant", VARIANTS)
        check_measure(similarity, variant)
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
            return _Projected(unit_rows(to_kernel_dtype(features), self.eps), None, None)
        weight = (self.projection if self.variant == "official" else self.match_projection).weight
        if features.dtype != weight.dtype and not autocast_enabled(features.device.type):
            features = features.to(weight.dtype)
        if self.variant == "official":
            projected = to_kernel_dtype(self.projection(features))
            half = self.projection_dim // 2
            return _Projected(unit_rows(projected[..., :half], self.eps), unit_rows(projected[..., half:], self.eps),
                              None)
        delete = None if self.delete_projection is None else \
            unit_rows(to_kernel_dtype(self.delete_projection(features)), self.eps)
        return _Projected(unit_rows(to_kernel_dtype(self.match_projection(features)), self.eps),
                          unit_rows(to_kernel_dtype(self.insert_projection(features)), self.eps), delete)

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
        check_pair_indices(index_a, index_b, is_positive, actions, self.validate_args)
        videos = self._project(torch.cat([actions, backgrounds], dim=1))
        return self._score(_take(videos, index_a), _take(videos, index_b), actions.shape[1], actions.shape[1],
                           is_positive != 0, take_lengths(action_lengths, index_a),
                           take_lengths(action_lengths, index_b), take_lengths(background_lengths, index_a),
                           take_lengths(background_lengths, index_b))

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
        match = pair_cosines(first.match, second.match)
        action_a, background_a = slice(None, actions_a), slice(actions_a, None)
        action_b, background_b = slice(None, actions_b), slice(actions_b, None)
        blocks = [(action_a, action_b, lengths_a, lengths_b),
                  (action_a, background_b, lengths_a, background_lengths_b),
                  (background_a, action_b, background_lengths_a, lengths_b)]
        if self.similarity is not None:
            action_action, action_background, background_action = (
                self.similarity(match[:, rows, cols], la, lb) for rows, cols, la, lb in blocks)
        else:
            insert = self._gap(pair_cosines(first.insert, second.insert))
            delete = None
            if first.delete is not None and second.delete is not None:
                delete = self._gap(pair_cosines(first.delete, second.delete))
            action_action, action_background, background_action = self._similarities(match, insert, delete, blocks)
        if self.length_normalized:
            pairs, size = action_action.shape[0], match.shape[1:]
            action_action = action_action / mean_length(lengths_a, lengths_b, actions_a, actions_b, pairs)
            action_background = action_background / mean_length(
                lengths_a, background_lengths_b, actions_a, size[1] - actions_b, pairs)
            background_action = background_action / mean_length(
                background_lengths_a, lengths_b, size[0] - actions_a, actions_b, pairs)
        if self.variant == "official":
            chosen = torch.where(positive, action_action, action_background)
            loss = release_mean_difference(chosen, positive)
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
        return list(self._fsd(*(stack_parts([part[i] for part in parts]) for i in range(5))).chunk(len(parts)))

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
