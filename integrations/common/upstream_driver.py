"""What the four ``--upstream`` drivers share (each driver is ``integrations/<name>/upstream.py``).

A driver trains the user's own checkout inside an entered ``patches.<name>`` session and returns an
:class:`UpstreamRun`; :func:`integrations.common.upstream.run_upstream` does the rest (run folder, checkpoint,
evaluation with our localization, outputs). A driver module defines:

- ``LAYOUT``: the feature layout the upstream's own dataset class reads (``--data`` must be in it);
- ``drive(up, ctx, out) -> UpstreamRun``: build the upstream's model, optimizer, loss and data as its own script
  does, attach FTCL with ``patches.<name>.attach``, run the upstream's training step or epoch, run its own
  evaluation where it can, and wrap the model in an :class:`UpstreamModel` for ours.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .baseline import Baseline, BaselineOutput, check_single_video, to_numpy
from .context import Context, make_contrastive
from .files import read_checkpoint

__all__ = ["RecordingWriter", "UpstreamModel", "UpstreamRun", "attachable_ftcl", "epoch_row", "load_init_from",
           "seed_everything", "total_steps"]

#: ``features (1, T, D) -> (cas (T, C), video_scores (C,), attention (T,) or None)``.
Signals = Callable[[Tensor], tuple[Tensor, Tensor, "Tensor | None"]]


class UpstreamModel(Baseline):
    """Wraps an upstream model so our localization and evaluator can score it (inference only).

    Args:
        name: the baseline's name.
        model: the upstream model.
        run: ``features (1, T, D) -> (cas (T, C), video_scores (C,), attention (T,) or None)`` as tensors, the
            upstream's outputs mapped the way its own inference reads them.
        overrides: ``LocalizationConfig`` keyword overrides.
        plot: ``(cas (T, C), attention (T,) or None) -> (cas, attention)`` in ``[0, 1]`` for ``plot.png``, when the
            localization signals are not (default: shown as they are).
    """

    def __init__(self, name: str, model: nn.Module, run: Signals, overrides: Mapping[str, Any] | None = None,
                 plot: Callable[[Tensor, Tensor | None], tuple[Tensor, Tensor | None]] | None = None) -> None:
        super().__init__()
        self.name = name
        self.upstream = model
        self._run = run
        self._overrides = dict(overrides or {})
        self._plot = plot

    def forward(self, features: Tensor, lengths: Tensor | None = None) -> BaselineOutput:
        """Run the upstream model on one video and keep what inference needs."""
        cas, video_scores, attention = self._run(features)
        return BaselineOutput(embedding=features, attention=None if attention is None else attention[None],
                              cas=cas[None], video_scores=video_scores[None])

    def inference(self, output: BaselineOutput) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(cas, video_scores, attention)`` of one video as numpy arrays."""
        check_single_video(output)
        attention = None if output.attention is None else to_numpy(output.attention[0])
        return to_numpy(output.cas[0]), to_numpy(output.video_scores[0]), attention

    def plot_signals(self, output: BaselineOutput) -> tuple[np.ndarray, np.ndarray | None]:
        """The plotted CAS and attention of one video (``plot`` applied when given)."""
        check_single_video(output)
        cas, attention = output.cas[0], None if output.attention is None else output.attention[0]
        if self._plot is not None:
            cas, attention = self._plot(cas, attention)
        return to_numpy(cas), None if attention is None else to_numpy(attention)

    def localization_overrides(self) -> dict[str, object]:
        """The localization settings this upstream's inference uses."""
        return dict(self._overrides)


@dataclass
class UpstreamRun:
    """What a driver hands back.

    Attributes:
        model: the trained upstream model, wrapped for our evaluation.
        history: one metrics row per epoch (:func:`epoch_row`).
        evaluation: the upstream's own evaluation numbers, or ``{"name": ..., "failed": reason}``.
        ftcl_steps: the steps FTCL's loss was added in.
        extra: more facts for ``upstream.json`` (STPN's ``stream``).
    """

    model: UpstreamModel
    history: list[dict[str, Any]]
    evaluation: dict[str, Any]
    ftcl_steps: int
    extra: dict[str, Any] = field(default_factory=dict)


