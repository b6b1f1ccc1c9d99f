"""W-TALC (Paul et al., ECCV 2018), clean-room from ``BASELINES.md`` section 3.

MIL plus co-activity similarity: a fully connected embedding ``H = ReLU(Linear(X))``, dropout, a linear classifier
giving raw per-snippet logits (the CAS), the k-max MIL loss with ``k = ceil(n / 8)``, and the co-activity
similarity loss (CASL) between videos that share a class.

FTCL attaches to the **pre-dropout** embedding ``H`` (``BASELINES.md`` 3.7; with p = 0.7 the post-dropout ``H'``
has 70 % of its dimensions zeroed, which makes cosine similarities meaningless). W-TALC has no attention branch;
the actionness handed to FTCL is the label-free substitute ``sigmoid(max_c S_t,c)`` with padded snippets set to 0
(ranking only, so the sigmoid changes nothing but the range). The label-guided ``max`` over the video's labelled
classes that ``BASELINES.md`` recommends needs the labels, which the baseline interface does not pass to the
attention.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from integrations.common.baseline import Baseline, BaselineOutput, check_single_video, to_numpy

__all__ = ["WTALC", "build_model", "co_activity_loss", "masked_topk_mean", "true_lengths"]


def true_lengths(features: Tensor) -> Tensor:
    """W-TALC's video lengths: the number of snippets with a non-zero feature (``BASELINES.md`` 3.1).

    Args:
        features: ``(B, T, D)``, zero-padded.

    Returns:
        ``(B,)`` int64.
    """
    return features.detach().abs().amax(dim=2).gt(0).sum(dim=1)


def masked_topk_mean(scores: Tensor, k: Tensor, valid: Tensor) -> Tensor:
    """Mean of the ``k_b`` largest valid values over time, per video and class (``BASELINES.md`` 0.3).

    Args:
        scores: ``(B, T, C)``.
        k: ``(B,)`` int64 pool sizes in ``[1, number of valid snippets]``.
        valid: ``(B, T)`` bool mask of real snippets.

    Returns:
        ``(B, C)``.
    """
    ranked = scores.masked_fill(~valid[..., None], float("-inf")).sort(dim=1, descending=True).values
    # Padded rows sort last and k never reaches them; zero them so the cumulative sum stays finite.
    ranked = ranked.masked_fill(torch.isinf(ranked), 0.0)
    index = (k - 1).view(-1, 1, 1).expand(-1, 1, scores.shape[2])
    return ranked.cumsum(dim=1).gather(1, index).squeeze(1) / k.to(scores.dtype)[:, None]


def co_activity_loss(embedding: Tensor, logits: Tensor, labels: Tensor, valid: Tensor, pairs: Tensor, *,
                     margin: float = 0.5, eps: float = 1e-8) -> Tensor:
    """CASL, the co-activity similarity loss over the given video pairs (``BASELINES.md`` 3.3).

    Per video and class: temporal softmax attention ``A`` over the valid snippets, high-attention feature
    ``Hf = H^T A`` and low-attention feature ``Lf = H^T (1 - A) / max(n - 1, 1)``. Per pair ``(i, j)`` and shared
    class ``c``: ``1/2 [d(Hf_i, Hf_j) - d(Hf_i, Lf_j) + m]_+ + 1/2 [d(Hf_i, Hf_j) - d(Hf_j, Lf_i) + m]_+`` with
    ``d = 1 - cos``, averaged over every (pair, shared class) term. No shared class anywhere gives a zero that
    keeps the graph connected (upstream divides 0 by 0).

    Args:
        embedding: ``(B, T, E)`` the embedding CASL sees (the post-dropout ``H'``).
        logits: ``(B, T, C)`` raw CAS.
        labels: ``(B, C)`` multi-hot.
        valid: ``(B, T)`` bool mask of real snippets.
        pairs: ``(P, 2)`` int64 batch indices of the pairs.
        margin: ``m`` (0.5).
        eps: added to the cosine denominator (recommended; upstream has none).

    Returns:
        The scalar loss.
    """
    weight = valid.to(logits.dtype)[..., None]
    attention = torch.softmax(logits.masked_fill(~valid[..., None], float("-inf")), dim=1)  # (B, T, C)
    count = valid.sum(dim=1).to(logits.dtype)
    high = torch.einsum("btc,bte->bce", attention, embedding)
    low = torch.einsum("btc,bte->bce", (1 - attention) * weight, embedding) / (count - 1).clamp_min(1)[:, None, None]
    first, second = pairs[:, 0], pairs[:, 1]

    def distance(u: Tensor, v: Tensor) -> Tensor:
        return 1 - (u * v).sum(dim=-1) / (u.norm(dim=-1) * v.norm(dim=-1) + eps)

    high_high = distance(high[first], high[second])  # (P, C)
    term = 0.5 * F.relu(high_high - distance(high[first], low[second]) + margin)
    term = term + 0.5 * F.relu(high_high - distance(high[second], low[first]) + margin)
    shared = labels[first] * labels[second]
    return (term * shared).sum() / shared.sum().clamp_min(1)


class WTALC(Baseline):
    """W-TALC: FC embedding, dropout, linear CAS, k-max MIL and the co-activity similarity loss.

    Padding: lengths come from the ``lengths`` argument or, without it, from the non-zero snippets (upstream);
    padded snippets are never pooled, attended or counted, so appending zero rows changes nothing.

    Args:
        feature_dim: ``D`` (2048).
        num_classes: ``C``.
        embedding_dim: ``E`` (default ``D``).
        dropout: dropout after the embedding (0.7; train only).
        topk_divisor: ``k = ceil(n / divisor)`` in MIL (8).
        mil_weight: weight of the MIL loss (0.5).
        casl_weight: weight of CASL (0.5, i.e. lambda = 0.5).
        casl_margin: the CASL hinge margin (0.5).
        casl_pairs: ``"adjacent"``: the pairs (0, 1), (2, 3), ... (the first ``num_pairs``), as W-TALC builds its
            batches; ``"shared"``: every pair of videos in the batch that shares a class (for batches from a
            shuffling class-pair sampler, where a pair's positions are not fixed).
        num_pairs: how many adjacent pairs in ``"adjacent"`` mode (3).
        gate_divisor: ``k = max(1, floor(T / divisor))`` of the detection-time class gate (8).
        score_weight: weight of the class gate in a proposal's score (0.7).

    Shape:
        features ``(B, T, D)`` -> embedding ``(B, T, E)`` (pre-dropout ``H``), attention ``(B, T)`` (the FTCL
        substitute, see the module docstring), cas ``(B, T, C)`` raw logits, video_scores ``(B, C)``
        (softmax of the k-max pooled logits).

    Example:
        >>> import torch
        >>> model = WTALC(64, 5).eval()
        >>> out = model(torch.randn(2, 16, 64))
        >>> out.embedding.shape, out.cas.shape, out.video_scores.shape, out.attention.shape
        (torch.Size([2, 16, 64]), torch.Size([2, 16, 5]), torch.Size([2, 5]), torch.Size([2, 16]))
    """

    name = "wtalc"

    def __init__(self, feature_dim: int, num_classes: int, *, embedding_dim: int | None = None,
                 dropout: float = 0.7, topk_divisor: int = 8, mil_weight: float = 0.5, casl_weight: float = 0.5,
                 casl_margin: float = 0.5, casl_pairs: Literal["adjacent", "shared"] = "adjacent",
                 num_pairs: int = 3, gate_divisor: int = 8, score_weight: float = 0.7) -> None:
        super().__init__()
        if casl_pairs not in ("adjacent", "shared"):
            raise ValueError(f"`casl_pairs` must be 'adjacent' or 'shared', but got {casl_pairs!r}.")
        self.embedding_dim = int(embedding_dim or feature_dim)
        self.num_classes = int(num_classes)
        self.topk_divisor, self.gate_divisor = int(topk_divisor), int(gate_divisor)
        self.mil_weight, self.casl_weight, self.casl_margin = float(mil_weight), float(casl_weight), float(casl_margin)
        self.casl_pairs, self.num_pairs = casl_pairs, int(num_pairs)
        self.score_weight = float(score_weight)
        self.embed = nn.Linear(feature_dim, self.embedding_dim)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.embedding_dim, num_classes)
        for layer in (self.embed, self.classifier):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, features: Tensor, lengths: Tensor | None = None) -> BaselineOutput:
        """Run W-TALC.

        Args:
            features: ``(B, T, D)``, zero-padded past each video's length.
            lengths: ``(B,)`` true lengths, or ``None`` to count the non-zero snippets.

        Returns:
            The output; ``extras`` holds the post-dropout embedding ``dropped``, the ``lengths`` used and the
            ``log_scores`` (log-softmax of the pooled logits).
        """
        length = features.shape[1]
        if lengths is None:
            lengths = true_lengths(features)
        lengths = lengths.clamp(min=1, max=length)
        valid = torch.arange(length, device=features.device)[None] < lengths[:, None]
        embedding = F.relu(self.embed(features))
        dropped = self.dropout(embedding)
        logits = self.classifier(dropped)
        k = torch.div(lengths + self.topk_divisor - 1, self.topk_divisor, rounding_mode="floor")
        log_scores = torch.log_softmax(masked_topk_mean(logits, k, valid), dim=1)
        attention = torch.sigmoid(logits.detach().amax(dim=2)) * valid
        return BaselineOutput(embedding=embedding, attention=attention, cas=logits, video_scores=log_scores.exp(),
                              extras={"dropped": dropped, "lengths": lengths, "log_scores": log_scores})

    def _pairs(self, labels: Tensor) -> Tensor:
        batch = labels.shape[0]
        if self.casl_pairs == "adjacent":
            count = min(self.num_pairs, batch // 2)
            first = torch.arange(count, device=labels.device) * 2
            return torch.stack([first, first + 1], dim=1)
        return torch.triu_indices(batch, batch, offset=1, device=labels.device).T

    def loss(self, output: BaselineOutput, labels: Tensor, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        """``mil_weight * L_MIL + casl_weight * L_CASL`` (``BASELINES.md`` 3.3).

        Args:
            output: the forward pass.
            labels: ``(B, C)`` multi-hot.
            step: unused (no schedule).

        Returns:
            ``(loss, parts)`` with parts ``mil`` and ``casl``.
        """
        target = labels / labels.sum(dim=1, keepdim=True).clamp_min(1)
        mil = -(target * output.extras["log_scores"]).sum(dim=1).mean()
        lengths = output.extras["lengths"]
        valid = torch.arange(output.cas.shape[1], device=labels.device)[None] < lengths[:, None]
        casl = co_activity_loss(output.extras["dropped"], output.cas, labels, valid, self._pairs(labels),
                                margin=self.casl_margin)
        loss = self.mil_weight * mil + self.casl_weight * casl
        return loss, {"mil": mil.detach(), "casl": casl.detach()}

    def inference(self, output: BaselineOutput) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """W-TALC's detection signals for one full-length video (``BASELINES.md`` 3.5), in localize's ranges.

        The class gate ``g_c = topk_mean(S, max(1, floor(T / 8)))`` on raw logits becomes the video score
        ``sigmoid(g_c)``, so localize's class threshold 0.5 is exactly W-TALC's ``g_c > 0``. Each class's logit
        sequence is min-max normalised over time, so the CAS threshold 0.5 is W-TALC's ``(max + min) / 2``.
        There is no attention sweep. ``configs/*.toml`` sets localize to match: no upsampling, the single
        threshold 0.5, no NMS, and the run's mean plus 0.7 times the class score as its score (W-TALC scores a
        run by its maximum raw logit plus 0.7 times the raw gate; localize scores runs on the CAS it is given).

        Args:
            output: the forward pass of one video in eval mode.

        Returns:
            ``(cas (T, C), video_scores (C,), None)``.
        """
        check_single_video(output)
        logits = output.cas[0]
        length = logits.shape[0]
        k = max(1, length // self.gate_divisor)
        gate = logits.topk(min(k, length), dim=0).values.mean(dim=0)
        low, high = logits.min(dim=0).values, logits.max(dim=0).values
        span = torch.where(high > low, high - low, torch.ones_like(high))
        cas = (logits - low) / span
        return to_numpy(cas), to_numpy(torch.sigmoid(gate)), None


def build_model(config: dict[str, Any], *, num_classes: int, feature_dim: int) -> WTALC:
    """W-TALC from the ``[model]`` table of ``integrations/wtalc/configs/<dataset>.toml``.

    Args:
        config: the ``[model]`` table (the key ``"_all"`` holding the whole config is ignored).
        num_classes: ``C``.
        feature_dim: ``D``.

    Returns:
        The model.
    """
    options = {key: value for key, value in config.items() if key != "_all"}
    return WTALC(feature_dim, num_classes, **options)
