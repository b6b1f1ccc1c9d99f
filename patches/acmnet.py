"""Runtime patch for ACM-Net (ispc-lab/ACM-Net @ 4d38dc6): run its THUMOS14 training step with FTCL added.

Where FTCL attaches (see ``docs/baselines.md``): the embedding is the output of ``ACMNet.feature_embedding`` (the
Conv1d k3 + ReLU, before the snippet mask and dropout), caught by a forward hook and transposed to ``(B, T, D)``;
the action attention is the instance channel of the softmax over ``ACMNet.att_branch``'s three logits, caught by a
second hook. ``ACMLoss.forward`` receives the video labels as ``vid_label``, so the wrapped loss adds
``FTCL(embedding, attention, vid_label)`` to the total it returns and logs it under ``"ftcl_loss"``; the upstream
``train`` function then back-propagates the sum as usual. Nothing happens until :func:`session` is entered.

Example:
    >>> from patches import acmnet
    >>> acmnet.SPEC.commit[:7]
    '4d38dc6'
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ._attach import FTCLAttachment
from ._checkout import UpstreamSpec, require_attribute
from ._pieces import Pieces, Signature, loader
from ._session import UpstreamSession, session_factory

__all__ = ["PIECES", "SIGNATURES", "SPEC", "attach", "build_args", "load", "session"]

SPEC = UpstreamSpec(
    name="acmnet",
    repository="ispc-lab/ACM-Net",
    commit="4d38dc66ad724fc4d3497b5d8eed5b1ef71f1e16",
    files={
        "main_thu.py": "227b891c1809ee22829b1b2a19507ed726b1b4f48993c5e500132d23546a6fb6",
        "config/model_config.py": "47638dd5c456fb7b0b5dafb1894e34e644cd3aa0589b3a518a56b19a1e568372",
        "model/ACMNet.py": "2ad3664a902b31480ca5095ed026e03083ea835aba7e0ef64db8fcce3b170a81",
        "utils/net_utils.py": "3ba1a163b323d61ef3b71e9152b3abe9fc6972e294f8a7fa77fef2652888c62d",
        "utils/net_evaluation.py": "6329891869eb6ae8131fe788d70b341d36bc108f2957573e6862db06768c29c7",
        "dataset/dataset_class.py": "827d1a38183c797e7eda5447628362a06d0fd30633e2aa68f09aa830347d6963",
    },
    modules=("main_thu", "main_act", "config", "model", "utils", "dataset"),
    optional=("wandb", "tqdm", "joblib", "sklearn"),
)


session = session_factory(SPEC)


#: The upstream objects the patch uses: ``main_thu`` and what it imports (``ACMNet``, ``ACMLoss``, ``build_dataset``,
#: ``build_args``, ``set_random_seed``) and defines (``train`` and ``test``, one epoch and one evaluation per call).
PIECES = {"main": "main_thu", "ACMNet": "main_thu:ACMNet", "ACMLoss": "main_thu:ACMLoss",
          "build_dataset": "main_thu:build_dataset", "build_args": "main_thu:build_args",
          "set_random_seed": "main_thu:set_random_seed", "train": "main_thu:train", "test": "main_thu:test"}
SIGNATURES = (
    Signature("ACMNet", ("args",), "model/ACMNet.py: ACMNet.__init__"),
    Signature("ACMNet.forward", ("input_features",), "model/ACMNet.py: ACMNet.forward"),
    Signature("ACMLoss.forward", ("act_inst_cls", "act_cont_cls", "act_back_cls", "vid_label"),
              "utils/net_utils.py: ACMLoss.forward"),
    Signature("build_dataset", ("args", "phase", "sample"), "dataset/dataset_class.py: build_dataset"),
    Signature("train", ("args", "model", "dataloader", "criterion", "optimizer"), "main_thu.py: train"),
    Signature("test", ("args", "model", "dataloader", "criterion"), "main_thu.py: test"),
)
load = loader(SPEC, PIECES, SIGNATURES)


def build_args(up: UpstreamSession, pieces: Pieces, *, dataset: str = "THUMOS",
               argv: Sequence[str] = ("--without_wandb",), **overrides: Any) -> argparse.Namespace:
    """ACM-Net's own argument namespace (``config.model_config.build_args``), parsed from ``argv`` instead of the
    process's command line, then ``overrides`` applied (data paths, class list, sizes the data dictates).

    Args:
        up: the entered session.
        pieces: from :func:`load`.
        dataset: ``"THUMOS"`` or ``"ActivityNet"``, the upstream's own dataset key.
        argv: the upstream flags to parse.
        **overrides: attributes to set on the namespace afterwards.

    Returns:
        The namespace.
    """
    with up.argv(list(argv)):
        args = pieces.build_args(dataset=dataset)
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def attach(model: nn.Module, optimizer: torch.optim.Optimizer | None, criterion: nn.Module,
           ftcl: nn.Module | None) -> FTCLAttachment:
    """Add FTCL to an ACM-Net model, its optimizer and its ``ACMLoss``.

    Args:
        model: an upstream ``ACMNet``.
        optimizer: its optimizer (FTCL's parameters join it as a new group), or ``None`` to skip.
        criterion: its ``ACMLoss`` instance; its ``forward`` is wrapped on this instance only.
        ftcl: the FTCL module (already on the model's device), or ``None`` to only record.

    Returns:
        The attachment (``remove()`` undoes the hooks and the wrapper).

    Raises:
        UpstreamError: if the model lacks ``feature_embedding`` or ``att_branch``.
    """
    embedding_module = require_attribute(model, "feature_embedding", "ACMNet", SPEC)
    attention_module = require_attribute(model, "att_branch", "ACMNet", SPEC)
    attachment = FTCLAttachment(ftcl)
    # feature_embedding maps (B, D, T) -> (B, D, T); FTCL wants (B, T, D).
    attachment.hook(embedding_module, "embedding", lambda out: out.permute(0, 2, 1))
    # att_branch gives (B, 3, T) logits; the instance attention is channel 0 of their softmax.
    attachment.hook(attention_module, "attention", lambda out: torch.softmax(out, dim=1)[:, 0, :])
    if optimizer is not None:
        attachment.add_to_optimizer(optimizer)
    original = criterion.forward

    def forward(*args: Any, **kwargs: Any) -> tuple[Tensor, dict[str, float]]:
        loss, loss_dict = original(*args, **kwargs)
        labels = kwargs["vid_label"] if "vid_label" in kwargs else args[3]
        extra = attachment.ftcl_loss(labels)
        if extra is not None:
            loss = loss + extra
            loss_dict["ftcl_loss"] = attachment.history[-1]
        return loss, loss_dict

    attachment.replace(criterion, "forward", forward)
    return attachment
