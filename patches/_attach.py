"""The FTCL attachment: forward hooks that catch the embedding and the attention, the optimizer's FTCL parameter
group, and the FTCL term a wrapped upstream loss adds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ._undo import _Undo

__all__ = ["FTCLAttachment"]


@dataclass
class FTCLAttachment:
    """FTCL wired into an upstream model, optimizer and loss; :meth:`remove` undoes it.

    Attributes:
        ftcl: the FTCL module (``None`` when the run is the plain baseline).
        captured: the tensors the forward hooks caught in the last training forward pass: ``"embedding"``
            ``(B, T, D)`` and ``"attention"`` ``(B, T)``.
        history: the FTCL loss of every training step, as floats (for the metrics CSV), as FTCL weighted it
            (its warm-up schedule and gradient-share cap are its own).
        calls: how many times each hook fired (for tests).
    """

    ftcl: nn.Module | None
    captured: dict[str, Tensor] = field(default_factory=dict)
    history: list[float] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    _handles: list[Any] = field(default_factory=list)
    _undo: _Undo = field(default_factory=_Undo)

    def hook(self, module: nn.Module, key: str, transform: Callable[[Tensor], Tensor]) -> None:
        """Catch ``transform(output)`` of ``module`` under ``key`` in training forward passes.

        Args:
            module: the upstream submodule whose output is the embedding or the attention.
            key: ``"embedding"`` or ``"attention"``.
            transform: maps the module's raw output to ``(B, T, D)`` / ``(B, T)``.
        """

        def forward_hook(mod: nn.Module, inputs: Any, output: Any) -> None:
            if mod.training and torch.is_grad_enabled():
                self.captured[key] = transform(output)
                self.calls[key] = self.calls.get(key, 0) + 1

        self._handles.append(module.register_forward_hook(forward_hook))

    def add_to_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Add the FTCL parameters to ``optimizer`` as a new group with the first group's lr and weight decay.

        Args:
            optimizer: the upstream's optimizer, already built over the model's parameters.
        """
        if self.ftcl is None:
            return
        params = [p for p in self.ftcl.parameters() if p.requires_grad]
        if not params:
            return
        first = optimizer.param_groups[0]
        group = {"params": params, "name": "ftcl"}
        for key in ("lr", "weight_decay"):
            if key in first:
                group[key] = first[key]
        optimizer.add_param_group(group)

    def ftcl_loss(self, labels: Tensor, *, lengths: Tensor | None = None) -> Tensor | None:
        """FTCL on the captured embedding and attention, or ``None`` outside training / without FTCL.

        The captured tensors are consumed so that a later evaluation pass cannot reuse them.

        Args:
            labels: ``(B, C)`` multi-hot labels of the batch the hooks saw.
            lengths: ``(B,)`` true lengths for zero-padded batches.

        Returns:
            The scalar loss, or ``None``.
        """
        if self.ftcl is None or "embedding" not in self.captured or "attention" not in self.captured:
            return None
        embedding = self.captured.pop("embedding")
        attention = self.captured.pop("attention")
        labels = labels.to(device=embedding.device, dtype=embedding.dtype)
        if lengths is None:
            loss = self.ftcl(embedding, attention, labels)
        else:
            loss = self.ftcl(embedding, attention, labels, lengths=lengths.to(embedding.device))
        self.history.append(float(loss.detach()))
        return loss

    def replace(self, obj: object, name: str, value: Any) -> None:
        """Set ``obj.name = value`` until :meth:`remove`."""
        self._undo.setattr(obj, name, value)

    def remove(self) -> None:
        """Remove the hooks and undo every replacement (the optimizer keeps its FTCL group)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._undo.undo()
        self.captured.clear()
