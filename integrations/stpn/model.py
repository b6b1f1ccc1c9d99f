"""STPN (Nguyen et al., CVPR 2018), clean-room after the paper; the only public code, the unofficial reproduction
demianzhang/weakly-action-localization @946a812, settles what the paper leaves open.

Sparse temporal pooling, two independent streams (RGB = the first half of the feature channels, flow = the
second). Per stream: a class-agnostic attention ``lambda_t = sigmoid(w2^T ReLU(W1 x_t + b1) + b2)``, the
attention-weighted temporal pooling ``x_bar = sum_t lambda_t x_t`` (the paper's sum; ``pooling="mean"`` divides by
the number of snippets), video probabilities ``sigmoid(W3 x_bar + b3)``, the T-CAM ``a_t = W3 x_t`` and the
weighted T-CAM ``psi_t = lambda_t * sigmoid(a_t)``. Loss per stream: ``BCE(y_hat, y) + beta * ||lambda||_1`` with
the paper's beta = 1e-4; the two streams' losses are summed. Weights start from N(0, 0.001^2) and biases from 0,
as in the reproduction's ``STPN.py``: with sum pooling over hundreds of snippets, Glorot-initialised weights start
from saturated video probabilities (a first-epoch BCE of 16 on the built-in data) and the attention collapses
towards 0.

Where FTCL attaches. STPN's per-snippet input is the raw, frozen I3D feature, so FTCL on it would have zero gradient
with respect to every STPN parameter. The embedding handed to FTCL is the attention MLP's hidden layers of both
streams, concatenated, ``e_t = [h_RGB_t || h_FLOW_t]`` (512-d): STPN's only learned per-snippet representation,
which feeds the attention directly, so FTCL's gradient reaches ``W1, b1`` of both streams. (The attention-weighted
features ``lambda_t x_t`` are not used: cosine similarity is invariant to the per-snippet scale ``lambda_t``, so
FTCL would be nearly inert on them.) The actionness handed to FTCL is ``(lambda_RGB + lambda_FLOW) / 2``. No layer
is added, so this is still STPN, not "STPN+embedding".

Inference is the paper's two-stream scheme: per stream ``s``, the classes whose probability passes 0.1; proposals
are the runs where ``psi^s_c >= 0.05`` on the x24-upsampled signal, each scored by the mean over the run of
``lambda^s_t * (a^s_t,c + a^other_t,c) / 2``; the two streams' proposals of a class are pooled and suppressed by NMS
at IoU 0.5. :meth:`STPN.inference` returns both streams' signals side by side, :meth:`STPN.localization_overrides`
sets ``streams = 2`` and ``configs/*.toml`` holds the rest. (The reproduction instead localizes one stream per
run, on a min-max normalised CAM, scores a run by its maximum and applies NMS per stream; see
``docs/baselines.md``.)
"""

from __future__ import annotations

