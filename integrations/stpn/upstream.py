"""``integrations/stpn/train.py --upstream PATH``: the STPN reproduction's training step, with FTCL patched in.

The reproduction (demianzhang/weakly-action-localization @946a812) reads one ``.npy`` per window listed in a JSON
split, so the driver first writes that layout from the acmnet-layout ``--data`` (``patches.stpn.write_layout``);
it trains one stream per run, as that code does (``upstream.stream``), on batches of ``optim.batch_size`` videos
with a same-class pair each (FTCL needs pairs; the reproduction trains one video at a time), zero-padded to the
longest. Its own evaluation is not run: it reads files of the author's machine and scores with the MATLAB TH14 kit.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from ftcl_plugin.data import ClassPairSampler, open_dataset
from integrations.common import upstream_driver as shared
from integrations.common.context import Context
from patches import stpn as patch
from patches._common import UpstreamSession

__all__ = ["LAYOUT", "drive"]

#: The layout the driver reads ``--data`` in (it writes the reproduction's own layout from it).
LAYOUT = "acmnet"


def _pad_collate(batch: list[Any]) -> tuple[Tensor, Tensor, Tensor]:
    # The reproduction trains one video per batch; FTCL needs pairs, so videos are zero-padded to the longest.
    lengths = torch.tensor([len(item[0]) for item in batch], dtype=torch.int64)
    width = int(lengths.max())
    features = torch.zeros(len(batch), width, batch[0][0].shape[-1])
    for i, item in enumerate(batch):
        features[i, : len(item[0])] = torch.from_numpy(np.asarray(item[0], dtype=np.float32).reshape(len(item[0]), -1))
    labels = torch.from_numpy(np.stack([np.asarray(item[1], dtype=np.float32) for item in batch]))
    return features, labels, lengths


def _labels(dataset: Any) -> Tensor:
    """Every video's multi-hot label, for the sampler.

    ``Thumos`` keeps ``(video, class ids, frames, gt)`` per entry in ``.data``, from which its ``__getitem__`` builds
    the label (reading them there would load every feature file).
    """
    labels = torch.zeros(len(dataset), patch.NUM_CLASSES)
    for i, entry in enumerate(dataset.data):
        for class_id in entry[1]:
            if class_id > 0:
                labels[i, int(class_id) - 1] = 1.0
    return labels


def drive(up: UpstreamSession, ctx: Context, out: Path) -> shared.UpstreamRun:
    """Train the checkout's STPN stream with FTCL (see the module docstring).

    Args:
        up: the entered STPN session.
        ctx: the run context (data, device, settings; ``upstream.stream`` picks the stream).
        out: the run folder (the reproduction's layout is written to ``out/stpn_data`` and deleted after training).

    Returns:
        The trained model and what the run logged (``extra["stream"]``).
    """
    settings = ctx.settings
    seed, stream, epochs, cap = (settings.train.seed, settings.upstream.stream, settings.train.epochs,
                                 settings.train.iterations)
    pieces = patch.load(up, mode=stream)
    shared.seed_everything(seed)
    train_full = open_dataset(ctx.root, "train", layout="acmnet", num_segments=None, sampling="full")
    data_dir = out / "stpn_data"
    patch.write_layout(data_dir, train_full.ground_truth, list(ctx.class_names),
                       {"train": [(train_full.videos[i], train_full[i].features.numpy())
                                  for i in range(len(train_full))]}, streams=(stream,))
    dataset = pieces.Thumos(str(data_dir / "thumos14_val.json"), str(data_dir / "features"), 1, stream, True)
    generator = torch.Generator().manual_seed(seed)
    sampler = ClassPairSampler(_labels(dataset), settings.optim.batch_size, generator=generator)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=_pad_collate, num_workers=0)
    model = pieces.get_model(0, patch.NUM_CLASSES)  # calls .cuda(); the session sends it to the chosen device
    shared.load_init_from(model, ctx.settings.meta.init_from)
    criterion = torch.nn.BCELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)  # adjust_learning_rate sets it every epoch anyway
    attachment = patch.attach(model, optimizer, criterion, shared.attachable_ftcl(ctx, int(model.fc1.out_features)))
    history: list[dict[str, Any]] = []
    step = 0
    model.train(True)
    for epoch in range(epochs):
        if cap and step >= cap:
            break
        pieces.adjust_learning_rate(optimizer, epoch)  # the upstream schedule: 1e-4, x0.1 every 80 epochs
        losses, before = [], len(attachment.history)
        for features, batch_labels, lengths in loader:
            if cap and step >= cap:
                break
            attachment.lengths = lengths
            # train_model.train_step's body without its `loss.data[0]` (an error since PyTorch 0.5).
            optimizer.zero_grad()
            _, loss = pieces.run_network(model, (features, batch_labels, None), 0, criterion)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            step += 1
        history.append(shared.epoch_row(epoch + 1, step, {"train_loss": float(np.mean(losses)) if losses else math.nan},
                                 attachment.history[before:]))
        print(f"epoch {epoch + 1}/{epochs}  {stream} loss {history[-1]['train_loss']:.4f}  steps {step}")
    attachment.remove()
    # The per-window copy is large (one file per snippet) and derived from --data; drop it after training.
    shutil.rmtree(data_dir, ignore_errors=True)
    own = {"name": "STPN reproduction evaluation",
           "failed": "not run: its test path reads hard-coded absolute files of the author's machine and scores "
                     "with the MATLAB TH14 kit"}
    half = ctx.feature_dim // 2
    offset = 0 if stream == "rgb" else half
    num_classes = len(ctx.class_names)
    threshold = settings.localization_config().class_threshold

    def run(features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        part = features[0, :, offset:offset + half]
        padded = features.new_zeros(part.shape[0], patch.STREAM_DIM)
        padded[:, :half] = part
        scores, attention = model(padded[None])
        tcam = (padded @ model.fc3.weight.t())[:, :num_classes]  # the T-CAM, no bias (train_model.returnCAM)
        scores = scores[0, :num_classes]
        # The clean-room STPN's signals for one stream: runs where psi >= 0.05, scored by lambda * T-CAM.
        psi = attention[0] * torch.sigmoid(tcam) * (scores > threshold)
        return attention[0] * tcam, scores, psi

    # The plot shows psi, the [0, 1] signal the runs are cut from, as the clean-room STPN's plot does.
    wrapped = shared.UpstreamModel("stpn", model, run, plot=lambda cas, psi: (psi, None))
    return shared.UpstreamRun(model=wrapped, history=history, evaluation=own, ftcl_steps=len(attachment.history),
                              extra={"stream": stream})
