"""The interface every clean-room baseline implements, so one runner can train, evaluate and add FTCL to all.

Each ``integrations/<name>/model.py`` defines a :class:`Baseline` subclass and names its factory::

    build_model = ACMNet.from_config   # build_model(config, *, num_classes, feature_dim) -> ACMNet

where ``config`` is the ``[model]`` table of ``integrations/<name>/configs/<dataset>.toml`` (plus the whole resolved
config under the key ``"_all"`` for baselines that take an option from another table, see
:attr:`Baseline.shared_options`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["Baseline", "BaselineOutput", "check_single_video", "minmax_over_time", "to_numpy"]

_B = TypeVar("_B", bound="Baseline")


@dataclass
class BaselineOutput:
    """What a baseline's forward pass returns.

    Attributes:
        embedding: ``(B, T, E)`` per-snippet embedding; FTCL is attached here.
        attention: ``(B, T)`` action attention in ``[0, 1]`` (``None`` only when the baseline documents the
            substitute the runner should hand to FTCL; see :meth:`Baseline.ftcl_attention`).
        cas: ``(B, T, C)`` per-class snippet scores (logits or probabilities, the baseline's own convention; the
            baseline's :meth:`Baseline.inference` turns them into ``[0, 1]`` scores for localization).
        video_scores: ``(B, C)`` video-level class scores in ``[0, 1]``.
        extras: anything else the baseline's own loss needs (other branches, raw logits, ...).
    """

    embedding: Tensor
    attention: Tensor | None
    cas: Tensor
    video_scores: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)


class Baseline(nn.Module):
    """Base class of the clean-room baselines under ``integrations/``.

    Subclasses set :attr:`name` and implement :meth:`forward`, :meth:`loss` and :meth:`inference`. The runner adds
    FTCL as the README does: ``model.ftcl = FTCL(feature_dim=model.embedding_dim)`` before the optimizer is built,
    and ``loss = loss + model.ftcl(output.embedding, model.ftcl_attention(output), labels)`` every step.

    Attributes:
        name: short name of the baseline (``"acmnet"``, ``"cola"``, ``"wtalc"``, ``"stpn"``).
        embedding_dim: ``E``, the last dimension of :attr:`BaselineOutput.embedding` (set by subclasses).
    """

    name: str = "baseline"
    embedding_dim: int = 0

    #: Constructor options this baseline takes from other tables of the whole config, as
    #: ``{option: (table, key)}``: one number two tables need is set once (STPN's class threshold, W-TALC's
    #: same-class pairs per batch). A key of ``[model]`` wins.
    shared_options: ClassVar[Mapping[str, tuple[str, str]]] = {}

    @classmethod
    def from_config(cls: type[_B], config: Mapping[str, Any], *, num_classes: int, feature_dim: int) -> _B:
        """The baseline built from its ``[model]`` table: ``cls(feature_dim, num_classes, **table)``.

        Args:
            config: the ``[model]`` table, with the whole resolved config under the key ``"_all"`` when there is
                one (read for :attr:`shared_options`).
            num_classes: ``C``.
            feature_dim: ``D``.

        Returns:
            The model.

        Raises:
            TypeError: for a ``[model]`` key the constructor does not take.
        """
        whole = config.get("_all", {})
        shared = {option: whole[table][key] for option, (table, key) in cls.shared_options.items()
                  if key in whole.get(table, {})}
        return cls(feature_dim, num_classes, **(shared | {k: v for k, v in config.items() if k != "_all"}))

    def forward(self, features: Tensor, lengths: Tensor | None = None) -> BaselineOutput:  # pragma: no cover
        """Run the model on a batch.

        Args:
            features: ``(B, T, D)`` snippet features (zero-padded past ``lengths``).
            lengths: ``(B,)`` int64 true lengths, or ``None`` when every video fills ``T``.

        Returns:
            The :class:`BaselineOutput` of the batch.
        """
        raise NotImplementedError

    def loss(self, output: BaselineOutput, labels: Tensor, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        """The baseline's own training loss (without FTCL).

        Args:
            output: the forward pass of the batch.
            labels: ``(B, C)`` multi-hot video labels.
            step: the global training step (for schedules inside the loss).

        Returns:
            ``(loss, parts)``: the scalar loss and a dict of its named, detached-or-not scalar parts for logging.
        """
        raise NotImplementedError  # pragma: no cover

    def inference(self, output: BaselineOutput) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Turn the forward pass of ONE video (``B = 1``) into what ``ftcl_plugin.localization.localize`` takes.

        The arrays are on the scale the baseline's ``[localization]`` config expects: probabilities in ``[0, 1]``
        for ACM-Net and CoLA, gated raw logits for W-TALC, and for STPN both streams' signals side by side
        (``(T, 2C)``, localized with ``streams = 2``). ``video_scores`` are also the classification scores.

        Args:
            output: the forward pass of a single video.

        Returns:
            ``(cas (T, S*C), video_scores (C,), attention (T,), (T, S*C) or None)`` as float numpy arrays.
        """
        raise NotImplementedError  # pragma: no cover

    def plot_signals(self, output: BaselineOutput) -> tuple[np.ndarray, np.ndarray | None]:
        """What a plot of ONE video shows: a ``(T, C)`` CAS and a ``(T,)`` attention (or ``None``), in ``[0, 1]``.

        By default the first and last arrays of :meth:`inference`; baselines whose localization inputs are not
        one ``[0, 1]`` CAS per class (W-TALC's gated logits, STPN's two streams) override it.

        Args:
            output: the forward pass of a single video.

        Returns:
            ``(cas (T, C), attention (T,) or None)`` as float numpy arrays.
        """
        cas, _, attention = self.inference(output)
        return cas, attention

    def ftcl_attention(self, output: BaselineOutput) -> Tensor:
        """The action attention handed to FTCL: ``output.attention`` by default.

        Baselines without an attention branch override this with the substitute they document (for example the
        maximum foreground class score per snippet).

        Args:
            output: the forward pass of the batch.

        Returns:
            ``(B, T)`` attention scores (higher = more action-like).

        Raises:
            ValueError: if the output has no attention and the baseline did not override this method.
        """
        if output.attention is None:
            raise ValueError(
                f"baseline {self.name!r} returns no attention; override `ftcl_attention` with its documented "
                "substitute."
            )
        return output.attention

    def localization_overrides(self) -> dict[str, object]:
        """Keyword overrides for ``LocalizationConfig`` that the baseline's inference needs (default: none).

        Returns:
            A dict merged over the ``[localization]`` table of the config.
        """
        return {}


def check_single_video(output: BaselineOutput) -> None:
    """Raise if ``output`` is not a single video's forward pass (helper for :meth:`Baseline.inference`).

    Args:
        output: a forward pass.

    Raises:
        ValueError: if the batch holds more than one video.
    """
    if output.cas.shape[0] != 1:
        raise ValueError(f"`inference` takes the output of one video (B = 1), but got B = {output.cas.shape[0]}.")


def to_numpy(tensor: Tensor) -> np.ndarray:
    """Detach a tensor to a float64 numpy array on the CPU (helper for :meth:`Baseline.inference`).

    Args:
        tensor: any tensor.

    Returns:
        The float64 array.
    """
    return tensor.detach().to(device="cpu", dtype=torch.float64).numpy()


def minmax_over_time(values: Tensor) -> Tensor:
    """CoLA's per-video normalisation over time of a ``(T, C)`` sequence (zhang-can/CoLA ``core/utils.py``).

    Each column is mapped to [0, 1] between its ReLU'd minimum and maximum; a constant column keeps a span of 1.
    Shared by the clean-room CoLA's inference and the ``--upstream`` CoLA driver, so both score alike.

    Args:
        values: ``(T, C)``.

    Returns:
        ``(T, C)`` in [0, 1].
    """
    low = torch.relu(values.min(dim=0).values)
    high = torch.relu(values.max(dim=0).values)
    span = high - low
    span = torch.where(span > 0, span, torch.ones_like(span))
    return ((values - low) / span).clamp(0.0, 1.0)
