"""The two-line entry point: ``FTCL`` wires a miner, selectors and the two losses together (no math here).

Besides the wiring it owns what a host loop should not have to write: the warm-up schedule of its weight, the
per-step report ``last_terms``, one warning when a term goes quiet, and a state that stays out of the host's
checkpoints.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from ._checks import check_choice, check_flag, check_labels, check_number, check_snippet_batch
from ._observe import FTCLInactiveWarning, GradientShare, InactivityMonitor
from .losses import FSDLoss, LCSLoss, Variant
from .miners import PairMiner, Pairs
from .selectors import ActionSelector, BackgroundSelector, ProposalSelector, Selection, select_all

__all__ = ["FTCL", "FTCLInactiveWarning", "FTCLTerms"]

# Defaults, one place. Weights: paper Eq. 8 (unit weights) / release loss_lamb_fsd, loss_lamb_lcs.
_WEIGHTS = {"paper": (1.0, 1.0), "official": (0.8, 0.1)}
# FSD proposal length: the release's fsd_len (the paper is silent). LCS top-J: paper Sec. 4.1 for THUMOS14
# (use ActionSelector(10) for ActivityNet); the release has 30 everywhere.
FSD_SNIPPETS = 5
LCS_SNIPPETS = 30
# Training calls over which the weight ramps linearly from 0 to 1 (benchmarks/bench_host.py: at full weight
# from the first step FTCL's gradient on a fresh host's embedding is 9x to 765x the host's own).
WARMUP_STEPS = 100
# FTCL's gradient on the embedding is kept within this multiple of the host's own: an auxiliary loss at a tenth
# of the main loss's pull. At 1.0 (an equal share) FTCL cost CoLA 4.3 points of avg mAP on the built-in
# synthetic data, at 0.1 it cost 0.45 (3 paired seeds, docs/losses.md); both keep FTCL alive.
MAX_GRAD_RATIO = 0.1
# Paper variant only, the two liveness options. FSD: similarities per snippet of path (about [-1, 2.2]), ranked
# at temperature 1, so a ranking term's slope never falls below sigmoid(-3.2) = 0.04 (FSDLoss docstring).
# LCS: at least this fraction of a batch's similarity cells match (LCSLoss.min_match_fraction).
FSD_RANKING_TEMPERATURE = 1.0
MIN_MATCH_FRACTION = 0.05
# Consecutive inactive training steps before the one warning per term.
INACTIVE_PATIENCE = 200


class FTCLTerms(NamedTuple):
    """What one call of :class:`FTCL` computed (``forward_terms``, and ``FTCL.last_terms`` detached).

    Shape:
        - loss: (), ``weight * (fsd_weight * fsd + lcs_weight * lcs)`` (skipped terms left out): what
          ``forward`` returns.
        - fsd, lcs: (), the unweighted terms (0 when a term is skipped by a zero weight).
        - num_positive_pairs, num_negative_pairs: (), int64, the pairs the miner kept.
        - weight: (), the warm-up schedule's factor applied to ``loss`` (1 after the warm-up).
        - fsd_active_fraction: (), the fraction of positive pairs whose FSD loss still sends gradient (paper:
          a ranking term with softplus slope >= 0.01; official: every pair). 0 without positive pairs.
        - lcs_active_fraction: (), the fraction of positive pairs whose LCS path holds at least one match
          (only those send LCS gradient). 0 without positive pairs.
        - lcs_threshold: (), the LCS match threshold used for this batch.
        - grad_ratio: (), ``||d loss / d features|| / ||d (everything else) / d features||``: FTCL's gradient on
          the host's embedding over the host's own. Filled in by the backward pass (NaN until then, when
          ``features`` needs no gradient or the call was not a training call, and while the host's own loss
          has sent ``features`` no gradient at all).
    """

    loss: Tensor
    fsd: Tensor
    lcs: Tensor
    num_positive_pairs: Tensor
    num_negative_pairs: Tensor
    weight: Tensor
    fsd_active_fraction: Tensor
    lcs_active_fraction: Tensor
    lcs_threshold: Tensor
    grad_ratio: Tensor


class FTCL(nn.Module):
    """Fine-grained Temporal Contrastive Learning as one loss module: FSD contrasting plus LCS contrasting.

    Two lines add it to a weakly-supervised temporal action localization loop::

        model.ftcl = FTCL(feature_dim=2048)                     # once, before building the optimizer
        loss = loss + model.ftcl(features, attention, labels)   # every training step

    ``features`` is the per-snippet embedding the backbone learns (e.g. ACM-Net's conv embedding before
    dropout), ``attention`` its action attention (any real scores, higher = more action-like; only its order
    matters to the default selectors, and it receives no gradient), ``labels`` the multi-hot video labels.

    Per call: ``miner`` mines pairs in the batch; ``action_selector`` / ``background_selector`` pick each video's
    FSD proposals and ``lcs_selector`` its top-J snippets; ``fsd_loss`` and ``lcs_loss`` score the pairs. A batch
    without usable pairs (e.g. B = 1) gives a zero that keeps the graph connected, never NaN.

    **Safe by default.** At full weight from the first step, FTCL's gradient on a fresh host's embedding is
    one to two orders of magnitude larger than the host's own, and the host's own loss then trains far slower.
    So FTCL owns its weight: ``weight = min(ramp, cap)``.

    - ``ramp`` rises linearly from 0 at the first training call to 1 at call ``warmup_steps + 1`` (training
      calls: training mode with gradients enabled; FTCL counts them itself and keeps the count in its state).
      The first call contributes nothing and only measures.
    - ``cap`` keeps FTCL's gradient on ``features`` within ``max_grad_ratio`` (0.1) times the host's own. FTCL
      measures both in every backward pass (a probe on ``features``, no second backward, no device sync) and
      sets each call's cap from running means of the two norms.

    A host whose loss sends no gradient to ``features`` (e.g. FTCL given an all_gather copy) leaves the cap
    nothing to compare with: FTCL then runs at its ramp weight and warns once.
    ``warmup_steps=0`` and ``max_grad_ratio=None`` turn each off. Calls in ``eval()`` mode or under
    ``torch.no_grad()`` change neither and use the weight of the last training call.

    **Alive by default** (``variant="paper"``). Two options where the paper is silent keep both terms sending
    gradient on embeddings other than the authors'. FSD: the similarities are taken per snippet of alignment
    path and ranked at temperature 1 (``FSDLoss(d, length_normalized=True, ranking_temperature=1.0)``); their
    gap is then bounded, so a ranking term can never saturate (with raw sums at temperature 0.2 it saturates
    within tens of steps once the projections separate action from background). LCS: the threshold drops below
    0.92 for a batch in which fewer than 5% of the snippet pairs reach it (``LCSLoss(min_match_fraction=0.05)``;
    on embeddings whose cosines never reach 0.92 the term is otherwise silent). The paper's exact equations:
    ``FTCL(d, warmup_steps=0, max_grad_ratio=None, fsd_loss=FSDLoss(d), lcs_loss=LCSLoss())``.

    **Observable.** After every call ``last_terms`` holds that call's :class:`FTCLTerms`, detached: both terms,
    the pair counts, the schedule weight, the fraction of positive pairs each term still reaches, the LCS
    threshold used and (after ``backward``) FTCL's share of the gradient on ``features``. When a term reaches no
    positive pair for ``inactive_patience`` consecutive training steps, one :class:`FTCLInactiveWarning` says
    which and what to try.

    **Out of the host's checkpoints.** Registered as ``model.ftcl``, FTCL's parameters train with the model's
    optimizer, but ``model.state_dict()`` does not contain them, and ``model.load_state_dict(state)`` neither
    needs nor rejects them: the host's own evaluation code loads checkpoints saved with FTCL attached, and a
    plain pre-trained host checkpoint loads into host + FTCL, both with ``strict=True``. For an exact resume save
    FTCL's own state beside the model's: ``{"model": model.state_dict(), "ftcl": model.ftcl.state_dict()}``
    (projections, schedule position, gradient-share estimates and the miner's random generator), and restore it with
    ``model.ftcl.load_state_dict(...)``.

    Defaults per ``variant``:

    - ``"paper"``: pairs share a class; 5 top-attention action snippets and 5 lowest-attention background
      snippets for FSD; top-30 for LCS; the paper's losses with the two liveness options above; weights 1.0 and
      1.0 (Eq. 8).
    - ``"official"``: the authors' release: pairs with identical label sets; background = attention ranks 6-10;
      release losses, exactly; weights 0.8 (FSD) and 0.1 (LCS).

    Args:
        feature_dim: Size D of ``features``.
        variant: ``"paper"`` or ``"official"``; sets every default below.
        fsd_weight: Weight of the FSD term, ``>= 0``; ``None`` means the variant's; 0 skips the term (and builds
            no projections).
        lcs_weight: Weight of the LCS term, ``>= 0``; ``None`` means the variant's; 0 skips the term.
        warmup_steps: Training calls over which the loss weight ramps linearly from 0 to 1; 0 disables the ramp.
        max_grad_ratio: Cap on FTCL's gradient on ``features`` relative to the host's, ``> 0``; ``None`` disables
            the cap (the ratio is still measured and reported).
        miner: A :class:`~ftcl_plugin.PairMiner` (or any module mapping labels to :class:`~ftcl_plugin.Pairs`).
        action_selector: FSD action proposals (default ``ActionSelector(5)``), any selector module.
        background_selector: FSD background proposals (default ``BackgroundSelector(5)``, official
            ``BackgroundSelector(5, rule="next")``).
        lcs_selector: LCS snippets (default ``ActionSelector(30)``; ``ActionSelector(10)`` for ActivityNet).
        fsd_loss: An :class:`~ftcl_plugin.FSDLoss` for ``feature_dim`` (default built for the variant).
        lcs_loss: An :class:`~ftcl_plugin.LCSLoss` (default built for the variant).
        inactive_patience: Consecutive inactive training steps before the warning; 0 disables it.
        validate_args: Also run the value checks (multi-hot labels, pair labels, lengths, finite features) on
            non-CPU tensors, which forces syncs; on CPU tensors they always run. Passed to the default
            collaborators.

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
        >>> loss.shape, bool(torch.isfinite(loss)), float(ftcl.last_terms.weight)   # the ramp starts at 0
        (torch.Size([]), True, 0.0)
    """

    def __init__(self, feature_dim: int, *, variant: Variant = "paper", fsd_weight: float | None = None,
                 lcs_weight: float | None = None, warmup_steps: int = WARMUP_STEPS,
                 max_grad_ratio: float | None = MAX_GRAD_RATIO, miner: nn.Module | None = None,
                 action_selector: nn.Module | None = None, background_selector: nn.Module | None = None,
                 lcs_selector: nn.Module | None = None,
                 fsd_loss: FSDLoss | None = None, lcs_loss: LCSLoss | None = None,
                 inactive_patience: int = INACTIVE_PATIENCE, validate_args: bool = False) -> None:
        super().__init__()
        check_number(feature_dim, "feature_dim", minimum=1, integer=True)
        check_choice(variant, "variant", ("paper", "official"))
        default_fsd, default_lcs = _WEIGHTS[variant]
        fsd_weight = default_fsd if fsd_weight is None else fsd_weight
        lcs_weight = default_lcs if lcs_weight is None else lcs_weight
        check_number(fsd_weight, "fsd_weight", minimum=0.0)
        check_number(lcs_weight, "lcs_weight", minimum=0.0)
        check_number(warmup_steps, "warmup_steps", minimum=0, integer=True)
        if max_grad_ratio is not None:
            check_number(max_grad_ratio, "max_grad_ratio", minimum=0.0, strict_minimum=True)
        check_number(inactive_patience, "inactive_patience", minimum=0, integer=True)
        check_flag(validate_args, "validate_args")
        if fsd_loss is not None and fsd_loss.feature_dim != feature_dim:
            raise ValueError(f"`fsd_loss` must be built for feature_dim={feature_dim}, but has "
                             f"feature_dim={fsd_loss.feature_dim}.")
        official = variant == "official"
        self.feature_dim = feature_dim
        self.variant = variant
        self.fsd_weight = float(fsd_weight)
        self.lcs_weight = float(lcs_weight)
        self.warmup_steps = warmup_steps
        self.max_grad_ratio = max_grad_ratio
        self.validate_args = validate_args
        checks = {"validate_args": validate_args}
        self.miner = miner if miner is not None else PairMiner(
            positive_rule="identical_labels" if official else "shared_class", **checks)
        self.action_selector = action_selector if action_selector is not None else \
            ActionSelector(FSD_SNIPPETS, **checks)
        self.background_selector = background_selector if background_selector is not None else \
            BackgroundSelector(FSD_SNIPPETS, rule="next" if official else "lowest", **checks)
        self.lcs_selector = lcs_selector if lcs_selector is not None else ActionSelector(LCS_SNIPPETS, **checks)
        if fsd_loss is None and self.fsd_weight != 0:
            fsd_loss = FSDLoss(feature_dim, variant=variant, **checks) if official else FSDLoss(
                feature_dim, length_normalized=True, ranking_temperature=FSD_RANKING_TEMPERATURE, **checks)
        self.fsd_loss = fsd_loss
        self.lcs_loss = lcs_loss if lcs_loss is not None else \
            LCSLoss(variant=variant, min_match_fraction=None if official else MIN_MATCH_FRACTION, **checks)
        self.training_calls = 0
        self.last_terms: FTCLTerms | None = None
        self._monitor = InactivityMonitor(inactive_patience)
        self._share = GradientShare(max_grad_ratio)
        self._last_weight: Tensor | None = None
        self._short_warned = False
        self.register_load_state_dict_post_hook(_forgive_absent_state)

    def extra_repr(self) -> str:
        return (f"feature_dim={self.feature_dim}, variant={self.variant!r}, fsd_weight={self.fsd_weight}, "
                f"lcs_weight={self.lcs_weight}, warmup_steps={self.warmup_steps}, "
                f"max_grad_ratio={self.max_grad_ratio}")

    # ---------------------------------------------------------------------------------------------- schedule

    def schedule_weight(self, calls: int | None = None) -> float:
        """The ramp after ``calls`` training calls (default: so far): ``clip((calls - 1) / warmup_steps, 0, 1)``."""
        calls = self.training_calls if calls is None else calls
        return 1.0 if self.warmup_steps == 0 else min(1.0, max(0.0, (calls - 1) / self.warmup_steps))

    def _weight(self, learning: bool, device: torch.device) -> Tensor:
        """This call's weight: the ramp, capped by the measured gradient share (training calls only)."""
        if not learning and self._last_weight is not None:
            return self._last_weight.to(device)
        weight = torch.tensor(self.schedule_weight(), dtype=torch.float64, device=device)
        cap = self._share.cap() if learning else None
        if cap is not None:
            weight = torch.minimum(weight, cap.to(device))
        if learning:
            self._last_weight = weight
        return weight

    # ---------------------------------------------------------------------------------------------- forward

    def forward_terms(self, features: Tensor, attention: Tensor, labels: Tensor, *,
                      lengths: Tensor | None = None) -> FTCLTerms:
        """The loss, its terms and their activity; arguments as :class:`FTCL`. Also stored in ``last_terms``."""
        check_snippet_batch(features, attention, lengths, self.validate_args)
        if features.shape[2] != self.feature_dim:
            raise ValueError(f"`features` must have shape (B, T, {self.feature_dim}), but got "
                             f"({', '.join(str(d) for d in features.shape)}).")
        check_labels(labels, features.shape[0], features, self.validate_args)
        learning = self.training and torch.is_grad_enabled()
        if learning:
            self.training_calls += 1
        weight = self._weight(learning, features.device)
        grad_ratio = torch.full((), float("nan"), dtype=torch.float64, device=features.device)
        probed = learning and features.requires_grad
        if probed:
            features = self._share.probe(features, weight, grad_ratio)

        pairs: Pairs = self.miner(labels)
        first, second, positive = pairs.index_a, pairs.index_b, pairs.is_positive
        num_positive = positive.sum()
        num_negative = positive.numel() - num_positive

        use_fsd = self.fsd_weight != 0 and self.fsd_loss is not None
        use_lcs = self.lcs_weight != 0
        if use_fsd:
            self._warn_if_proposals_overlap(features.shape[1])
        wanted = ([self.action_selector, self.background_selector] if use_fsd else []) + \
            ([self.lcs_selector] if use_lcs else [])
        # All selections read the features together: one gather, so the backward zero-fills and scatters into
        # one (B, T, D) gradient instead of one per selector (that fill alone was a third of FTCL's time).
        selected = select_all(wanted, features, attention, lengths=lengths)
        slots = iter(_static_lengths(s, selection, features.shape[1], lengths) for s, selection in
                     zip(wanted, selected))
        selections = iter(selected)
        zero = torch.zeros((), dtype=torch.float64, device=features.device)
        fsd = lcs = None
        fsd_active = lcs_active = zero
        lcs_threshold = zero
        count = num_positive.clamp(min=1).to(torch.float64)
        if use_fsd:
            action, background = next(selections), next(selections)
            terms = self.fsd_loss.forward_videos(action.features, background.features, first, second, positive,
                                                 action_lengths=next(slots), background_lengths=next(slots))
            fsd = terms.loss
            fsd_active = (terms.active & positive).sum().to(torch.float64) / count
        if use_lcs:
            snippets = next(selections)
            terms = self.lcs_loss.forward_videos(snippets.features, first, second, positive, lengths=next(slots))
            lcs = terms.loss
            lcs_active = (terms.matched & positive).sum().to(torch.float64) / count
            lcs_threshold = terms.threshold.detach().to(torch.float64)

        reference = fsd if fsd is not None else lcs
        if reference is None:
            # Both terms switched off: a zero that still reaches the features, as a host loop may expect.
            loss = features.sum() * 0
            fsd = lcs = loss.detach()
        else:
            loss = torch.zeros_like(reference)
            if fsd is not None:
                loss = loss + self.fsd_weight * fsd
            if lcs is not None:
                loss = loss + self.lcs_weight * lcs
            skipped = torch.zeros_like(reference).detach()
            fsd = skipped if fsd is None else fsd
            lcs = skipped if lcs is None else lcs
            if probed and not self._share.measured and loss.requires_grad:
                # Before the first backward pass FTCL's own gradient norm is unknown, and the first call's weight
                # is 0: measure it directly once (one extra backward through FTCL's small graph).
                own = torch.autograd.grad(loss, features, retain_graph=True, allow_unused=True)[0]
                if own is not None:
                    self._share.seed(own.norm())
            loss = loss * weight.to(loss.dtype)
        result = FTCLTerms(loss, fsd, lcs, num_positive, num_negative, weight, fsd_active, lcs_active,
                           lcs_threshold, grad_ratio)
        self.last_terms = FTCLTerms(*(value.detach() for value in result))
        if learning:
            has_positive = num_positive > 0
            counted = ({"fsd": (has_positive, fsd_active <= 0)} if use_fsd else {}) | \
                ({"lcs": (has_positive, lcs_active <= 0)} if use_lcs else {})
            if self.max_grad_ratio is not None and self._share.measured:
                counted["host"] = (torch.ones_like(has_positive), self._share.silent.to(has_positive.device))
            self._monitor.update(counted)
        return result

    def forward(self, features: Tensor, attention: Tensor, labels: Tensor, *,
                lengths: Tensor | None = None) -> Tensor:
        """The scalar FTCL loss to add to the baseline's loss; see the class docstring."""
        return self.forward_terms(features, attention, labels, lengths=lengths).loss

    def _warn_if_proposals_overlap(self, snippets: int) -> None:
        """One warning when videos are too short for disjoint FSD action and background proposals."""
        action, background = self.action_selector, self.background_selector
        if self._short_warned or not (isinstance(action, ActionSelector)
                                      and isinstance(background, BackgroundSelector)):
            return
        # Top-k_a against bottom-k_b share snippets below k_a + k_b; ranks offset .. offset + k_b - 1 reach
        # back into the top ranks below offset + k_b.
        needed = max(action.k + background.k, background.offset + background.k)
        if snippets >= needed:
            return
        self._short_warned = True
        warnings.warn(f"FTCL: videos of T = {snippets} snippets are shorter than the FSD action and background "
                      f"proposals together ({needed} snippets), so the two share snippets and the FSD term carries "
                      "less signal for them; use smaller selectors (ActionSelector(k), BackgroundSelector(k)) for "
                      "short videos.", UserWarning, stacklevel=3)

    # ---------------------------------------------------------------------------------------------- state

    def state_dict(self, *args: Any, destination: Any = None, prefix: str = "", keep_vars: bool = False) -> Any:
        """FTCL's own state when called on FTCL; nothing when a parent module collects its children's state.

        A parent calls its children with a non-empty ``prefix`` (``"ftcl."``): FTCL then adds nothing, so the
        host's checkpoints stay loadable by the plain host. Called directly, it returns the projections, the
        schedule position and the miner's generator state (see :meth:`get_extra_state`).
        """
        if prefix or (len(args) > 1 and args[1]):  # collected by a parent (positional form: destination, prefix)
            return destination if destination is not None else OrderedDict()
        return super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # Remembered for the post hook: a parent's state without any of FTCL's keys is not an error.
        self._loading_absent = bool(prefix) and not any(key.startswith(prefix) for key in state_dict)
        self._loading_prefix = prefix
        super()._load_from_state_dict(state_dict, prefix, *args)

    def get_extra_state(self) -> dict[str, Any]:
        """The schedule position, the gradient-share estimates and the miner's random state (exact resume)."""
        state: dict[str, Any] = {"training_calls": self.training_calls, "gradient_share": self._share.state()}
        if self._last_weight is not None:
            state["last_weight"] = self._last_weight
        generator = getattr(self.miner, "generator", None)
        if isinstance(generator, torch.Generator):
            state["miner_generator"] = generator.get_state()
        return state

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_extra_state`."""
        self.training_calls = int(state["training_calls"])
        self._share.load(state.get("gradient_share", {}))
        self._last_weight = state.get("last_weight")
        generator = getattr(self.miner, "generator", None)
        if "miner_generator" in state and isinstance(generator, torch.Generator):
            generator.set_state(state["miner_generator"])


def _forgive_absent_state(module: FTCL, incompatible: Any) -> None:
    """Drop FTCL's keys from ``missing_keys`` when the parent's state held none of them (a plain host's)."""
    if getattr(module, "_loading_absent", False):
        prefix = module._loading_prefix
        incompatible.missing_keys[:] = [key for key in incompatible.missing_keys if not key.startswith(prefix)]
    module._loading_absent = False


def _static_lengths(selector: nn.Module, selection: Selection, snippets: int,
                    lengths: Tensor | None) -> Tensor | None:
    """The selection's lengths, or ``None`` when every slot is real by construction (known without a sync).

    Without padding the losses take the kernels' unpadded path, which needs no per-pair lengths at all.
    """
    if lengths is None and (isinstance(selector, ProposalSelector) or (
            isinstance(selector, (ActionSelector, BackgroundSelector)) and snippets >= selector.k)):
        return None
    return selection.lengths
