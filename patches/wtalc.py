"""Runtime patch for W-TALC (sujoyp/wtalc-pytorch @ 81ea982): run its training iteration with FTCL added.

Where FTCL attaches (see ``docs/baselines.md``): the embedding is ``ReLU(Model.fc(x))`` before dropout, caught by a
forward hook on ``Model.fc`` (the ReLU is applied in the hook, as ``Model.forward`` does); the actionness is the
label-guided maximum of the raw ``Model.classifier`` logits over the video's labelled classes (W-TALC has no
class-agnostic attention). ``train.train`` computes ``total_loss = Lambda * MILL(...) + (1 - Lambda) * CASL(...)``
inline, so the patch replaces the module attribute ``train.CASL`` with a wrapper that returns
``CASL(...) + FTCL(H, actionness, labels, lengths=seq_len) / (1 - Lambda)``: the total becomes exactly
``Lambda * MILL + (1 - Lambda) * CASL + FTCL``, computed and back-propagated inside the upstream iteration. The
``casloss`` it logs then includes that share. Padded rows (``t >= seq_len``) are excluded through ``lengths``.

The upstream's process-wide ``torch.set_default_tensor_type('torch.cuda.FloatTensor')`` at import follows the
session's device. Its pickled arrays (``<name>-Annotations/*.npy``, ``<name>-I3D-JOINTFeatures.npy``, listed in
``SPEC.pickled``) are the only files the session unpickles, through ``ftcl_plugin.data.load_npy``'s restricted
unpickler.

Example:
    >>> from patches import wtalc
    >>> wtalc.SPEC.commit[:7]
    '81ea982'
"""

from __future__ import annotations

import argparse
import types
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ._attach import FTCLAttachment
from ._checkout import UpstreamError, UpstreamSpec, require_attribute
from ._pieces import Pieces, Signature, loader
from ._session import session_factory

__all__ = ["PIECES", "SIGNATURES", "SPEC", "attach", "label_guided_attention", "load", "parse_args", "session"]

SPEC = UpstreamSpec(
    name="wtalc",
    repository="sujoyp/wtalc-pytorch",
    commit="81ea98264a8456881eb7e98df4872b66d307c6cb",
    files={
        "main.py": "b1feadd172ac4d3357aa74264274414d1e24306a7adbc3eb30b9872db2a5af4b",
        "options.py": "c451b649445899c58c7430e55ddb3529b9c009a6345aff65e98af9e69a10961b",
        "train.py": "40bae676343b95f193a6f25b2237976978e463d338188418d82623a2d468856c",
        "test.py": "a5ce205c6f35af971b15a379bd5af6d3e5f5a71bf089d75198e4154fa14df835",
        "model.py": "74706409a15b1ba982507b57c7c3925160dbeddb211e011593d7aa8a2e1f5f25",
        "video_dataset.py": "0ec931a5b6ee2ea8864a3327a86258a557b2429a0733f09885f5a990cb5b6f07",
        "utils.py": "60c3bd0068dc17a0c0bba8c954cfe0bb9e765efd681df74d0147efe9e0901912",
        "detectionMAP.py": "c6a0ede0f100aeea3b921c2ec835855cf4e40a49c24854eef7d4ff8f63e683d4",
        "classificationMAP.py": "3b7bf880e1d915ece379dfbfc7470ac2f15f01ceae9dd2f10fd5a0bca322e036",
    },
    modules=("main", "options", "train", "test", "model", "video_dataset", "utils", "detectionMAP",
             "classificationMAP"),
    optional=("tensorboard_logger",),
    # video_dataset.Dataset and detectionMAP read these object arrays (labels, segments, per-video features).
    pickled=("*-Annotations/*.npy", "*-JOINTFeatures.npy"),
)


session = session_factory(SPEC)


#: The upstream objects the patch uses: ``options`` (and its ``parser``), ``Model``, ``Dataset``, the ``train`` module
#: (with ``MILL``, ``CASL`` and ``train``, one iteration per call) and ``test`` (the upstream evaluation).
PIECES = {"options": "options", "parser": "options:parser", "Model": "model:Model",
          "Dataset": "video_dataset:Dataset", "train_module": "train", "train": "train:train", "CASL": "train:CASL",
          "MILL": "train:MILL", "test": "test:test"}
