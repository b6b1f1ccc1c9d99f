"""Runtime patch for CoLA (zhang-can/CoLA @ d21f1b5): run its training step with FTCL added.

Where FTCL attaches (see ``docs/baselines.md``): the embedding is the output of ``Actionness_Module.f_embed`` (Conv1d k3
+ ReLU, before dropout), caught by a forward hook on ``CoLA.actionness_module.f_embed`` and transposed to
``(B, T, D)``; the actionness is the class sum of the CAS, caught by a hook on ``actionness_module.f_cls`` (its
``(B, C, T)`` output summed over classes, exactly ``actionness`` of the upstream forward). ``TotalLoss.forward``
receives the labels as ``label``, so the wrapped loss adds ``FTCL(embedding, actionness, label)`` to
``loss_total`` and logs it as ``"Loss/FTCL"``; ``main_cola.train_one_step`` back-propagates the sum. The upstream's
``.cuda()`` calls (model, loss, easy-snippet mask) follow the session's device.

Example:
    >>> from patches import cola
    >>> cola.SPEC.commit[:7]
    'd21f1b5'
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ._attach import FTCLAttachment
from ._checkout import UpstreamError, UpstreamSpec, require_attribute
from ._pieces import Signature, loader
from ._session import session_factory

__all__ = ["PIECES", "SIGNATURES", "SPEC", "attach", "embedding_dim", "load", "session"]

SPEC = UpstreamSpec(
    name="cola",
    repository="zhang-can/CoLA",
    commit="d21f1b5a4c6c13f9715cfd4ac1ebcd065d179157",
    files={
        "main_cola.py": "052d823d54c7b66c4b380b9ed5b22778fa0fc099f840f7bf3e54b27a164cf1c1",
        "core/config.py": "1359c764c8c2616c93066c1cb2fcd307699d0f9afba1206b2c4a9e0b92b80655",
        "core/model.py": "25dcfb533293804c6b0926b1c528df4285b0b31698053eb59d1defc3766417e0",
        "core/loss.py": "4975f829cb18a3ec0b408a1c349df0cf0316ddabd02947fbaba08fc7a463b955",
        "core/dataset.py": "2cc41e3770b3324fef8ba28242feaa6089f5679f9719f7ddbaa4fe2ff5da2936",
        "core/utils.py": "9f87f8d8231e887cad0db6bfcabf88f60d79de056631758b69ba6f9d93752425",
        "eval/eval_detection.py": "7b9448fc6971881612cd4c83473306373300ffc9c63cc86f777553b2eef3eaa4",
    },
    modules=("main_cola", "core", "eval"),
    optional=("easydict", "terminaltables", "joblib", "torch.utils.tensorboard"),
)


session = session_factory(SPEC)


#: The upstream objects the patch uses: ``main_cola`` and what it imports (its ``cfg``, ``CoLA``, ``TotalLoss``,
#: ``NpyFeature``, ``core.utils``) and defines (``train_one_step``, ``test_all``).
PIECES = {"main": "main_cola", "cfg": "main_cola:cfg", "CoLA": "main_cola:CoLA", "TotalLoss": "main_cola:TotalLoss",
          "NpyFeature": "main_cola:NpyFeature", "utils": "main_cola:utils",
          "train_one_step": "main_cola:train_one_step", "test_all": "main_cola:test_all"}
SIGNATURES = (
    Signature("CoLA", ("cfg",), "core/model.py: CoLA.__init__"),
    Signature("CoLA.forward", ("x",), "core/model.py: CoLA.forward"),
    Signature("TotalLoss.forward", ("video_scores", "label", "contrast_pairs"), "core/loss.py: TotalLoss.forward"),
    Signature("NpyFeature", ("data_path", "mode", "modal", "feature_fps", "num_segments", "sampling", "class_dict"),
              "core/dataset.py: NpyFeature.__init__"),
    Signature("train_one_step", ("net", "loader_iter", "optimizer", "criterion", "writter", "step"),
              "main_cola.py: train_one_step"),
    Signature("test_all", ("net", "cfg", "test_loader", "test_info", "step"), "main_cola.py: test_all"),
)
load = loader(SPEC, PIECES, SIGNATURES)


def embedding_dim(model: nn.Module) -> int:
    """The width of CoLA's embedding: ``f_embed``'s Conv1d outputs (2048 at the pinned commit, whatever the input).

    Args:
        model: an upstream ``CoLA``.

    Returns:
        ``D'``, the ``feature_dim`` FTCL needs.

    Raises:
        UpstreamError: if ``actionness_module.f_embed`` holds no Conv1d.
    """
    embed = require_attribute(require_attribute(model, "actionness_module", "CoLA", SPEC), "f_embed",
                              "CoLA.actionness_module", SPEC)
    for layer in embed.modules():
        if isinstance(layer, nn.Conv1d):
            return int(layer.out_channels)
    raise UpstreamError(f"CoLA.actionness_module.f_embed has no Conv1d, which it has at {SPEC.short}.")


def attach(model: nn.Module, optimizer: torch.optim.Optimizer | None, criterion: nn.Module,
           ftcl: nn.Module | None) -> FTCLAttachment:
    """Add FTCL to a CoLA model, its optimizer and its ``TotalLoss``.

    Args:
        model: an upstream ``CoLA``.
        optimizer: its optimizer (FTCL's parameters join it as a new group), or ``None`` to skip.
        criterion: its ``TotalLoss`` instance; its ``forward`` is wrapped on this instance only.
        ftcl: the FTCL module (already on the model's device), or ``None`` to only record.

    Returns:
        The attachment (``remove()`` undoes the hooks and the wrapper).

    Raises:
        UpstreamError: if the model lacks ``actionness_module.f_embed`` or ``actionness_module.f_cls``.
    """
    module = require_attribute(model, "actionness_module", "CoLA", SPEC)
    embed = require_attribute(module, "f_embed", "CoLA.actionness_module", SPEC)
    classifier = require_attribute(module, "f_cls", "CoLA.actionness_module", SPEC)
    attachment = FTCLAttachment(ftcl)
    # f_embed: (B, D, T) -> FTCL's (B, T, D); f_cls: (B, C, T) non-negative CAS -> actionness (B, T).
    attachment.hook(embed, "embedding", lambda out: out.permute(0, 2, 1))
    attachment.hook(classifier, "attention", lambda out: out.sum(dim=1))
    if optimizer is not None:
        attachment.add_to_optimizer(optimizer)
    original = criterion.forward

    def forward(*args: Any, **kwargs: Any) -> tuple[Tensor, dict[str, Tensor]]:
        loss, loss_dict = original(*args, **kwargs)
        labels = kwargs["label"] if "label" in kwargs else args[1]
        extra = attachment.ftcl_loss(labels)
        if extra is not None:
            loss = loss + extra
            loss_dict["Loss/FTCL"] = extra.detach()
            loss_dict["Loss/Total"] = loss.detach()
        return loss, loss_dict

    attachment.replace(criterion, "forward", forward)
    return attachment
