"""W-TALC (Paul et al., ECCV 2018), clean-room after sujoyp/wtalc-pytorch @81ea982.

MIL plus co-activity similarity: a fully connected embedding ``H = ReLU(Linear(X))``, dropout, a linear classifier
giving raw per-snippet logits (the CAS), the k-max MIL loss with ``k = ceil(n / 8)``, and the co-activity
similarity loss (CASL) between the videos of the same-class pairs W-TALC puts at the front of each batch.

FTCL attaches to the **pre-dropout** embedding ``H``: with p = 0.7 the post-dropout ``H'`` has 70 % of its
dimensions zeroed, which makes cosine similarities meaningless. W-TALC has no attention branch; the actionness
handed to FTCL is the label-free ``sigmoid(max_c S_t,c)`` with padded snippets set to 0 (ranking only, so the
sigmoid changes nothing but the range). A label-guided maximum over the video's own classes would need the labels,
which the baseline interface does not pass to the attention.

Inference is W-TALC's ``detectionMAP.py`` (lines 95-124): the class gate is the mean of the top ``floor(T/8)`` raw
logits, a class whose gate is not positive is zeroed, each remaining class is thresholded at
``(max + min) / 2`` of its raw logits, runs of at least two snippets are kept and scored by their maximum raw
logit plus 0.7 times the gate; no NMS. :meth:`WTALC.inference` and ``configs/*.toml`` express exactly this through
``ftcl_plugin.localization.localize`` (see the method).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from integrations.common.baseline import Baseline, BaselineOutput, check_single_video, to_numpy

__all__ = ["WTALC", "build_model", "class_gate", "co_activity_loss", "detection_signals", "masked_topk_mean",
           "minmax_per_class", "true_lengths"]


def true_lengths(features: Tensor) -> Tensor:
    """W-TALC's video lengths: the number of snippets with a non-zero feature (``train.py``: ``seq_len``).

    Args:
        features: ``(B, T, D)``, zero-padded.

    Returns:
        ``(B,)`` int64.
    """
    return features.detach().abs().amax(dim=2).gt(0).sum(dim=1)


def masked_topk_mean(scores: Tensor, k: Tensor, valid: Tensor) -> Tensor:
    """Mean of the ``k_b`` largest valid values over time, per video and class (top-k MIL pooling).

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
    """CASL, the co-activity similarity loss over the given video pairs (W-TALC ``train.py``, ``CASL``).

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


def class_gate(logits: Tensor, divisor: int = 8) -> Tensor:
    """W-TALC's class gate of one video: the mean of the top ``floor(T / divisor)`` raw logits per class.

    ``detectionMAP.py`` (line 97). With ``T < divisor`` the pool is empty; W-TALC's mean is then NaN, which passes
    no ``> 0`` test, so this returns NaN too.

    Args:
        logits: ``(T, C)`` raw logits of one video.
        divisor: 8.

    Returns:
        ``(C,)``; a class is detected only where it is ``> 0``.

    Example:
        >>> class_gate(torch.tensor([[1.0], [3.0], [-2.0], [0.0]]), divisor=2).tolist()
        [2.0]
    """
    k = logits.shape[0] // divisor
    if k == 0:
        return torch.full(logits.shape[1:], float("nan"), dtype=logits.dtype, device=logits.device)
    return logits.topk(k, dim=0).values.mean(dim=0)


def detection_signals(logits: Tensor, *, gate_divisor: int = 8, gate_score_weight: float = 0.7,
                      topk_divisor: int = 8) -> tuple[Tensor, Tensor]:
    """W-TALC's detection CAS and classification scores of one full-length video, in the form its config localizes.

    The CAS is ``(S_c + w g_c) * [g_c > 0]`` per class (see :meth:`WTALC.inference` for why this reproduces
    ``detectionMAP.py``); the classification scores are the softmax over classes of the mean of the top
    ``ceil(T / topk_divisor)`` logits (``test.py``, line 146). Shared by :class:`WTALC` and the ``--upstream``
    W-TALC driver, so both score alike.

    Args:
        logits: ``(T, C)`` raw logits of one video (no padding).
        gate_divisor: of :func:`class_gate` (8).
        gate_score_weight: ``w`` (0.7).
        topk_divisor: of the classification score (8).

    Returns:
        ``(cas (T, C), scores (C,))``.

    Example:
        >>> cas, scores = detection_signals(torch.tensor([[2.0, -1.0]] * 8, dtype=torch.float64))
        >>> cas[0].tolist(), [round(v, 3) for v in scores.tolist()]   # gates 2 and -1: 2 + 0.7 * 2, class 1 off
        ([3.4, 0.0], [0.953, 0.047])
    """
    gate = class_gate(logits, gate_divisor)
    # A class whose gate is not positive (NaN compares False) becomes an all-zero column.
    cas = torch.where(gate > 0, logits + gate_score_weight * torch.nan_to_num(gate), torch.zeros_like(logits))
    k = -(-logits.shape[0] // topk_divisor)
    scores = torch.softmax(logits.topk(k, dim=0).values.mean(dim=0), dim=0)
    return cas, scores


def minmax_per_class(values: Tensor) -> Tensor:
    """Each column of a ``(T, C)`` sequence mapped linearly onto [0, 1] between its minimum and maximum over time.

    For plots: 0.5 is then W-TALC's per-class cut ``(max + min) / 2``. A constant column maps to 0.

    Args:
        values: ``(T, C)``.

    Returns:
        ``(T, C)`` in [0, 1].

    Example:
        >>> minmax_per_class(torch.tensor([[1.0, 5.0], [3.0, 5.0], [2.0, 5.0]])).tolist()
        [[0.0, 0.0], [1.0, 0.0], [0.5, 0.0]]
    """
    low, high = values.min(dim=0).values, values.max(dim=0).values
    return (values - low) / torch.where(high > low, high - low, torch.ones_like(high))


class WTALC(Baseline):
    """W-TALC: FC embedding, dropout, linear CAS, k-max MIL and the co-activity similarity loss.

    Padding: lengths come from the ``lengths`` argument or, without it, from the non-zero snippets (as W-TALC);
    padded snippets are never pooled, attended or counted, so appending zero rows changes nothing.

    Args:
        feature_dim: ``D`` (2048).
        num_classes: ``C``.
        embedding_dim: ``E`` (default ``D``).
        dropout: dropout after the embedding (0.7; train only).
        topk_divisor: ``k = ceil(n / divisor)`` in MIL and in the classification score (8).
        mil_weight: weight of the MIL loss (0.5).
        casl_weight: weight of CASL (0.5, i.e. lambda = 0.5).
        casl_margin: the CASL hinge margin (0.5).
        casl_pairs: ``"adjacent"``: the pairs (0, 1), (2, 3), ... (the first ``num_pairs``), where W-TALC's batches
            (``ftcl_plugin.data.samplers.SimilarPairSampler``) put videos sharing a class; ``"shared"``: every pair
            of videos in the batch that shares a class (for batches whose pairs have no fixed positions).
        num_pairs: how many adjacent pairs in ``"adjacent"`` mode (3).
        gate_divisor: the class gate pools the top ``floor(T / divisor)`` logits (8; :func:`class_gate`).
        gate_score_weight: weight of the gate in a proposal's score (0.7).

    Shape:
        features ``(B, T, D)`` -> embedding ``(B, T, E)`` (pre-dropout ``H``), attention ``(B, T)`` (the FTCL
        substitute, see the module docstring), cas ``(B, T, C)`` raw logits, video_scores ``(B, C)``
        (softmax of the mean of the top ``ceil(n / 8)`` logits: W-TALC's classification score).

    Example:
        >>> import torch
        >>> model = WTALC(64, 5).eval()
        >>> out = model(torch.randn(2, 16, 64))
        >>> out.embedding.shape, out.cas.shape, out.video_scores.shape, out.attention.shape
        (torch.Size([2, 16, 64]), torch.Size([2, 16, 5]), torch.Size([2, 5]), torch.Size([2, 16]))
    """

    name = "wtalc"
    # The adjacent CASL pairs are the sampler's same-class pairs: one count for both.
    shared_options = {"num_pairs": ("data", "similar_pairs")}

    def __init__(self, feature_dim: int, num_classes: int, *, embedding_dim: int | None = None,
                 dropout: float = 0.7, topk_divisor: int = 8, mil_weight: float = 0.5, casl_weight: float = 0.5,
                 casl_margin: float = 0.5, casl_pairs: Literal["adjacent", "shared"] = "adjacent",
                 num_pairs: int = 3, gate_divisor: int = 8, gate_score_weight: float = 0.7) -> None:
        super().__init__()
        if casl_pairs not in ("adjacent", "shared"):
            raise ValueError(f"`casl_pairs` must be 'adjacent' or 'shared', but got {casl_pairs!r}.")
        self.embedding_dim = int(embedding_dim or feature_dim)
        self.num_classes = int(num_classes)
        self.topk_divisor, self.gate_divisor = int(topk_divisor), int(gate_divisor)
        self.mil_weight, self.casl_weight, self.casl_margin = float(mil_weight), float(casl_weight), float(casl_margin)
        self.casl_pairs, self.num_pairs = casl_pairs, int(num_pairs)
        self.gate_score_weight = float(gate_score_weight)
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
        """``mil_weight * L_MIL + casl_weight * L_CASL`` (W-TALC ``train.py``).

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
        """W-TALC's detection signals for one full-length video, in the form ``configs/*.toml`` localizes.

        Returns the CAS ``(S_c + 0.7 g_c) * [g_c > 0]`` per class ``c`` (:func:`detection_signals`), where
        ``S_c`` are the raw logits and ``g_c`` the gate (:func:`class_gate`), and the classification scores.
        The config sends every class to a single relative threshold of 0.5, ``S_c > (max + min) / 2`` (W-TALC's
        threshold; adding the constant ``0.7 g_c`` to a column moves its min, max and cut together, so the runs
        are W-TALC's up to float rounding), and scores a run by its maximum, which is W-TALC's
        ``max S_c + 0.7 g_c``. A class that fails the gate is a zero column, which no relative threshold passes,
        so a video where no class passes the gate localizes nothing, as in W-TALC.

        Args:
            output: the forward pass of one video in eval mode.

        Returns:
            ``(cas (T, C), video_scores (C,), None)``: the gated, shifted raw logits and the softmax of the mean of
            the top ``ceil(T / 8)`` logits (W-TALC's classification score, ``test.py``).
        """
        check_single_video(output)
        cas, _ = detection_signals(output.cas[0], gate_divisor=self.gate_divisor,
                                   gate_score_weight=self.gate_score_weight, topk_divisor=self.topk_divisor)
        return to_numpy(cas), to_numpy(output.video_scores[0]), None

    def plot_signals(self, output: BaselineOutput) -> tuple[np.ndarray, np.ndarray | None]:
        """Each class's logits min-max normalised over the video, so 0.5 is W-TALC's ``(max + min) / 2`` cut.

        Args:
            output: the forward pass of one video.

        Returns:
            ``(cas (T, C), None)`` in ``[0, 1]``.
        """
        check_single_video(output)
        return to_numpy(minmax_per_class(output.cas[0])), None


#: The runner's factory: ``build_model(config, *, num_classes, feature_dim)`` (:meth:`Baseline.from_config`).
build_model = WTALC.from_config
