"""CoLA (Zhang et al., CVPR 2021), clean-room after zhang-can/CoLA @d21f1b5 (ActivityNet: branch anet12 @314c8d7).

Snippet contrastive learning: a Conv1d embedding, a non-negative CAS (Conv1d, no bias, ReLU) whose class sum is the
actionness, top-k MIL, and the SniCo loss, an InfoNCE between hard snippets (the rings just inside and just outside
the actionness regions) and easy snippets (the top and bottom of the actionness under a random mask).

FTCL attaches to the embedding ``E`` (taken **before** the classifier's dropout) and to the raw actionness
``alpha = sum_c CAS``: ``L = L_act + 0.01 * L_SniCo + FTCL(E, alpha, y)``. The mined EA/EB/HA/HB sets are in
score order, not time order, so they are not a substitute for ``E``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from integrations.common.baseline import (
    Baseline,
    BaselineOutput,
    check_single_video,
    minmax_over_time,
    to_numpy,
)

__all__ = ["CoLA", "build_model", "hard_rings", "masked_topk_mean", "snippet_contrast"]


def masked_topk_mean(scores: Tensor, k: Tensor, valid: Tensor | None = None) -> Tensor:
    """Mean of the ``k_b`` largest values over time, per video and class (top-k MIL pooling).

    Args:
        scores: ``(B, T, C)``.
        k: ``(B,)`` int64 pool sizes, each in ``[1, number of valid snippets]``.
        valid: ``(B, T)`` bool mask of real (non-padded) snippets, or ``None`` when all are real.

    Returns:
        ``(B, C)``.
    """
    if valid is not None:
        scores = scores.masked_fill(~valid[..., None], float("-inf"))
    ranked = scores.sort(dim=1, descending=True).values
    # Padded rows sort last and k never reaches them; zero them so the cumulative sum stays finite.
    ranked = ranked.masked_fill(torch.isinf(ranked), 0.0)
    sums = ranked.cumsum(dim=1)
    index = (k - 1).view(-1, 1, 1).expand(-1, 1, scores.shape[2])
    return sums.gather(1, index).squeeze(1) / k.to(scores.dtype)[:, None]


def _erode(mask: Tensor, width: int) -> Tensor:
    """1 where ``mask`` is 1 on all of ``t - floor(w/2) .. t + ceil(w/2) - 1`` (outside counts as 0)."""
    left, right = width // 2, (width + 1) // 2 - 1
    padded = F.pad(mask[:, None], (left, right), value=0.0)
    return -F.max_pool1d(-padded, width, stride=1)[:, 0]


def _dilate(mask: Tensor, width: int) -> Tensor:
    """1 where ``mask`` is 1 anywhere on ``t - (ceil(w/2) - 1) .. t + floor(w/2)`` (the mirrored window)."""
    left, right = (width + 1) // 2 - 1, width // 2
    padded = F.pad(mask[:, None], (left, right), value=0.0)
    return F.max_pool1d(padded, width, stride=1)[:, 0]


def hard_rings(actionness: Tensor, *, inner_width: int = 3, outer_width: int = 6,
               valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """CoLA's hard-snippet regions: the rings just inside and just outside the above-median actionness runs.

    Binarise at the per-video median (over the valid snippets), then ``inner = erode_m(b) - erode_M(b)`` and
    ``outer = dilate_M(b) - dilate_m(b)`` with ``m = inner_width``, ``M = outer_width`` (CoLA's
    ``hard_snippets_mining``, ``scipy.ndimage`` erosion and dilation). On one run at indices 5..14 of 20 the inner
    ring is {6, 7, 13} and the outer ring {2, 3, 16}.

    Args:
        actionness: ``(B, T)`` (read without gradient).
        inner_width: ``m`` (3).
        outer_width: ``M`` (6).
        valid: ``(B, T)`` bool mask of real snippets, or ``None``.

    Returns:
        ``(inner, outer)``, two ``(B, T)`` float masks in {0, 1}.
    """
    actionness = actionness.detach()
    if valid is None:
        median = actionness.quantile(0.5, dim=1, keepdim=True)
    else:
        # nanquantile skips the padded snippets, as the median of the valid ones.
        median = actionness.masked_fill(~valid, float("nan")).nanquantile(0.5, dim=1, keepdim=True)
    binary = (actionness > median).to(actionness.dtype)
    if valid is not None:
        binary = binary * valid
    inner = _erode(binary, inner_width) - _erode(binary, outer_width)
    outer = _dilate(binary, outer_width) - _dilate(binary, inner_width)
    if valid is not None:
        outer = outer * valid
    return inner, outer


def snippet_contrast(query: Tensor, positive: Tensor, negatives: Tensor, *, temperature: float = 0.07,
                     query_weight: Tensor | None = None) -> Tensor:
    """One SniCo term: InfoNCE of the mean query snippet against the mean positive and each negative snippet.

    ``q = normalize(mean_k query)``, ``k+ = normalize(mean_k positive)``, negatives normalised row by row; the loss
    is the cross-entropy with target 0 of ``[q.k+, q.n_1, ..., q.n_K] / temperature``, averaged over the batch.

    Args:
        query: ``(B, Kq, E)`` hard snippets.
        positive: ``(B, Kp, E)`` easy snippets of the same kind.
        negatives: ``(B, Kn, E)`` easy snippets of the other kind.
        temperature: tau (0.07).
        query_weight: optional ``(B, Kq)`` weights of the query snippets (the masked hard-mining variant: only
            ring members count); ``None`` = a plain mean.

    Returns:
        The scalar loss.
    """
    if query_weight is None:
        pooled = query.mean(dim=1)
    else:
        pooled = (query * query_weight[..., None]).sum(dim=1) / query_weight.sum(dim=1, keepdim=True).clamp_min(1)
    q = F.normalize(pooled, dim=-1)
    k_pos = F.normalize(positive.mean(dim=1), dim=-1)
    k_neg = F.normalize(negatives, dim=-1)
    logits = torch.cat([(q * k_pos).sum(dim=-1, keepdim=True), torch.einsum("be,bke->bk", q, k_neg)], dim=1)
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits / temperature, target)


def _gather(embedding: Tensor, scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The rows of ``embedding`` at the top-``k`` of ``scores`` (in score order) and those indices.

    Tied scores are ordered as CoLA's ``select_topk_embeddings`` orders them: the first ``k`` of a descending
    ``torch.sort`` (not ``topk``, which breaks ties differently). Ties matter where a hard-snippet ring has fewer
    than ``k`` members: the rest of the picks are zero-score snippets, chosen by the sort's tie order.
    """
    index = scores.sort(dim=1, descending=True).indices[:, :k]
    return embedding.gather(1, index[..., None].expand(-1, -1, embedding.shape[2])), index