from typing import Literal

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
        pooling: ``"sum"`` (the paper's formula and the reproduction's) or ``"mean"`` (divided by the number of
            real snippets, independent of the input length).
        init: ``"normal"``: weights N(0, ``init_std``^2), biases 0 (the reproduction); ``"xavier"``: Glorot-uniform
            weights, biases 0 (the TensorFlow reproduction bellos1203/STPN).
        init_std: standard deviation of the ``"normal"`` init (0.001).

    Shape:
        features ``(B, T, input_dim)`` -> ``(hidden (B, T, H), attention (B, T), logits (B, C), tcam (B, T, C))``.
    """

    def __init__(self, input_dim: int, num_classes: int, *, hidden_dim: int = 256,
                 pooling: Literal["sum", "mean"] = "sum", init: Literal["normal", "xavier"] = "normal",
                 init_std: float = 0.001) -> None:
        super().__init__()
        if pooling not in ("sum", "mean"):
            raise ValueError(f"`pooling` must be 'sum' or 'mean', but got {pooling!r}.")
        if init not in ("normal", "xavier"):
            raise ValueError(f"`init` must be 'normal' or 'xavier', but got {init!r}.")
        self.pooling = pooling
        self.hidden = nn.Linear(input_dim, hidden_dim)
        self.attend = nn.Linear(hidden_dim, 1)
        self.classifier = nn.Linear(input_dim, num_classes)
        for layer in (self.hidden, self.attend, self.classifier):
            if init == "normal":
                nn.init.normal_(layer.weight, std=init_std)
            else:
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
        hidden = self.embed(features)
        return (hidden, *self.heads(hidden, features, valid))

    def embed(self, features: Tensor) -> Tensor:
        """The attention's hidden layer ``h_t = ReLU(W1 x_t + b1)``, ``(B, T, hidden_dim)``."""
        return F.relu(self.hidden(features))

    def heads(self, hidden: Tensor, features: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(attention, video_logits, tcam)`` from the hidden layer and the stream's features."""
        attention = torch.sigmoid(self.attend(hidden)[..., 0]) * valid
        pooled = torch.einsum("bt,btd->bd", attention, features)
        if self.pooling == "mean":
            pooled = pooled / valid.sum(dim=1, keepdim=True).clamp_min(1).to(pooled.dtype)
        video_logits = self.classifier(pooled)
        tcam = F.linear(features, self.classifier.weight)  # a_t = W3 x_t, no bias
        return attention, video_logits, tcam


class STPN(Baseline):
    """Two-stream STPN (RGB and flow halves of the features); see the module docstring for FTCL and inference.

    Args:
        feature_dim: ``D`` (2048: RGB 1024 then flow 1024).
        num_classes: ``C``.
        rgb_dim: channels of the RGB stream (default ``D // 2``); the flow stream takes the rest.
        hidden_dim: width of each attention hidden layer (256); the FTCL embedding is ``2 * hidden_dim``.
        sparsity_weight: beta of the L1 attention sparsity (1e-4, the paper; the reproduction's ``/ 5000`` is 2e-4).
        pooling: ``"sum"`` (the paper) or ``"mean"``; see :class:`STPNStream`.
        init: ``"normal"`` (the reproduction) or ``"xavier"``; see :class:`STPNStream`.
        init_std: standard deviation of the ``"normal"`` init (0.001).
        stream_threshold: a stream localizes class ``c`` when its probability is above this (0.1, the paper).
        score_mix: ``alpha`` of the proposal score ``lambda^s (alpha a^s + (1 - alpha) a^other)`` (0.5).

    Shape:
        features ``(B, T, D)`` -> embedding ``(B, T, 2 * hidden_dim)``, attention ``(B, T)`` in (0, 1), cas
        ``(B, T, C)`` (the mean of the two weighted T-CAMs, in (0, 1)), video_scores ``(B, C)`` (the larger of the
        two streams' probabilities).

    Example:
        >>> import torch
        >>> model = STPN(64, 5, hidden_dim=16).eval()
        >>> out = model(torch.randn(2, 10, 64))
        >>> out.embedding.shape, out.attention.shape, out.cas.shape, out.video_scores.shape
        (torch.Size([2, 10, 32]), torch.Size([2, 10]), torch.Size([2, 10, 5]), torch.Size([2, 5]))
        >>> cas, scores, psi = model.inference(model(torch.randn(1, 10, 64)))
        >>> cas.shape, scores.shape, psi.shape   # both streams side by side: RGB columns, then flow
        ((10, 10), (5,), (10, 10))
    """

    name = "stpn"
    # One class threshold for the per-stream gate and the localization's class selection.
    shared_options = {"stream_threshold": ("localization", "class_threshold")}
    streams = ("rgb", "flow")

    def __init__(self, feature_dim: int, num_classes: int, *, rgb_dim: int | None = None, hidden_dim: int = 256,
                 sparsity_weight: float = 1e-4, pooling: Literal["sum", "mean"] = "sum",
                 init: Literal["normal", "xavier"] = "normal", init_std: float = 0.001,
                 stream_threshold: float = 0.1, score_mix: float = 0.5) -> None:
        super().__init__()
        self.rgb_dim = int(rgb_dim if rgb_dim is not None else feature_dim // 2)
        if not 0 < self.rgb_dim < feature_dim:
            raise ValueError(f"`rgb_dim` must be in (0, {feature_dim}), but got {self.rgb_dim}.")
        self.num_classes = int(num_classes)
        self.embedding_dim = 2 * int(hidden_dim)
        self.sparsity_weight = float(sparsity_weight)
        self.stream_threshold, self.score_mix = float(stream_threshold), float(score_mix)
        options = {"hidden_dim": hidden_dim, "pooling": pooling, "init": init, "init_std": init_std}
        self.rgb = STPNStream(self.rgb_dim, num_classes, **options)
        self.flow = STPNStream(feature_dim - self.rgb_dim, num_classes, **options)

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
        parts = (features[..., : self.rgb_dim], features[..., self.rgb_dim:])
        # FTCL's embedding [h_RGB || h_FLOW] is the tensor the attention heads read (each its half), so the
        # gradient of STPN's own loss on the embedding is where FTCL measures its share.
        embedding = torch.cat([self.rgb.embed(parts[0]), self.flow.embed(parts[1])], dim=2)
        width = embedding.shape[2] // 2
        for name, stream, part, h in (("rgb", self.rgb, parts[0], embedding[..., :width]),
                                      ("flow", self.flow, parts[1], embedding[..., width:])):
            attention, logits, tcam = stream.heads(h, part, valid)
            extras[f"{name}_attention"], extras[f"{name}_logits"], extras[f"{name}_tcam"] = attention, logits, tcam
        psi = [extras[f"{s}_attention"][..., None] * torch.sigmoid(extras[f"{s}_tcam"]) for s in self.streams]
        video_scores = torch.maximum(torch.sigmoid(extras["rgb_logits"]), torch.sigmoid(extras["flow_logits"]))
        return BaselineOutput(embedding=embedding,
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

    def localization_overrides(self) -> dict[str, object]:
        """``streams = 2``: :meth:`inference` puts both streams' signals side by side.

        Returns:
            The override of ``LocalizationConfig``.
        """
        return {"streams": 2}

    def inference(self, output: BaselineOutput) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Both streams' proposal signals of one video, RGB columns then flow (localized with ``streams = 2``).

        Per stream ``s`` and class ``c``: the score signal ``lambda^s * (alpha a^s_c + (1 - alpha) a^other_c)``
        (raw T-CAMs) and the localization signal ``psi^s_c = lambda^s * sigmoid(a^s_c)``, set to 0 where the
        stream's probability of ``c`` is not above ``stream_threshold`` (so that stream proposes nothing for
        ``c``). The video score of a class is the larger of the streams' probabilities, so the config's class
        threshold (the same 0.1) passes a class when either stream does.

        Args:
            output: the forward pass of one video in eval mode.

        Returns:
            ``(score signals (T, 2C), video_scores (C,), localization signals (T, 2C))``.
        """
        check_single_video(output)
        ex = output.extras
        scores, signals = [], []
        for name, other in (("rgb", "flow"), ("flow", "rgb")):
            attention = ex[f"{name}_attention"][0, :, None]
            mixed = self.score_mix * ex[f"{name}_tcam"][0] + (1 - self.score_mix) * ex[f"{other}_tcam"][0]
            scores.append(attention * mixed)
            passed = torch.sigmoid(ex[f"{name}_logits"][0]) > self.stream_threshold
            signals.append(attention * torch.sigmoid(ex[f"{name}_tcam"][0]) * passed)
        return (to_numpy(torch.cat(scores, dim=1)), to_numpy(output.video_scores[0]),
                to_numpy(torch.cat(signals, dim=1)))

    def plot_signals(self, output: BaselineOutput) -> tuple[np.ndarray, np.ndarray | None]:
        """The mean of the two streams' weighted T-CAMs ``psi`` and of their attentions, in ``[0, 1]``.

        Args:
            output: the forward pass of one video.

        Returns:
            ``(cas (T, C), attention (T,))``.
        """
        check_single_video(output)
        return to_numpy(output.cas[0]), to_numpy(output.attention[0])


#: The runner's factory: ``build_model(config, *, num_classes, feature_dim)`` (:meth:`Baseline.from_config`).
build_model = STPN.from_config
