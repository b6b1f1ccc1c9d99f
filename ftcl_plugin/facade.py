"""The two-line entry point: ``FTCL`` wires a miner, selectors and the two losses together (no math here)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from ._checks import check_choice, check_flag, check_labels, check_number, check_snippet_batch
from .losses import FSDLoss, LCSLoss, Variant
from .miners import PairMiner, Pairs
from .selectors import ActionSelector, BackgroundSelector, select_all

__all__ = ["FTCL", "FTCLTerms"]

# Variant defaults, one place. Weights: paper Eq. 8 (unit weights) / release loss_lamb_fsd, loss_lamb_lcs.
_WEIGHTS = {"paper": (1.0, 1.0), "official": (0.8, 0.1)}
# FSD proposal length: the release's fsd_len (the paper is silent). LCS top-J: paper Sec. 4.1 for THUMOS14
# (use ActionSelector(10) for ActivityNet); the release has 30 everywhere.
FSD_SNIPPETS = 5
LCS_SNIPPETS = 30


class FTCLTerms(NamedTuple):
    """What :meth:`FTCL.forward_terms` computed.

    Shape:
        - loss: (), ``fsd_weight * fsd + lcs_weight * lcs`` (skipped terms left out).
        - fsd, lcs: (), the unweighted terms (0 when a term is skipped by a zero weight).
        - num_positive_pairs, num_negative_pairs: (), int64, the pairs the miner kept.
    """

    loss: Tensor
    fsd: Tensor
    lcs: Tensor
    num_positive_pairs: Tensor
    num_negative_pairs: Tensor


class FTCL(nn.Module):
    """Fine-grained Temporal Contrastive Learning as one loss module: FSD contrasting plus LCS contrasting.

    Two lines add it to a weakly-supervised temporal action localization loop::

        ftcl = FTCL(feature_dim=2048)                     # once, next to the model
        loss = loss + ftcl(features, attention, labels)   # every training step

    ``features`` is the per-snippet embedding the backbone learns (e.g. ACM-Net's conv embedding before
    dropout), ``attention`` its action attention (any real scores, higher = more action-like; only its order
    matters to the default selectors, and it receives no gradient), ``labels`` the multi-hot video labels.

    Per call: ``miner`` mines pairs in the batch; ``action_selector`` / ``background_selector`` pick each video's
    FSD proposals and ``lcs_selector`` its top-J snippets; ``fsd_loss`` and ``lcs_loss`` score the pairs. A batch
    without usable pairs (e.g. B = 1) gives a zero that keeps the graph connected, never NaN.

    FTCL has trainable parameters (the FSD projections). Register it on the model **before** building the
    optimizer so they are trained: ``model.ftcl = FTCL(2048)``, then ``torch.optim.Adam(model.parameters())``
    (or add ``ftcl.parameters()`` to the optimizer yourself).

    Defaults per ``variant``:

    - ``"paper"``: pairs share a class; 5 top-attention action snippets and 5 lowest-attention background
      snippets for FSD; top-30 for LCS; paper losses (see :mod:`ftcl_plugin.losses`); weights 1.0 and 1.0
      (Eq. 8).
    - ``"official"``: the authors' release: pairs with identical label sets; background = attention ranks 6-10;
      release losses; weights 0.8 (FSD) and 0.1 (LCS).

    Args:
        feature_dim: Size D of ``features``.
        variant: ``"paper"`` or ``"official"``; sets every default below.
        fsd_weight: Weight of the FSD term, ``>= 0``; ``None`` means the variant's; 0 skips the term (and builds
            no projections).
        lcs_weight: Weight of the LCS term, ``>= 0``; ``None`` means the variant's; 0 skips the term.
        miner: A :class:`~ftcl_plugin.PairMiner` (or any module mapping labels to :class:`~ftcl_plugin.Pairs`).
        action_selector: FSD action proposals (default ``ActionSelector(5)``), any selector module.
        background_selector: FSD background proposals (default ``BackgroundSelector(5)``, official
            ``BackgroundSelector(5, rule="next")``).
        lcs_selector: LCS snippets (default ``ActionSelector(30)``; ``ActionSelector(10)`` for ActivityNet).
        fsd_loss: An :class:`~ftcl_plugin.FSDLoss` for ``feature_dim`` (default built for the variant).
        lcs_loss: An :class:`~ftcl_plugin.LCSLoss` (default built for the variant).
        validate_args: Also run the value checks (multi-hot labels, lengths, finite features); forces syncs.

    Shape:
        - features: (B, T, D) float; attention: (B, T) float; labels: (B, C) multi-hot (float, int or bool);
          lengths: (B,) int64 true lengths of a padded batch, optional.
        - Output: () scalar in the dtype of the losses.

    Returns:
        ``forward``: the weighted FTCL loss to add to the baseline's; ``forward_terms``: :class:`FTCLTerms`.

    Raises:
        TypeError: If an input has the wrong type or dtype.
        ValueError: If shapes, feature size or devices disagree, the batch is empty, or an option is out of
            range.

    Example:
        >>> import torch
        >>> from ftcl_plugin import FTCL
        >>> generator = torch.Generator().manual_seed(0)
        >>> features = torch.randn(4, 40, 2048, generator=generator)   # (B, T, D) snippet embedding
        >>> attention = torch.rand(4, 40, generator=generator)         # (B, T) action attention
        >>> labels = torch.tensor([[1., 0.], [1., 0.], [0., 1.], [0., 1.]])
        >>> loss = torch.tensor(0.0)                      # the baseline's own loss
        >>> ftcl = FTCL(feature_dim=2048)
        >>> loss = loss + ftcl(features, attention, labels)
        >>> loss.shape, bool(torch.isfinite(loss))
        (torch.Size([]), True)
    """

    def __init__(self, feature_dim: int, *, variant: Variant = "paper", fsd_weight: float | None = None,
                 lcs_weight: float | None = None, miner: nn.Module | None = None,
                 action_selector: nn.Module | None = None, background_selector: nn.Module | None = None,
                 lcs_selector: nn.Module | None = None, fsd_loss: FSDLoss | None = None,
                 lcs_loss: LCSLoss | None = None, validate_args: bool = False) -> None:
        super().__init__()
        check_number(feature_dim, "feature_dim", minimum=1, integer=True)
        check_choice(variant, "variant", ("paper", "official"))
        default_fsd, default_lcs = _WEIGHTS[variant]
        fsd_weight = default_fsd if fsd_weight is None else fsd_weight
        lcs_weight = default_lcs if lcs_weight is None else lcs_weight
        check_number(fsd_weight, "fsd_weight", minimum=0.0)
        check_number(lcs_weight, "lcs_weight", minimum=0.0)
        check_flag(validate_args, "validate_args")
        if fsd_loss is not None and fsd_loss.feature_dim != feature_dim:
            raise ValueError(f"`fsd_loss` must be built for feature_dim={feature_dim}, but has "
                             f"feature_dim={fsd_loss.feature_dim}.")
        official = variant == "official"
        self.feature_dim = feature_dim
        self.variant = variant
        self.fsd_weight = float(fsd_weight)
        self.lcs_weight = float(lcs_weight)
        self.validate_args = validate_args
        self.miner = miner if miner is not None else PairMiner(
            positive_rule="identical_labels" if official else "shared_class")
        self.action_selector = action_selector if action_selector is not None else ActionSelector(FSD_SNIPPETS)
        self.background_selector = background_selector if background_selector is not None else \
            BackgroundSelector(FSD_SNIPPETS, rule="next" if official else "lowest")
        self.lcs_selector = lcs_selector if lcs_selector is not None else ActionSelector(LCS_SNIPPETS)
        if fsd_loss is None and self.fsd_weight != 0:
            fsd_loss = FSDLoss(feature_dim, variant=variant)
        self.fsd_loss = fsd_loss
        self.lcs_loss = lcs_loss if lcs_loss is not None else LCSLoss(variant=variant)

    def extra_repr(self) -> str:
        return (f"feature_dim={self.feature_dim}, variant={self.variant!r}, fsd_weight={self.fsd_weight}, "
                f"lcs_weight={self.lcs_weight}")

    def forward_terms(self, features: Tensor, attention: Tensor, labels: Tensor, *,
                      lengths: Tensor | None = None) -> FTCLTerms:
        """The loss, its two terms and the pair counts; arguments as :class:`FTCL`."""
        check_snippet_batch(features, attention, lengths, self.validate_args)
        if features.shape[2] != self.feature_dim:
            raise ValueError(f"`features` must have shape (B, T, {self.feature_dim}), but got "
                             f"({', '.join(str(d) for d in features.shape)}).")
        check_labels(labels, features.shape[0], features, self.validate_args)
        pairs: Pairs = self.miner(labels)
        first, second, positive = pairs.index_a, pairs.index_b, pairs.is_positive
        num_positive = positive.sum()
        num_negative = positive.numel() - num_positive

        use_fsd = self.fsd_weight != 0 and self.fsd_loss is not None
        use_lcs = self.lcs_weight != 0
        wanted = ([self.action_selector, self.background_selector] if use_fsd else []) + \
            ([self.lcs_selector] if use_lcs else [])
        # All selections read the features together: one gather, so the backward zero-fills and scatters into
        # one (B, T, D) gradient instead of one per selector (that fill alone was a third of FTCL's time).
        selections = iter(select_all(wanted, features, attention, lengths=lengths))
        fsd = lcs = None
        if use_fsd:
            action, background = next(selections), next(selections)
            fsd = self.fsd_loss.forward_videos(action.features, background.features, first, second, positive,
                                               action_lengths=action.lengths,
                                               background_lengths=background.lengths).loss
        if use_lcs:
            snippets = next(selections)
            lcs = self.lcs_loss.forward_videos(snippets.features, first, second, positive,
                                               lengths=snippets.lengths).loss

        reference = fsd if fsd is not None else lcs
        if reference is None:
            # Both terms switched off: a zero that still reaches the features, as a host loop may expect.
            zero = features.sum() * 0
            return FTCLTerms(zero, zero.detach(), zero.detach(), num_positive, num_negative)
        loss = torch.zeros_like(reference)
        if fsd is not None:
            loss = loss + self.fsd_weight * fsd
        if lcs is not None:
            loss = loss + self.lcs_weight * lcs
        skipped = torch.zeros_like(reference).detach()
        return FTCLTerms(loss, skipped if fsd is None else fsd, skipped if lcs is None else lcs,
                         num_positive, num_negative)

    def forward(self, features: Tensor, attention: Tensor, labels: Tensor, *,
                lengths: Tensor | None = None) -> Tensor:
        """The scalar FTCL loss to add to the baseline's loss; see the class docstring."""
        return self.forward_terms(features, attention, labels, lengths=lengths).loss
