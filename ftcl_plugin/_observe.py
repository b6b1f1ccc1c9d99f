"""What the facade measures about itself: the share FTCL takes of the gradient on the host's embedding (and the
weight cap that keeps it from dominating), and one warning when a term has stopped sending gradient.

Nothing here changes a gradient; everything stays on the device (no host reads) except the inactivity check,
which reads two counters every step on CPU and every ``_CUDA_CHECK_EVERY`` steps elsewhere.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

__all__ = ["FTCLInactiveWarning", "GradientShare", "InactivityMonitor"]

# On a GPU the inactivity counters are read (a device sync) only this often.
_CUDA_CHECK_EVERY = 50


class FTCLInactiveWarning(UserWarning):
    """An FTCL term has sent no gradient for many consecutive training steps."""


class _Probe(torch.autograd.Function):
    """Identity whose backward hands FTCL's own gradient on the features to ``record``."""

    @staticmethod
    def forward(ctx, features: Tensor, record: dict) -> Tensor:  # noqa: ANN001 - autograd's ctx
        ctx.record = record
        return features.view_as(features)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: ANN001
        ctx.record["ftcl"] = grad
        return grad, None


class GradientShare:
    """FTCL's gradient on the host's embedding against the host's own, and the weight cap it implies.

    Each training call routes the features through a probe. In the backward pass the probe sees FTCL's share of
    the gradient as it passes and a hook on the features sees the total once every contribution is summed, so
    ``host = total - ftcl`` needs no second backward pass (several backward passes of one step add up). When the
    features are a view (a transpose, a slice), both sit on the tensor it views, where the host's own loss reads.

    The next call folds that measurement into two running means (decay ``decay``): of FTCL's *unweighted*
    gradient norm (its measured norm over the weight it used) and of ``log rho``, the log of the unweighted
    ratio ``rho = ftcl / host``. Its weight is then capped at ``max_ratio / exp(mean(log rho))``, so that the
    ratio of the two gradients, which swings with every batch, sits at ``max_ratio`` at most in its typical
    (geometric-mean) value: a batch that gives the host almost nothing to learn makes ``rho`` jump by orders of
    magnitude, and an arithmetic mean would let such batches hold FTCL far below the cap for many steps after.
    A call whose weight was 0 cannot measure FTCL, so
    its ``rho`` uses FTCL's running norm. A backward pass in which the host sent no gradient at all to the
    features (a host loss that does not read them, e.g. FTCL given an all_gather copy) has nothing to compare
    with: it stays out of the mean and the next call is not capped. Everything stays on the device.

    Args:
        max_ratio: The cap, ``> 0``; ``None`` measures without capping.
        decay: Weight of the past in the running means.
    """

    _RHO_LIMIT = 1e12

    def __init__(self, max_ratio: float | None, decay: float = 0.9) -> None:
        self.max_ratio = max_ratio
        self.decay = decay
        self.ftcl: Tensor | None = None  # running mean of ||d FTCL / d features|| at weight 1
        self.log_rho: Tensor | None = None  # running mean of the log of that over ||d host / d features||
        self.silent = torch.zeros((), dtype=torch.bool)  # the host sent no gradient in the last measured call
        self._pending: tuple[Tensor, Tensor, Tensor, Tensor] | None = None

    @property
    def measured(self) -> bool:
        """Whether FTCL's own gradient norm has been measured at least once."""
        return self.ftcl is not None

    def cap(self) -> Tensor | None:
        """The largest weight that keeps FTCL within ``max_ratio`` of the host (``None``: no cap yet)."""
        self._fold()
        if self.max_ratio is None or self.log_rho is None:
            return None
        cap = self.max_ratio / self.log_rho.exp()
        return torch.where(torch.isnan(cap) | self.silent.to(cap.device), torch.full_like(cap, float("inf")), cap)

    def seed(self, unweighted_norm: Tensor) -> None:
        """Start FTCL's running norm from a norm measured directly (a call whose weight was 0)."""
        self.ftcl = unweighted_norm.detach().to(torch.float64)

    def probe(self, features: Tensor, weight: Tensor, ratio: Tensor) -> Tensor:
        """Route ``features`` through the probe for this call; ``ratio`` is filled in by its backward pass.

        Args:
            features: (B, T, D), requiring grad.
            weight: () the weight this call applies to FTCL's loss.
            ratio: () float64, set in place to ``||g_ftcl|| / ||g_host||`` by the backward pass.

        Returns:
            ``features`` behind the probe: FTCL must read the features through it.
        """
        record: dict[str, Tensor] = {}
        own_sq = torch.zeros((), dtype=torch.float64, device=features.device)
        host_sq = torch.zeros_like(own_sq)
        fired = torch.zeros((), dtype=torch.bool, device=features.device)

        def on_total(total: Tensor) -> None:
            own = record.pop("ftcl", None)
            with torch.no_grad():
                fired.fill_(True)
                # Three dot products (BLAS, no (B, T, D) temporary): ||total||^2, <total, own>, ||own||^2, then
                # ||total - own||^2 from them in float64.
                flat = total.reshape(-1)
                total_sq = torch.dot(flat, flat).double()
                if own is None:  # a backward pass that did not go through FTCL: all of it is the host's
                    host_sq.add_(total_sq)
                else:
                    own_flat = own.reshape(-1).to(flat.dtype)
                    own_part = torch.dot(own_flat, own_flat).double()
                    host_sq.add_((total_sq - 2 * torch.dot(flat, own_flat).double() + own_part).clamp(min=0))
                    own_sq.add_(own_part)
                # undefined (NaN) while the host has sent nothing at all: no ratio to report
                ratio.copy_(torch.where(host_sq > 0, own_sq.sqrt() / host_sq.sqrt().clamp(min=1e-300),
                                        torch.full_like(own_sq, float("nan"))))

        # A host usually computes on one layout and hands FTCL a view of it (``x.transpose(1, 2)`` of a (B, D, T)
        # conv output): its own loss then reads the base tensor, not the view, and a hook on the view would miss
        # the host's gradient. So the probe and the hook sit on the base, and FTCL reads the view rebuilt from it.
        base = features._base
        target = base if base is not None and base.requires_grad else features
        target.register_hook(on_total)
        self._pending = (own_sq, host_sq, fired, weight.detach().to(torch.float64))
        probed = _Probe.apply(target, record)
        if target is features:
            return probed
        return probed.as_strided(features.size(), features.stride(), features.storage_offset())

    def _fold(self) -> None:
        """Fold the last probed call's measurement into the running means (no-op if it had no backward)."""
        if self._pending is None or self.ftcl is None:
            self._pending = None
            return
        own_sq, host_sq, seen, weight = self._pending
        self._pending = None
        measured = seen & (weight > 0) & (own_sq > 0)
        own = own_sq.sqrt() / weight.clamp(min=torch.finfo(torch.float64).tiny)
        keep = self.decay
        self.ftcl = torch.where(measured, keep * self.ftcl + (1 - keep) * own, self.ftcl)
        # A backward pass in which the host sent nothing to the features has nothing to compare FTCL with: it
        # stays out of the mean and lifts the cap for the next call (the facade warns if that persists).
        self.silent = seen & (host_sq == 0)
        counted = seen & (host_sq > 0)
        pull = torch.where(measured, own, self.ftcl)
        rho = (pull / host_sq.sqrt().clamp(min=torch.finfo(torch.float64).tiny)).clamp(1 / self._RHO_LIMIT,
                                                                                      self._RHO_LIMIT)
        log_rho = rho.log()
        if self.log_rho is None:
            self.log_rho = torch.where(counted, log_rho, torch.full_like(log_rho, float("nan")))
        else:
            previous = torch.where(torch.isnan(self.log_rho), log_rho, self.log_rho)
            self.log_rho = torch.where(counted, keep * previous + (1 - keep) * log_rho, self.log_rho)

    def state(self) -> dict[str, Tensor]:
        """The running means (for an exact resume)."""
        self._fold()
        state = {name: value for name, value in (("ftcl", self.ftcl), ("log_rho", self.log_rho)) if value is not None}
        return state | {"silent": self.silent}

    def load(self, state: dict[str, Tensor]) -> None:
        """Restore :meth:`state`."""
        self.ftcl, self.log_rho, self._pending = state.get("ftcl"), state.get("log_rho"), None
        self.silent = state.get("silent", torch.zeros((), dtype=torch.bool))


