"""The paper's Table 3 ablation arms built from the public API: FTCL(both-FSD) and FTCL(both-LCS).

FTCL assigns FSD to foreground-background separation and LCS to classification-to-localization adaptation. The
"both" arms use one measure for both roles:

- **both-FSD**: separation by ``FTCL``'s FSD term as usual; adaptation by the FSD similarity of each mined pair's
  top-J snippets (match = cosine, insert = delete = cosine - 1, the paper's penalty), normalised by the shorter
  length and pushed by binary cross-entropy towards 1 (same class) or 0 (disjoint), as LCS's Eq. 7 does.
- **both-LCS**: adaptation by ``FTCL``'s LCS term as usual; separation by the normalised LCS length, ranked as
  FSD's Eq. 4: for a same-class pair the action-action length must exceed both action-background lengths,
  ``softplus((r_UV' - r_UV) / eta) + softplus((r_U'V - r_UV) / eta)``.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BothMeasures", "BothTerms"]


class BothTerms(NamedTuple):
    """Same fields as ``ftcl_plugin.FTCLTerms`` (``fsd`` = separation term, ``lcs`` = adaptation term)."""

    loss: Tensor
    fsd: Tensor
    lcs: Tensor
    num_positive_pairs: Tensor
    num_negative_pairs: Tensor


class _RecordingMiner(nn.Module):
    """Wraps a pair miner and keeps its last output."""

    def __init__(self, miner: nn.Module) -> None:
        super().__init__()
        self.inner = miner
        self.last = None

    def forward(self, labels: Tensor):  # noqa: ANN201 - returns the wrapped miner's Pairs
        self.last = self.inner(labels)
        return self.last


class BothMeasures(nn.Module):
    """FTCL with one sequence measure for both roles (Table 3's "both-FSD" and "both-LCS").

    Args:
        feature_dim: ``E`` of the embedding.
        measure: ``"fsd"`` or ``"lcs"``.
        variant: FTCL variant of the kept term.
        k: top-J snippets of the replacement term (30 on THUMOS14).
        gamma: smooth-max temperature of the FSD recursion (0.1).
        threshold: LCS match threshold (0.92).
        ranking_temperature: ``eta`` of the LCS-based ranking loss (0.2, FSDLoss's default).

    Shape:
        features ``(B, T, E)``, attention ``(B, T)``, labels ``(B, C)``, lengths ``(B,)`` -> scalar.
    """

    def __init__(self, feature_dim: int, *, measure: Literal["fsd", "lcs"], variant: str = "paper", k: int = 30,
                 gamma: float = 0.1, threshold: float = 0.92, ranking_temperature: float = 0.2) -> None:
        super().__init__()
        from ftcl_plugin import FTCL, ActionSelector, BackgroundSelector, PairMiner

        if measure not in ("fsd", "lcs"):
            raise ValueError(f"`measure` must be 'fsd' or 'lcs', but got {measure!r}.")
        self.measure = measure
        # The kept term runs inside FTCL (its miner, selectors and heads); the other weight is 0. The miner records
        # its pairs so the replacement term scores exactly the same pairs.
        self.miner = _RecordingMiner(PairMiner(
            positive_rule="identical_labels" if variant == "official" else "shared_class"))
        weights = {"lcs_weight": 0.0} if measure == "fsd" else {"fsd_weight": 0.0}
        self.ftcl = FTCL(feature_dim, variant=variant, miner=self.miner, **weights)
        self.snippets = ActionSelector(k)
        self.action = self.ftcl.action_selector
        self.background = self.ftcl.background_selector if measure == "lcs" else BackgroundSelector(k)
        self.gamma, self.threshold, self.eta = float(gamma), float(threshold), float(ranking_temperature)

    def _fsd(self, first: Tensor, second: Tensor, lengths_a: Tensor, lengths_b: Tensor) -> Tensor:
        from ftcl_plugin.functional import cosine_similarity_matrix, fsd_similarity

        match = cosine_similarity_matrix(first, second)
        similarity = fsd_similarity(match, match - 1, gamma=self.gamma, lengths_a=lengths_a, lengths_b=lengths_b)
        return similarity / torch.minimum(lengths_a, lengths_b).to(similarity.dtype)

    def _lcs(self, first: Tensor, second: Tensor, lengths_a: Tensor, lengths_b: Tensor) -> Tensor:
        from ftcl_plugin.functional import cosine_similarity_matrix, lcs_length

        similarity = cosine_similarity_matrix(first, second)
        length = lcs_length(similarity, threshold=self.threshold, lengths_a=lengths_a, lengths_b=lengths_b)
        return length / torch.minimum(lengths_a, lengths_b).to(length.dtype)

    def forward_terms(self, features: Tensor, attention: Tensor, labels: Tensor, *,
                      lengths: Tensor | None = None) -> BothTerms:
        """The loss and its parts; arguments as ``FTCL``.

        Args:
            features: ``(B, T, E)``.
            attention: ``(B, T)``.
            labels: ``(B, C)``.
            lengths: ``(B,)`` or ``None``.

        Returns:
            :class:`BothTerms`.
        """
        kept = self.ftcl.forward_terms(features, attention, labels, lengths=lengths)
        pairs = self.miner.last
        a, b, positive = pairs.index_a, pairs.index_b, pairs.is_positive
        zero = features.sum() * 0
        if a.numel() == 0:
            replacement = zero
        elif self.measure == "fsd":
            top = self.snippets(features, attention, lengths=lengths)
            r = self._fsd(top.features[a], top.features[b], top.lengths[a], top.lengths[b]).clamp(1e-6, 1 - 1e-6)
            replacement = F.binary_cross_entropy(r, positive.to(r.dtype))
        elif bool(positive.any()):
            act = self.action(features, attention, lengths=lengths)
            bg = self.background(features, attention, lengths=lengths)
            pa, pb = a[positive], b[positive]
            r_uv = self._lcs(act.features[pa], act.features[pb], act.lengths[pa], act.lengths[pb])
            r_uv_bg = self._lcs(act.features[pa], bg.features[pb], act.lengths[pa], bg.lengths[pb])
            r_bg_uv = self._lcs(bg.features[pa], act.features[pb], bg.lengths[pa], act.lengths[pb])
            replacement = (F.softplus((r_uv_bg - r_uv) / self.eta) + F.softplus((r_bg_uv - r_uv) / self.eta)).mean()
        else:
            replacement = zero
        if self.measure == "fsd":
            separation, adaptation = kept.fsd, replacement
        else:
            separation, adaptation = replacement, kept.lcs
        loss = kept.loss + replacement
        return BothTerms(loss, separation, adaptation, kept.num_positive_pairs, kept.num_negative_pairs)

    def forward(self, features: Tensor, attention: Tensor, labels: Tensor, *, lengths: Tensor | None = None) -> Tensor:
        """The scalar loss (see :meth:`forward_terms`).

        Args:
            features: ``(B, T, E)``.
            attention: ``(B, T)``.
            labels: ``(B, C)``.
            lengths: ``(B,)`` or ``None``.

        Returns:
            The scalar loss.
        """
        return self.forward_terms(features, attention, labels, lengths=lengths).loss