class RecordingWriter:
    """Collects what the upstream logs through a tensorboard-style ``add_scalar`` / ``log_value``."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}

    def add_scalar(self, key: str, value: Any, step: int | None = None) -> None:
        """Record one value (a tensor is detached)."""
        value = value.detach() if isinstance(value, Tensor) else value
        self.values.setdefault(key, []).append(float(value))

    def log_value(self, key: str, value: Any, step: int | None = None) -> None:
        """``tensorboard_logger``'s name for :meth:`add_scalar`."""
        self.add_scalar(key, value, step)

    def marks(self) -> dict[str, int]:
        """How many values each key holds now (pass to :meth:`means_since` later)."""
        return {key: len(values) for key, values in self.values.items()}

    def means_since(self, marks: Mapping[str, int]) -> dict[str, float]:
        """The mean of each key's values recorded after ``marks``."""
        return {key: float(np.mean(values[marks.get(key, 0):])) for key, values in self.values.items()
                if len(values) > marks.get(key, 0)}


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators.

    The upstream code draws from the global RNGs (``np.random`` in its samplers, torch for init and dropout).

    Args:
        seed: the run's seed.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_init_from(model: nn.Module, path: str | None) -> None:
    """Load ``--init-from`` (``meta.init_from``) into the upstream model, before FTCL is attached.

    The checkpoint is the upstream's own format: a state_dict, ACM-Net's ``{"model_state_dict": ...}``, or the
    ``{"model": ...}`` an earlier ``--upstream`` run saved; it is read with ``weights_only=True``.

    Args:
        model: the upstream model.
        path: the checkpoint, or ``None`` (nothing is loaded).

    Raises:
        CheckpointError: if the file is not a readable checkpoint.
    """
    if not path:
        return
    state = read_checkpoint(Path(path), "--init-from")
    model.load_state_dict(state.get("model_state_dict", state.get("model", state)))


def attachable_ftcl(ctx: Context, embedding_dim: int) -> nn.Module | None:
    """FTCL for ``patches.<name>.attach`` on the run's device, or ``None`` when the run has FTCL off.

    Args:
        ctx: the run context.
        embedding_dim: ``E`` of the upstream's embedding.

    Returns:
        The module, or ``None``.
    """
    return make_contrastive(ctx, embedding_dim).to(ctx.device) if ctx.settings.ftcl.enabled else None


def total_steps(ctx: Context, per_epoch: int) -> int:
    """The run's optimizer steps: ``train.epochs`` epochs of ``per_epoch`` steps, capped by ``train.iterations``.

    Args:
        ctx: the run context.
        per_epoch: steps in one of the upstream's epochs.

    Returns:
        The number of steps.
    """
    train = ctx.settings.train
    total = train.epochs * per_epoch
    return min(train.iterations, total) if train.iterations else total


def epoch_row(epoch: int, step: int, logged: Mapping[str, Any], ftcl_values: list[float]) -> dict[str, Any]:
    """One ``metrics.csv`` row: the epoch, the step, the upstream's finite logged numbers and FTCL's mean loss.

    Args:
        epoch: the epoch (1-based).
        step: the steps taken so far.
        logged: what the upstream logged over the epoch (non-numbers and non-finite values are left out).
        ftcl_values: FTCL's loss at each step of the epoch.

    Returns:
        The row.

    Example:
        >>> epoch_row(2, 26, {"loss": 1.5, "name": "x", "bad": float("nan")}, [0.5, 1.0])
        {'epoch': 2, 'step': 26, 'loss': 1.5, 'ftcl_loss': 0.75}
    """
    row: dict[str, Any] = {"epoch": epoch, "step": step}
    for key, value in logged.items():
        if isinstance(value, (int, float, np.floating, np.integer)) and math.isfinite(float(value)):
            row[key] = float(value)
    if ftcl_values:
        row["ftcl_loss"] = float(np.mean(ftcl_values))
    return row