class InactivityMonitor:
    """Counts consecutive training steps in which something FTCL relies on was missing; warns once for each.

    - ``"fsd"`` / ``"lcs"``: on a step with at least one positive pair, none of the positive pairs sent the term
      gradient (LCS: no match on any LCS path; FSD: every ranking term saturated). Steps without positive pairs
      neither count nor reset.
    - ``"host"``: the host's own loss sent no gradient at all to ``features`` (so the gradient-share cap has
      nothing to compare with and is off).

    Args:
        patience: Consecutive steps before the warning (terms); the host check waits ``min(patience, 20)``.
    """

    _ADVICE = {
        "lcs": ("the LCS term has been inactive for {count} consecutive training steps: no positive pair has a "
                "snippet similarity at the LCS threshold, so every LCS length is 0 and the term sends no gradient. "
                "The paper's threshold 0.92 was tuned on ACM-Net's embedding; pass "
                "lcs_loss=LCSLoss(min_match_fraction=0.05) (FTCL's default) or a lower threshold, or check that "
                "`features` is the per-snippet embedding."),
        "fsd": ("the FSD term has been inactive for {count} consecutive training steps: every positive pair's "
                "ranking terms are saturated (softplus slope < 0.01), so the term sends almost no gradient. Try "
                "fsd_loss=FSDLoss(feature_dim, length_normalized=True, ranking_temperature=1.0) (FTCL's default), "
                "a larger ranking_temperature, or harder background proposals "
                "(background_selector=BackgroundSelector(5, rule='next'))."),
        "host": ("your loss sent no gradient to `features` in {count} consecutive training steps, so the "
                 "gradient-share cap has nothing to compare FTCL with and is off (FTCL runs at its ramp weight). "
                 "Pass FTCL the embedding tensor your loss itself uses (not a copy such as an all_gather result), "
                 "or FTCL(..., max_grad_ratio=None) to say the cap is not wanted."),
    }

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.counts: dict[str, Tensor] = {}
        self.warned: set[str] = set()
        self.steps = 0

    def update(self, counted: dict[str, tuple[Tensor, Tensor]]) -> None:
        """Account one training step; may emit one :class:`FTCLInactiveWarning` per name, ever.

        Args:
            counted: name -> (``relevant``, ``inactive``), both () bool: a relevant inactive step counts one
                more, a relevant active one resets, an irrelevant one changes nothing.
        """
        if self.patience <= 0 or not counted:
            return
        for name, (relevant, inactive) in counted.items():
            count = self.counts.get(name, torch.zeros((), dtype=torch.int64, device=relevant.device))
            self.counts[name] = torch.where(relevant & inactive, count + 1,
                                            torch.where(relevant, count * 0, count))
        self.steps += 1
        first = next(iter(counted.values()))[0]
        if first.device.type != "cpu" and self.steps % _CUDA_CHECK_EVERY:
            return
        for name, count in self.counts.items():
            limit = min(self.patience, 20) if name == "host" else self.patience
            if name not in self.warned and int(count) >= limit:
                self.warned.add(name)
                warnings.warn("FTCL: " + self._ADVICE[name].format(count=int(count)), FTCLInactiveWarning,
                              stacklevel=4)
