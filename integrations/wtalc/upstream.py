"""``integrations/wtalc/train.py --upstream PATH``: W-TALC's own training iterations, with FTCL patched in.

Parses W-TALC's options (sujoyp/wtalc-pytorch @81ea982 ``options.py``) with the dataset name, batch size and seed of
the run, builds its ``Dataset``, ``Model`` and Adam as ``main.py`` does, runs its ``train.train`` once per iteration,
then its own ``test.test`` once.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ftcl_plugin.data import load_npy
from integrations.common import upstream_driver as shared
from integrations.common.context import Context
from integrations.wtalc.model import detection_signals, minmax_per_class
from patches import wtalc as patch
from patches._common import UpstreamSession

__all__ = ["LAYOUT", "drive"]

#: The layout W-TALC's ``Dataset`` reads.
LAYOUT = "wtalc"


def _eval_annotations(source: Path, copy: Path) -> str:
    """The annotation folder W-TALC's evaluator reads; a completed copy when files it needs are missing.

    Its ``detectionMAP`` also opens ``Ambiguous_test.txt`` and indexes ``duration.npy`` as ``(N, 1)``, as in the
    upstream's own THUMOS14 files; datasets written by other tools may lack the first or store ``(N,)``.
    """
    duration = load_npy(source / "duration.npy", kind="W-TALC file")
    if (source / "Ambiguous_test.txt").is_file() and duration.ndim == 2:
        return str(source) + "/"
    copy.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.is_file():
            (copy / item.name).write_bytes(item.read_bytes())
    if not (copy / "Ambiguous_test.txt").is_file():
        (copy / "Ambiguous_test.txt").write_text("")
    if duration.ndim == 1:
        np.save(copy / "duration.npy", duration[:, None])
    return str(copy) + "/"


def drive(up: UpstreamSession, ctx: Context, out: Path) -> shared.UpstreamRun:
    """Train and evaluate the checkout's W-TALC with FTCL (see the module docstring).

    Args:
        up: the entered W-TALC session.
        ctx: the run context (data, device, settings; ``upstream.dataset_name`` names the files).
        out: the run folder (the upstream's own outputs go to ``out/upstream``).

    Returns:
        The trained model and what the run logged.
    """
    settings = ctx.settings
    seed, batch_size, dataset_name = settings.train.seed, settings.optim.batch_size, settings.upstream.dataset_name
    pieces = patch.load(up)
    up_args = patch.parse_args(
        pieces, ["--dataset-name", dataset_name, "--batch-size", str(batch_size), "--seed", str(seed)],
        feature_size=ctx.feature_dim, num_class=len(ctx.class_names),
    )
    torch.manual_seed(up_args.seed)  # as main.py
    shared.seed_everything(seed)
    with up.cwd(ctx.root):
        # video_dataset.Dataset reads '<name>-I3D-JOINTFeatures.npy' and '<name>-Annotations/' relative to the cwd.
        dataset = pieces.Dataset(up_args)
    dataset.path_to_annotations = str(Path(ctx.root) / f"{dataset_name}-Annotations") + "/"
    model = pieces.Model(dataset.feature_size, dataset.num_class).to(ctx.device)
    shared.load_init_from(model, ctx.settings.meta.init_from)
    optimizer = torch.optim.Adam(model.parameters(), lr=up_args.lr, weight_decay=0.0005)  # as main.py
    ftcl = shared.attachable_ftcl(ctx, int(dataset.feature_size))
    attachment = patch.attach(model, optimizer, pieces.train_module, ftcl, casl_weight=1.0 - up_args.Lambda)
    per_epoch = max(1, math.ceil(len(dataset.trainidx) / batch_size))
    total = shared.total_steps(ctx, per_epoch)
    logger = shared.RecordingWriter()
    history: list[dict[str, Any]] = []
    marks, before = logger.marks(), 0
    for itr in range(total):
        pieces.train(itr, dataset, up_args, model, optimizer, logger, ctx.device)  # the upstream iteration
        step = itr + 1
        if step % per_epoch == 0 or step == total:
            history.append(shared.epoch_row(math.ceil(step / per_epoch), step, logger.means_since(marks),
                                     attachment.history[before:]))
            marks, before = logger.marks(), len(attachment.history)
    attachment.remove()
    save_dir = out / "upstream"
    save_dir.mkdir(exist_ok=True)
    dataset.path_to_annotations = _eval_annotations(Path(ctx.root) / f"{dataset_name}-Annotations",
                                                    save_dir / f"{dataset_name}-Annotations")
    try:
        with up.cwd(save_dir):  # test() appends '<name>-results.log' to the cwd
            pieces.test(total, dataset, up_args, model, logger, ctx.device)
        line = (save_dir / f"{dataset_name}-results.log").read_text().strip().splitlines()[-1].split()
        own = {"name": "W-TALC detectionMAP (test.test), tIoU 0.1:0.5, in %",
               "mAP": dict(zip(["0.1", "0.2", "0.3", "0.4", "0.5"], map(float, line[1:6]))),
               "cmap": float(line[6])}
    except Exception as error:  # the upstream evaluator's failures are reported, not fatal
        own = {"name": "W-TALC test.test", "failed": f"{type(error).__name__}: {error}"}
        print(f"[ftcl-upstream] the upstream's own evaluation failed: {own['failed']}")

    def run(features: Tensor) -> tuple[Tensor, Tensor, None]:
        _, logits = model(features, is_training=False)
        # detectionMAP.py's gated logits and test.py's classification score, as the clean-room W-TALC returns them.
        cas, scores = detection_signals(logits[0])
        return cas, scores, None

    # The plot shows each class's gated logits min-max normalised, as the clean-room W-TALC's plot does.
    wrapped = shared.UpstreamModel("wtalc", model, run, {"upsample": 1},
                                   plot=lambda cas, attention: (minmax_per_class(cas), attention))
    return shared.UpstreamRun(model=wrapped, history=history, evaluation=own, ftcl_steps=len(attachment.history))
