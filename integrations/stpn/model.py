"""STPN (Nguyen et al., CVPR 2018), clean-room from ``BASELINES.md`` section 4 (the paper is normative).

Sparse temporal pooling, two independent streams (RGB = the first half of the feature channels, flow = the
second). Per stream: a class-agnostic attention ``lambda_t = sigmoid(w2^T ReLU(W1 x_t + b1) + b2)``, attention-
weighted mean pooling ``x_bar = (1/T) sum_t lambda_t x_t``, video probabilities ``sigmoid(W3 x_bar + b3)``, the
T-CAM ``a_t = W3 x_t`` and the weighted T-CAM ``psi_t = lambda_t * sigmoid(a_t)``. Loss per stream:
``BCE(y_hat, y) + beta * ||lambda||_1`` with beta = 1e-4; the two streams' losses are summed.

Where FTCL attaches (``BASELINES.md`` 4.5). STPN's per-snippet input is the raw, frozen I3D feature, so FTCL on it
would have zero gradient with respect to every STPN parameter. The embedding handed to FTCL is the recommended
one: the attention MLP's hidden layers of both streams, concatenated, ``e_t = [h_RGB_t || h_FLOW_t]`` (512-d). It is
STPN's only learned per-snippet representation and feeds the attention directly, so FTCL's gradient reaches
``W1, b1`` of both streams. (The attention-weighted features ``lambda_t x_t`` are not used: cosine similarity is
invariant to the per-snippet scale ``lambda_t``, so FTCL would be nearly inert on them.) The actionness handed to
FTCL is ``(lambda_RGB + lambda_FLOW) / 2``. No layer is added, so this is still STPN, not "STPN+embedding".

Two-stream inference. The reference localizes each stream separately (class gate 0.1 per stream, ``psi >= 0.05``,
score = mean of ``lambda * (a_RGB + a_FLOW) / 2``) and merges the streams' proposals with NMS. The shared
``localize`` takes one CAS per video, so :meth:`STPN.inference` fuses the streams first: the CAS is the mean of the
two weighted T-CAMs ``(psi_RGB + psi_FLOW) / 2`` and a class's video score is the larger of the two streams' (a
class predicted by either stream is localized, as in the union of the per-stream gates).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from integrations.common.baseline import Baseline, BaselineOutput, check_single_video, to_numpy

__all__ = ["STPN", "STPNStream", "build_model"]


class STPNStream(nn.Module):
    """One STPN stream: attention MLP, attention-weighted temporal pooling, video classifier, T-CAM.

    Args:
        input_dim: channels of this stream (1024 for I3D).
        num_classes: ``C``.
        hidden_dim: width of the attention hidden layer (256).
        pooling: ``"mean"`` (recommended; independent of the test length) or ``"sum"`` (the paper's formula).

    Shape:
        features ``(B, T, input_dim)`` -> ``(hidden (B, T, H), attention (B, T), logits (B, C), tcam (B, T, C))``.
    """

    def __init__(self, input_dim: int, num_classes: int, *, hidden_dim: int = 256,
                 pooling: Literal["mean", "sum"] = "mean") -> None:
        super().__init__()
        if pooling not in ("mean", "sum"):
            raise ValueError(f"`pooling` must be 'mean' or 'sum', but got {pooling!r}.")
        self.pooling = pooling
        self.hidden = nn.Linear(input_dim, hidden_dim)
        self.attend = nn.Linear(hidden_dim, 1)
        self.classifier = nn.Linear(input_dim, num_classes)
        # Glorot weights and zero biases, as the TensorFlow reproduction that matches the paper.
        for layer in (self.hidden, self.attend, self.classifier):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, features: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Run the stream.

        Args:
            features: ``(B, T, input_dim)``.
            valid: ``(B, T)`` bool mask of real snippets (padded ones get zero attention and are not pooled).

        Returns:
            ``(hidden, attention, video_logits, tcam)``.
        """
        hidden = F.relu(self.hidden(features))
        attention = torch.sigmoid(self.attend(hidden)[..., 0]) * valid
        pooled = torch.einsum("bt,btd->bd", attention, features)
        if self.pooling == "mean":
            pooled = pooled / valid.sum(dim=1, keepdim=True).clamp_min(1).to(pooled.dtype)
        video_logits = self.classifier(pooled)
        tcam = F.linear(features, self.classifier.weight)  # a_t = W3 x_t, no bias
        return hidden, attention, video_logits, tcam


class STPN(Baseline):
    """Two-stream STPN (RGB and flow halves of the features); see the module docstring for FTCL and fusion.

    Args:
        feature_dim: ``D`` (2048: RGB 1024 then flow 1024).
        num_classes: ``C``.
        rgb_dim: channels of the RGB stream (default ``D // 2``); the flow stream takes the rest.
        hidden_dim: width of each attention hidden layer (256); the FTCL embedding is ``2 * hidden_dim``.
        sparsity_weight: beta of the L1 attention sparsity (1e-4).
        pooling: ``"mean"`` (recommended) or ``"sum"``.

    Shape:
        features ``(B, T, D)`` -> embedding ``(B, T, 2 * hidden_dim)``, attention ``(B, T)`` in (0, 1), cas
        ``(B, T, C)`` (fused weighted T-CAM, in (0, 1)), video_scores ``(B, C)`` (max of the streams').

    Example:
        >>> import torch
        >>> model = STPN(64, 5, hidden_dim=16).eval()
        >>> out = model(torch.randn(2, 10, 64))
        >>> out.embedding.shape, out.attention.shape, out.cas.shape, out.video_scores.shape
        (torch.Size([2, 10, 32]), torch.Size([2, 10]), torch.Size([2, 10, 5]), torch.Size([2, 5]))
    """

    name = "stpn"
    streams = ("rgb", "flow")

    def __init__(self, feature_dim: int, num_classes: int, *, rgb_dim: int | None = None, hidden_dim: int = 256,
                 sparsity_weight: float = 1e-4, pooling: Literal["mean", "sum"] = "mean") -> None:
        super().__init__()
        self.rgb_dim = int(rgb_dim if rgb_dim is not None else feature_dim // 2)
        if not 0 < self.rgb_dim < feature_dim:
            raise ValueError(f"`rgb_dim` must be in (0, {feature_dim}), but got {self.rgb_dim}.")
        self.num_classes = int(num_classes)
        self.embedding_dim = 2 * int(hidden_dim)
        self.sparsity_weight = float(sparsity_weight)
        self.rgb = STPNStream(self.rgb_dim, num_classes, hidden_dim=hidden_dim, pooling=pooling)
        self.flow = STPNStream(feature_dim - self.rgb_dim, num_classes, hidden_dim=hidden_dim, pooling=pooling)

    def forward(self, features: Tensor, lengths: Tensor | None = None) -> BaselineOutput:
        """Run both streams.

        Args:
            features: ``(B, T, D)``.
            lengths: ``(B,)`` true lengths of a zero-padded batch, or ``None`` when every video fills T.

        Returns:
            The output; ``extras`` holds per stream ``<s>_attention`` ``(B, T)``, ``<s>_logits`` ``(B, C)``
            (video logits) and ``<s>_tcam`` ``(B, T, C)``.
        """
        batch, length = features.shape[:2]
        if lengths is None:
            valid = features.new_ones(batch, length, dtype=torch.bool)
        else:
            valid = torch.arange(length, device=features.device)[None] < lengths[:, None]
        extras: dict[str, Tensor] = {}
        hidden = []
        for name, stream, part in (("rgb", self.rgb, features[..., : self.rgb_dim]),
                                   ("flow", self.flow, features[..., self.rgb_dim:])):
            h, attention, logits, tcam = stream(part, valid)
            hidden.append(h)
            extras[f"{name}_attention"], extras[f"{name}_logits"], extras[f"{name}_tcam"] = attention, logits, tcam
        psi = [extras[f"{s}_attention"][..., None] * torch.sigmoid(extras[f"{s}_tcam"]) for s in self.streams]
        video_scores = torch.maximum(torch.sigmoid(extras["rgb_logits"]), torch.sigmoid(extras["flow_logits"]))
        return BaselineOutput(embedding=torch.cat(hidden, dim=2),
                              attention=(extras["rgb_attention"] + extras["flow_attention"]) / 2,
                              cas=(psi[0] + psi[1]) / 2, video_scores=video_scores, extras=extras)

    def loss(self, output: BaselineOutput, labels: Tensor, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Per stream ``BCE(y_hat, y) + beta * (1/B) sum_b sum_t lambda_bt``, summed over the two streams.

        The BCE is against the un-normalised multi-hot labels, averaged over B x C (computed from the logits,
        which equals the BCE of the probabilities without its clamp).

        Args:
            output: the forward pass.
            labels: ``(B, C)`` multi-hot.
            step: unused (no schedule).

        Returns:
            ``(loss, parts)`` with parts ``<s>_cls`` and ``<s>_sparsity`` (the unweighted L1) per stream.
        """
        parts: dict[str, Tensor] = {}
        total = labels.new_zeros(())
        for name in self.streams:
            cls = F.binary_cross_entropy_with_logits(output.extras[f"{name}_logits"], labels)
            sparsity = output.extras[f"{name}_attention"].sum(dim=1).mean()
            parts[f"{name}_cls"], parts[f"{name}_sparsity"] = cls, sparsity
            total = total + cls + self.sparsity_weight * sparsity
        return total, {key: value.detach() for key, value in parts.items()}

    def inference(self, output: BaselineOutput) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The fused weighted T-CAM and video scores of one video (see the module docstring); no attention sweep.

        Args:
            output: the forward pass of one video in eval mode.

        Returns:
            ``(cas (T, C), video_scores (C,), None)`` in ``[0, 1]``.
        """
        check_single_video(output)
        return to_numpy(output.cas[0]), to_numpy(output.video_scores[0]), None


def build_model(config: dict[str, Any], *, num_classes: int, feature_dim: int) -> STPN:
    """STPN from the ``[model]`` table of ``integrations/stpn/configs/<dataset>.toml``.

    Args:
        config: the ``[model]`` table (the key ``"_all"`` holding the whole config is ignored).
        num_classes: ``C``.
        feature_dim: ``D``.

    Returns:
        The model.
    """
    options = {key: value for key, value in config.items() if key != "_all"}
    return STPN(feature_dim, num_classes, **options)
