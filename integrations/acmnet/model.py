"""ACM-Net (Qu et al., arXiv 2104.02967), clean-room after ispc-lab/ACM-Net @4d38dc6.

Action-context modelling: a shared Conv1d embedding, a three-way attention (instance / context / background) and a
classifier over C + 1 classes whose CAS is weighted by each attention channel to give three video-level branches.
FTCL attaches to the embedding ``E`` (before the snippet mask and dropout) and the instance attention ``a_ins``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from integrations.common.baseline import Baseline, BaselineOutput, check_single_video, to_numpy

__all__ = ["ACMNet", "build_model"]


def topk_mean(scores: Tensor, k: int) -> Tensor:
    """Mean of the ``k`` largest values over time, per class (top-k MIL pooling; ``k`` clamped to [1, T]).

    Args:
        scores: ``(B, T, C)``.
        k: how many snippets to pool.

    Returns:
        ``(B, C)``.
    """
    k = max(1, min(int(k), scores.shape[1]))
    return scores.topk(k, dim=1).values.mean(dim=1)


class ACMNet(Baseline):
    """ACM-Net with its three branches and its six-term loss.

    Args:
        feature_dim: ``D`` of the input features (2048 on THUMOS14).
        num_classes: ``C`` foreground classes (the classifier has C + 1 outputs, the last is background).
        embedding_dim: ``E`` (default ``D``, as in the reference).
        dropout: the snippet-mask and the elementwise dropout rates on the CAS path (0.7).
        input_dropout: dropout before the embedding conv and before the attention conv (0 on THUMOS14, 0.7 on
            ActivityNet).
        topk_divisors: ``(ins, con, bak)``: ``k = max(1, T // divisor)`` ((8, 3, 3) on THUMOS14, (2, 10, 10) on
            ActivityNet).
        branch_weights: weights of the instance, context and background cross-entropies ((1, 1, 1); (5, 1, 1)).
        guide_weight: lambda_1 (2e-3; 5e-3).
        feature_weight: lambda_2 (5e-5).
        sparsity_weight: lambda_3 (2e-4; 0).
        margin: M of the feature loss (50).

    Shape:
        features ``(B, T, D)`` -> embedding ``(B, T, E)``, attention ``(B, T)``, cas ``(B, T, C)``, video_scores
        ``(B, C)``.
    """

    name = "acmnet"

    def __init__(self, feature_dim: int, num_classes: int, *, embedding_dim: int | None = None, dropout: float = 0.7,
                 input_dropout: float = 0.0, topk_divisors: tuple[int, int, int] = (8, 3, 3),
                 branch_weights: tuple[float, float, float] = (1.0, 1.0, 1.0), guide_weight: float = 2e-3,
                 feature_weight: float = 5e-5, sparsity_weight: float = 2e-4, margin: float = 50.0) -> None:
        super().__init__()
        self.embedding_dim = int(embedding_dim or feature_dim)
        self.num_classes = int(num_classes)
        self.topk_divisors = tuple(int(d) for d in topk_divisors)
        self.branch_weights = tuple(float(w) for w in branch_weights)
        self.guide_weight, self.feature_weight = float(guide_weight), float(feature_weight)
        self.sparsity_weight, self.margin = float(sparsity_weight), float(margin)
        self.input_dropout = nn.Dropout(input_dropout)
        self.embed = nn.Conv1d(feature_dim, self.embedding_dim, kernel_size=3, padding=1)
        self.attention_dropout = nn.Dropout(input_dropout)
        self.attend = nn.Conv1d(self.embedding_dim, 3, kernel_size=1)
        self.snippet_mask = nn.Dropout(dropout)
        self.cas_dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.embedding_dim, num_classes + 1)

    def forward(self, features: Tensor, lengths: Tensor | None = None) -> BaselineOutput:
        """Run ACM-Net (``lengths`` is accepted for the interface; training clips are always sampled to T).

        Args:
            features: ``(B, T, D)``.
            lengths: unused (see above).

        Returns:
            The output; ``extras`` holds the three branches' log video scores, ``P_ins``'s background column
            and the pooled branch features.
        """
        x = self.input_dropout(features.transpose(1, 2))
        embedding = F.relu(self.embed(x))  # (B, E, T)
        weights = torch.softmax(self.attend(self.attention_dropout(embedding)), dim=1)  # (B, 3, T)
        a_ins, a_con, a_bak = weights[:, 0], weights[:, 1], weights[:, 2]
        mask = self.snippet_mask(embedding.new_ones(embedding.shape[0], 1, embedding.shape[2]))
        cas = self.classifier(self.cas_dropout(embedding * mask).transpose(1, 2))  # (B, T, C+1)
        embedding = embedding.transpose(1, 2)  # (B, T, E)
        length = cas.shape[1]
        extras: dict[str, Tensor] = {}
        for branch, attention, divisor in zip(("ins", "con", "bak"), (a_ins, a_con, a_bak), self.topk_divisors):
            k = max(1, length // divisor)
            extras[f"log_p_{branch}"] = torch.log_softmax(topk_mean(cas * attention[..., None], k), dim=-1)
            top = attention.topk(min(k, length), dim=1).indices
            extras[f"f_{branch}"] = embedding.gather(1, top[..., None].expand(-1, -1, embedding.shape[2])).mean(1)
        p_ins_t = torch.softmax(cas * a_ins[..., None], dim=-1)  # P_ins (B, T, C+1)
        extras["background_ins"] = p_ins_t[..., -1]
        extras["a_con"] = a_con
        video_scores = extras["log_p_ins"].exp()[:, : self.num_classes]
        return BaselineOutput(embedding=embedding, attention=a_ins, cas=p_ins_t[..., : self.num_classes],
                              video_scores=video_scores, extras=extras)

    def loss(self, output: BaselineOutput, labels: Tensor, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        """ACM-Net's loss: three branch cross-entropies, guide, feature-norm and sparsity terms (``model/ACMNet.py``).

        A video without labels gives an all-zero instance target here, so its instance cross-entropy is 0 and the
        loss stays finite; ACM-Net divides by the label count, gets NaN and skips the whole batch
        (``main_thu.py``). The data loaders refuse unlabelled training videos, so this only matters for callers
        that build batches themselves.

        Args:
            output: the forward pass.
            labels: ``(B, C)`` multi-hot.
            step: unused (no schedule).

        Returns:
            ``(loss, parts)``.
        """
        ex = output.extras
        batch = labels.shape[0]
        zeros, ones = labels.new_zeros(batch, 1), labels.new_ones(batch, 1)
        count = labels.sum(dim=1, keepdim=True)
        targets = {
            "ins": torch.cat([labels, zeros], dim=1) / count.clamp_min(1),
            "con": torch.cat([labels, ones], dim=1) / (count + 1),
            "bak": torch.cat([torch.zeros_like(labels), ones], dim=1),
        }
        parts = {f"{b}_ce": -(targets[b] * ex[f"log_p_{b}"]).sum(dim=1).mean() for b in ("ins", "con", "bak")}
        # Guide: sum over T of |1 - P_ins(background) - sg(a_ins)|; the attention term is detached.
        parts["guide"] = (1 - ex["background_ins"] - output.attention.detach()).abs().sum(dim=1).mean()
        norm = {b: ex[f"f_{b}"].norm(dim=1) for b in ("ins", "con", "bak")}
        parts["feature"] = (F.relu(self.margin - norm["ins"] + norm["con"])
                            + F.relu(self.margin - norm["con"] + norm["bak"]) + norm["bak"]).pow(2).mean()
        parts["sparsity"] = (output.attention.sum(dim=1) + ex["a_con"].sum(dim=1)).mean() / 2
        loss = sum(w * parts[f"{b}_ce"] for w, b in zip(self.branch_weights, ("ins", "con", "bak")))
        loss = (loss + self.guide_weight * parts["guide"] + self.feature_weight * parts["feature"]
                + self.sparsity_weight * parts["sparsity"])
        return loss, {key: value.detach() for key, value in parts.items()}

    def inference(self, output: BaselineOutput) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``P_ins`` foreground columns, ``p_ins`` foreground scores and ``a_ins`` of one video (``main_thu.py``).

        Args:
            output: the forward pass of one video in eval mode.

        Returns:
            ``(cas (T, C), video_scores (C,), attention (T,))``.
        """
        check_single_video(output)
        return to_numpy(output.cas[0]), to_numpy(output.video_scores[0]), to_numpy(output.attention[0])


#: The runner's factory: ``build_model(config, *, num_classes, feature_dim)`` (:meth:`Baseline.from_config`).
build_model = ACMNet.from_config