SIGNATURES = (
    Signature("Model", ("n_feature", "n_class"), "model.py: Model.__init__"),
    Signature("Model.forward", ("inputs", "is_training"), "model.py: Model.forward"),
    Signature("Dataset", ("args",), "video_dataset.py: Dataset.__init__"),
    Signature("train", ("itr", "dataset", "args", "model", "optimizer", "logger", "device"), "train.py: train"),
    Signature("CASL", ("x", "element_logits", "seq_len", "n_similar", "labels", "device"), "train.py: CASL"),
    Signature("test", ("itr", "dataset", "args", "model", "logger", "device"), "test.py: test"),
)
load = loader(SPEC, PIECES, SIGNATURES)


def parse_args(pieces: Pieces, argv: Sequence[str], **overrides: Any) -> argparse.Namespace:
    """W-TALC's own options (``options.parser``) parsed from ``argv``, then ``overrides`` set.

    ``--feature-size`` and ``--num-class`` have no type upstream (a value given on the command line stays a
    string), so both are turned into ``int``.

    Args:
        pieces: from :func:`load`.
        argv: upstream flags, e.g. ``["--dataset-name", "Thumos14reduced"]``.
        **overrides: attributes to set afterwards.

    Returns:
        The namespace.
    """
    args = pieces.parser.parse_args(list(argv))
    for key, value in overrides.items():
        setattr(args, key, value)
    args.feature_size = int(args.feature_size)
    args.num_class = int(args.num_class)
    args.num_similar = int(args.num_similar)
    return args


def label_guided_attention(logits: Tensor, labels: Tensor) -> Tensor:
    """``max over the labelled classes of the raw logits`` per snippet (``max_c`` for a video with no label).

    Args:
        logits: ``(B, T, C)`` raw class logits.
        labels: ``(B, C)`` multi-hot labels.

    Returns:
        ``(B, T)`` actionness scores.
    """
    labelled = labels.to(logits.dtype)[:, None, :] > 0
    masked = logits.masked_fill(~labelled, float("-inf")).amax(dim=-1)
    return torch.where(labelled.any(dim=-1), masked, logits.amax(dim=-1))


def attach(model: nn.Module, optimizer: torch.optim.Optimizer | None, train_module: types.ModuleType,
           ftcl: nn.Module | None, *, casl_weight: float) -> FTCLAttachment:
    """Add FTCL to a W-TALC model, its optimizer and the CASL term of ``train.train``.

    Args:
        model: an upstream ``Model``.
        optimizer: its optimizer (FTCL's parameters join it as a new group), or ``None`` to skip.
        train_module: the upstream ``train`` module; its ``CASL`` attribute is replaced until ``remove()``.
        ftcl: the FTCL module (already on the model's device), or ``None`` to only record.
        casl_weight: ``1 - args.Lambda``, the weight ``train.train`` puts on CASL.

    Returns:
        The attachment.

    Raises:
        UpstreamError: if the model lacks ``fc`` or ``classifier``, or ``casl_weight`` is not positive.
    """
    fc = require_attribute(model, "fc", "Model", SPEC)
    classifier = require_attribute(model, "classifier", "Model", SPEC)
    original = require_attribute(train_module, "CASL", "train.py", SPEC)
    if not casl_weight > 0:
        raise UpstreamError(f"FTCL rides on W-TALC's CASL term, whose weight 1 - Lambda is {casl_weight}; use "
                            "--Lambda below 1.")
    attachment = FTCLAttachment(ftcl)
    attachment.hook(fc, "embedding", torch.relu)
    # Raw (B, T, C) logits for now; the CASL wrapper, which sees the labels, reduces them to (B, T).
    attachment.hook(classifier, "attention", lambda out: out)

    def casl(x: Tensor, element_logits: Tensor, seq_len: np.ndarray, n_similar: int, labels: Tensor,
             device: torch.device) -> Tensor:
        value = original(x, element_logits, seq_len, n_similar, labels, device)
        logits = attachment.captured.get("attention")
        if logits is not None and logits.dim() == 3:
            attachment.captured["attention"] = label_guided_attention(logits, labels)
        lengths = torch.as_tensor(np.asarray(seq_len), dtype=torch.int64)
        extra = attachment.ftcl_loss(labels, lengths=lengths)
        if extra is not None:
            value = value + extra / casl_weight
        return value

    attachment.replace(train_module, "CASL", casl)
    if optimizer is not None:
        attachment.add_to_optimizer(optimizer)
    return attachment