class CoLA(Baseline):
    """CoLA: embedding, non-negative CAS, actionness, top-k MIL and snippet contrast (SniCo) with hard mining.

    Args:
        feature_dim: ``D`` (2048 on THUMOS14).
        num_classes: ``C`` (no background class).
        embedding_dim: ``E`` (default ``D``).
        kernel_size: temporal kernel of the embedding conv (3 on THUMOS14; 9 on the ActivityNet branch).
        classifier_kernel_size: temporal kernel of the classifier conv (1 on THUMOS14; 9 on the ActivityNet branch).
        classifier_dilated_kernel: kernel of a depthwise (one filter per class), dilation-2 conv without bias
            after the classifier conv, before the ReLU (the ActivityNet branch: 7); 0 = none (THUMOS14).
        dropout: dropout before the classifier (0.7).
        easy_ratio: ``r_easy``, ``k_easy = max(1, T // r_easy)`` (5; ActivityNet 10).
        hard_ratio: ``r_hard``, ``k_hard = max(1, T // r_hard)`` (20; ActivityNet 8).
        easy_mask_rate: drop rate of the random mask used for easy mining (0.6).
        inner_width: ``m`` of the morphological hard mining (3).
        outer_width: ``M`` (6).
        temperature: SniCo temperature (0.07).
        contrast_weight: weight of SniCo (0.01, hard-coded upstream; ActivityNet 0.005).
        masked_hard_mining: average only the ring members among the hard picks (our variant); ``False`` (default)
            is CoLA's behaviour, where a short ring is filled with zero-score snippets.

    Shape:
        features ``(B, T, D)`` -> embedding ``(B, T, E)``, attention ``(B, T)`` (raw actionness, >= 0), cas
        ``(B, T, C)`` (>= 0), video_scores ``(B, C)`` (softmax over classes).

    Example:
        >>> import torch
        >>> model = CoLA(64, 5).eval()
        >>> out = model(torch.randn(2, 40, 64))
        >>> out.embedding.shape, out.attention.shape, out.cas.shape, out.video_scores.shape
        (torch.Size([2, 40, 64]), torch.Size([2, 40]), torch.Size([2, 40, 5]), torch.Size([2, 5]))
        >>> out.extras["easy_action"].shape, out.extras["hard_action"].shape
        (torch.Size([2, 8, 64]), torch.Size([2, 2, 64]))
    """

    name = "cola"

    def __init__(self, feature_dim: int, num_classes: int, *, embedding_dim: int | None = None,
                 kernel_size: int = 3, classifier_kernel_size: int = 1, classifier_dilated_kernel: int = 0,
                 dropout: float = 0.7, easy_ratio: int = 5, hard_ratio: int = 20,
                 easy_mask_rate: float = 0.6, inner_width: int = 3, outer_width: int = 6,
                 temperature: float = 0.07, contrast_weight: float = 0.01, masked_hard_mining: bool = False) -> None:
        super().__init__()
        for option, value in (("kernel_size", kernel_size), ("classifier_kernel_size", classifier_kernel_size)):
            if value % 2 != 1:
                raise ValueError(f"`{option}` must be odd (same-length conv), but got {value}.")
        if classifier_dilated_kernel and classifier_dilated_kernel % 2 != 1:
            raise ValueError(f"`classifier_dilated_kernel` must be 0 or odd, but got {classifier_dilated_kernel}.")
        if not 1 <= inner_width < outer_width:
            raise ValueError(f"need 1 <= inner_width < outer_width, but got {inner_width} and {outer_width}.")
        self.embedding_dim = int(embedding_dim or feature_dim)
        self.num_classes = int(num_classes)
        self.easy_ratio, self.hard_ratio = int(easy_ratio), int(hard_ratio)
        self.easy_mask_rate = float(easy_mask_rate)
        self.inner_width, self.outer_width = int(inner_width), int(outer_width)
        self.temperature, self.contrast_weight = float(temperature), float(contrast_weight)
        self.masked_hard_mining = bool(masked_hard_mining)
        self.embed = nn.Conv1d(feature_dim, self.embedding_dim, kernel_size, padding=kernel_size // 2)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv1d(self.embedding_dim, num_classes, classifier_kernel_size,
                                    padding=classifier_kernel_size // 2, bias=False)
        self.classifier_dilated = None
        if classifier_dilated_kernel:
            # dilation 2 keeps the length with padding = kernel - 1
            self.classifier_dilated = nn.Conv1d(num_classes, num_classes, classifier_dilated_kernel, dilation=2,
                                                padding=classifier_dilated_kernel - 1, groups=num_classes, bias=False)

    def _sizes(self, length: int) -> tuple[int, int]:
        # Clamped to >= 1: CoLA's k = T // r is 0 for T < r, and its mean over no snippets is NaN.
        return max(1, length // self.easy_ratio), max(1, length // self.hard_ratio)

    def forward(self, features: Tensor, lengths: Tensor | None = None) -> BaselineOutput:
        """Run CoLA and mine its easy and hard snippets.

        Args:
            features: ``(B, T, D)``.
            lengths: ``(B,)`` true lengths of a zero-padded batch, or ``None``. Padded snippets are never pooled
                or mined (the reference always fills T, so it has no padding).

        Returns:
            The output; ``extras`` holds ``easy_action``/``easy_background`` ``(B, k_easy, E)``,
            ``hard_action``/``hard_background`` ``(B, k_hard, E)`` and, with masked hard mining, their weights.
        """
        batch, length = features.shape[:2]
        embedding = F.relu(self.embed(features.transpose(1, 2)))  # (B, E, T), before dropout
        cas = self.classifier(self.dropout(embedding))
        if self.classifier_dilated is not None:
            cas = self.classifier_dilated(cas)
        cas = F.relu(cas).transpose(1, 2)  # (B, T, C) >= 0
        embedding = embedding.transpose(1, 2)
        actionness = cas.sum(dim=2)
        valid = None
        if lengths is not None:
            valid = torch.arange(length, device=features.device)[None] < lengths[:, None]
        k_easy, k_hard = self._sizes(length)
        if lengths is None:
            k_video = torch.full((batch,), k_easy, dtype=torch.long, device=features.device)
        else:
            k_video = (lengths // self.easy_ratio).clamp(min=1)
        video_scores = torch.softmax(masked_topk_mean(cas, k_video, valid), dim=1)

        # Easy mining: one random mask (entries 0 or 1/(1-p)) for both sets; all ones in eval mode.
        mask = F.dropout(actionness.new_ones(batch, length), self.easy_mask_rate, self.training)
        score = actionness.detach()
        easy_action_score = score * mask
        easy_background_score = (score.max(dim=1, keepdim=True).values - score) * mask
        if valid is not None:
            easy_action_score = easy_action_score.masked_fill(~valid, float("-inf"))
            easy_background_score = easy_background_score.masked_fill(~valid, float("-inf"))
        easy_action, _ = _gather(embedding, easy_action_score, k_easy)
        easy_background, _ = _gather(embedding, easy_background_score, k_easy)
        inner, outer = hard_rings(score, inner_width=self.inner_width, outer_width=self.outer_width, valid=valid)
        hard_action, action_index = _gather(embedding, score * inner, k_hard)
        hard_background, background_index = _gather(embedding, score * outer, k_hard)
        extras = {"easy_action": easy_action, "easy_background": easy_background,
                  "hard_action": hard_action, "hard_background": hard_background}
        if self.masked_hard_mining:
            extras["hard_action_weight"] = inner.gather(1, action_index)
            extras["hard_background_weight"] = outer.gather(1, background_index)
        return BaselineOutput(embedding=embedding, attention=actionness, cas=cas, video_scores=video_scores,
                              extras=extras)

    def loss(self, output: BaselineOutput, labels: Tensor, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        """``L_act + contrast_weight * (L_HA + L_HB)`` (CoLA ``core/loss.py``).

        ``L_act`` is the BCE of the softmax video scores against the normalised labels, over all B x C entries.

        Args:
            output: the forward pass (training mode).
            labels: ``(B, C)`` multi-hot.
            step: unused (no schedule).

        Returns:
            ``(loss, parts)`` with parts ``action``, ``contrast_action``, ``contrast_background``.
        """
        ex = output.extras
        target = labels / labels.sum(dim=1, keepdim=True).clamp_min(1)
        action = F.binary_cross_entropy(output.video_scores, target)
        contrast_action = snippet_contrast(ex["hard_action"], ex["easy_action"], ex["easy_background"],
                                           temperature=self.temperature, query_weight=ex.get("hard_action_weight"))
        contrast_background = snippet_contrast(ex["hard_background"], ex["easy_background"], ex["easy_action"],
                                               temperature=self.temperature,
                                               query_weight=ex.get("hard_background_weight"))
        loss = action + self.contrast_weight * (contrast_action + contrast_background)
        parts = {"action": action, "contrast_action": contrast_action, "contrast_background": contrast_background}
        return loss, {key: value.detach() for key, value in parts.items()}

    def inference(self, output: BaselineOutput) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Per-video min-max normalised CAS and actionness, and the softmax video scores (CoLA ``core/utils.py``).

        Each CAS column and the actionness become ``clip((x - relu(min)) / (relu(max) - relu(min)), 0, 1)`` with a
        non-positive denominator replaced by 1.

        Args:
            output: the forward pass of one video in eval mode.

        Returns:
            ``(cas (T, C), video_scores (C,), attention (T,))`` in ``[0, 1]``.
        """
        check_single_video(output)
        return (to_numpy(minmax_over_time(output.cas[0])), to_numpy(output.video_scores[0]),
                to_numpy(minmax_over_time(output.attention[0, :, None])[:, 0]))


#: The runner's factory: ``build_model(config, *, num_classes, feature_dim)`` (:meth:`Baseline.from_config`).
build_model = CoLA.from_config
