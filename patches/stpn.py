"""Runtime patch for the STPN reproduction (demianzhang/weakly-action-localization @ 946a812): one stream (RGB or
flow) per run, as that code trains, with FTCL added to its training step.

Where FTCL attaches (see ``docs/baselines.md``): STPN has no learned embedding before its attention, so FTCL reads the
attention MLP's hidden layer: the output of ``TemporalProposal.relu`` (``(B, T, 256)``), caught by a forward hook;
the actionness is the attention ``sigmoid(TemporalProposal.fc2(h))``, caught by a hook on ``fc2``. The upstream
step is ``train_model.run_network(model, data, gpu, criterion)``, which computes ``criterion(outputs, labels)`` plus
the L1 attention penalty; the patch wraps the ``BCELoss`` instance it is given so that it returns
``BCE + FTCL(h, attention, labels)``. (With both streams' hidden layers concatenated, as ``docs/baselines.md``
recommends, the two streams would have to train in one process; this reproduction trains them separately.)

``train_model.py`` parses the command line when it is imported and sets ``CUDA_VISIBLE_DEVICES`` from its ``-gpu``
flag: :func:`load` imports it with a private ``argv`` and restores the environment afterwards. Its
``train_step`` reads ``loss.data[0]``, which fails on any PyTorch since 0.5, so a driver calls ``run_network``
itself, with the same ``zero_grad`` / ``backward`` / ``step`` around it.

Example:
    >>> from patches import stpn
    >>> stpn.SPEC.commit[:7]
    '946a812'
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from ._attach import FTCLAttachment
from ._checkout import UpstreamError, UpstreamSpec, require_attribute
from ._pieces import Pieces, Signature, load_pieces
from ._session import UpstreamSession, session_factory

__all__ = ["PIECES", "SIGNATURES", "SPEC", "STREAM_DIM", "attach", "load", "session", "write_layout"]

#: The reproduction's layers are fixed at 1024 input features per stream and 20 classes.
STREAM_DIM = 1024
NUM_CLASSES = 20

SPEC = UpstreamSpec(
    name="stpn",
    repository="demianzhang/weakly-action-localization",
    commit="946a812cedc27bf026caea94199d04159a587081",
    files={
        "train_model.py": "379d1d2c18ee9dd131bbe6a401176c1fd093452acd7d5563c7cff424c8a8be9e",
        "STPN.py": "9cec9ec14677213f5967c4839ac567f49e02b0cc6bedbfd735d2eb9d162f7410",
        "thumos_i3d_per_video.py": "2853170953a44fe4ed80b2398aa30bea1a2bbb0461865a060016dd9a3f45a7f7",
        "util.py": "72692fd8c6b2f7013e9188f19d063877cc1465802f754d34d62f1e592a0df219",
    },
    modules=("train_model", "STPN", "util", "thumos_i3d_per_video"),
    optional=("h5py", "torchvision"),
)


session = session_factory(SPEC)


#: The upstream objects the patch uses: ``train_model`` (with ``run_network`` and ``adjust_learning_rate``),
#: ``TemporalProposal`` and ``get_model`` (``STPN.py``), the ``Thumos`` dataset and its ``collate``.
PIECES = {"train_model": "train_model", "run_network": "train_model:run_network",
          "adjust_learning_rate": "train_model:adjust_learning_rate", "TemporalProposal": "STPN:TemporalProposal",
          "get_model": "STPN:get_model", "Thumos": "thumos_i3d_per_video:Thumos",
          "collate": "thumos_i3d_per_video:mt_collate_fn"}
SIGNATURES = (
    Signature("run_network", ("model", "data", "gpu", "criterion"), "train_model.py: run_network"),
    Signature("TemporalProposal.forward", ("inp",), "STPN.py: TemporalProposal.forward"),
    Signature("get_model", ("gpu", "classes"), "STPN.py: get_model"),
    Signature("Thumos", ("split_file", "root", "batch_size", "mode", "train"),
              "thumos_i3d_per_video.py: Thumos.__init__"),
)


def load(up: UpstreamSession, *, mode: Literal["rgb", "flow"] = "rgb") -> Pieces:
    """Import the reproduction's pieces (``PIECES``) inside an entered session and check ``SIGNATURES``.

    ``train_model.py`` parses the command line when it is imported and writes its ``-gpu`` flag (default ``'1'``)
    into ``CUDA_VISIBLE_DEVICES``: it is imported first, with a private ``argv``, and the variable is restored.

    Args:
        up: the entered session.
        mode: the stream, passed to ``train_model.py``'s import-time argument parser as ``-mode``.

    Returns:
        The upstream pieces.

    Raises:
        UpstreamError: if a module, class or function is missing or its signature changed.
    """
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        with up.argv(["-mode", mode]):
            up.import_module("train_model")
    finally:
        if saved is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved
    return load_pieces(up, SPEC, PIECES, SIGNATURES)


def attach(model: nn.Module, optimizer: torch.optim.Optimizer | None, criterion: nn.Module,
           ftcl: nn.Module | None) -> FTCLAttachment:
    """Add FTCL to an STPN ``TemporalProposal``, its optimizer and the ``BCELoss`` handed to ``run_network``.

    For zero-padded batches set ``attachment.lengths`` to the batch's ``(B,)`` true lengths before each step.

    Args:
        model: an upstream ``TemporalProposal``.
        optimizer: its optimizer (FTCL's parameters join it as a new group), or ``None`` to skip.
        criterion: the ``BCELoss`` instance; its ``forward`` is wrapped on this instance only.
        ftcl: the FTCL module (already on the model's device), or ``None`` to only record.

    Returns:
        The attachment (with an extra ``lengths`` attribute, ``None`` by default).

    Raises:
        UpstreamError: if the model lacks ``relu`` or ``fc2``.
    """
    hidden = require_attribute(model, "relu", "TemporalProposal", SPEC)
    attention_logit = require_attribute(model, "fc2", "TemporalProposal", SPEC)
    attachment = FTCLAttachment(ftcl)
    attachment.lengths = None  # type: ignore[attr-defined]
    attachment.hook(hidden, "embedding", lambda out: out)
    attachment.hook(attention_logit, "attention", lambda out: torch.sigmoid(out).squeeze(-1))
    if optimizer is not None:
        attachment.add_to_optimizer(optimizer)
    original = criterion.forward

    def forward(outputs: Tensor, labels: Tensor) -> Tensor:
        loss = original(outputs, labels)
        extra = attachment.ftcl_loss(labels, lengths=attachment.lengths)  # type: ignore[attr-defined]
        return loss if extra is None else loss + extra

    attachment.replace(criterion, "forward", forward)
    return attachment


def frames_for(num_windows: int) -> int:
    """A frame count for which the reproduction's loader cuts exactly ``num_windows`` windows.

    The loader steps 24 frames (48 above 15000 frames, 96 above 30000) and keeps windows whose 49 frames fit.

    Args:
        num_windows: the wanted number of feature files.

    Returns:
        The frame count to store as ``"frame"``.
    """
    for stride, limit in ((24, 15000), (48, 30000), (96, None)):
        frames = stride * (num_windows - 1) + 49
        if limit is None or frames <= limit:
            return frames
    raise AssertionError("unreachable")  # pragma: no cover


def write_layout(destination: str | os.PathLike[str], ground_truth: Mapping[str, Any], class_names: Sequence[str],
                 splits: Mapping[str, Sequence[tuple[str, np.ndarray]]], *,
                 streams: Sequence[str] = ("rgb", "flow")) -> Path:
    """Write features and labels in the layout the reproduction's loader reads.

    ``<destination>/thumos14_val.json`` (train) and ``thumos14_test.json`` map each video with at least one
    annotation to ``{"actions": [[class id (1-based), start s, end s], ...], "frame": n}``, and
    ``<destination>/features/<video>/{rgb,flow}/<i>.npy`` (``i`` from 1) hold one 1024-d vector per window. Each
    snippet of the source becomes one window (so the time base is the source's); each stream half of the source
    features is zero-padded to 1024 dimensions when narrower (the layers are fixed at 1024).

    Args:
        destination: the output folder.
        ground_truth: the gt.json dict of the source.
        class_names: the source's class names (at most 20).
        splits: ``{"train": [(video, features (L, D))], "test": [...]}``.
        streams: which stream folders to write (one window file per snippet each, so write only what is read).

    Returns:
        ``destination`` as a Path.

    Raises:
        UpstreamError: for more than 20 classes or a stream wider than 1024.
    """
    if len(class_names) > NUM_CLASSES:
        raise UpstreamError(f"the STPN reproduction has a fixed {NUM_CLASSES}-way classifier, but the dataset has "
                            f"{len(class_names)} classes.")
    root = Path(destination)
    index = {name: i + 1 for i, name in enumerate(class_names)}
    database = ground_truth["database"]
    for split, items in splits.items():
        entries = {}
        for video, features in items:
            annotations = database[video].get("annotations", [])
            if not annotations:
                continue
            half = features.shape[1] // 2
            if half > STREAM_DIM:
                raise UpstreamError(f"the STPN reproduction reads {STREAM_DIM}-d streams, but {video} has {half}.")
            for stream, part in (("rgb", features[:, :half]), ("flow", features[:, half:])):
                if stream not in streams:
                    continue
                folder = root / "features" / video / stream
                folder.mkdir(parents=True, exist_ok=True)
                padded = np.zeros((part.shape[0], STREAM_DIM), dtype=np.float32)
                padded[:, :half] = part
                for i, row in enumerate(padded, start=1):
                    np.save(folder / f"{i}.npy", row)
            entries[video] = {"actions": [[index[a["label"]], float(a["segment"][0]), float(a["segment"][1])]
                                          for a in annotations],
                              "frame": frames_for(int(features.shape[0]))}
        name = "thumos14_val.json" if split == "train" else "thumos14_test.json"
        (root / name).write_text(json.dumps(entries))
    return root
