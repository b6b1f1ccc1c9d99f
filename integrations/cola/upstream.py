"""``integrations/cola/train.py --upstream PATH``: CoLA's own training steps, with FTCL patched in.

Sets CoLA's config (zhang-can/CoLA @d21f1b5 ``core/config.py``) from ``--data`` (data path, class list, feature size)
and keeps the rest of it; builds ``CoLA``, Adam and ``TotalLoss`` as ``main_cola.main`` does and runs its
``train_one_step`` with a fresh pass over the loader every ``len(loader)`` steps, then its own ``test_all`` once.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from integrations.common import upstream_driver as shared
from integrations.common.baseline import minmax_over_time
from integrations.common.context import Context
from patches import cola as patch
from patches._common import UpstreamSession

__all__ = ["LAYOUT", "drive"]

#: The layout CoLA's ``NpyFeature`` reads.
LAYOUT = "cola"


def _first_rate(value: Any) -> float:
    """The first learning rate of ``cfg.LR``: a list, or a string like ``'[0.0001]*6000'`` that ``main()``
    evaluates (read here without ``eval``)."""
    if isinstance(value, (list, tuple)):
        return float(value[0])
    text = str(value).strip()
    inner = text[text.find("[") + 1:text.find("]")] if "[" in text else text
    return float(inner.split(",")[0])


def drive(up: UpstreamSession, ctx: Context, out: Path) -> shared.UpstreamRun:
    """Train and evaluate the checkout's CoLA with FTCL (see the module docstring).

    Args:
        up: the entered CoLA session.
        ctx: the run context (data, device, settings).
        out: the run folder (the upstream's own outputs go to ``out/upstream``).

    Returns:
        The trained model and what the run logged.
    """
    seed = ctx.settings.train.seed
    pieces = patch.load(up)
    cfg = pieces.cfg
    save_dir = out / "upstream"
    save_dir.mkdir(exist_ok=True)
    # The data path, class list and sizes come from the dataset; everything else is CoLA's own config.
    cfg.MODE = "train"
    cfg.DATA_PATH = str(ctx.root)
    cfg.GT_PATH = str(ctx.root / "gt.json")
    cfg.NUM_CLASSES = len(ctx.class_names)
    cfg.CLASS_DICT = {name: i for i, name in enumerate(ctx.class_names)}
    cfg.FEATS_DIM = ctx.feature_dim
    cfg.NUM_WORKERS = 0
    cfg.SEED = seed
    cfg.OUTPUT_PATH = str(save_dir)
    cfg.BATCH_SIZE = ctx.settings.optim.batch_size
    pieces.utils.set_seed(seed)
    shared.seed_everything(seed)
    net = pieces.CoLA(cfg)
    shared.load_init_from(net, ctx.settings.meta.init_from)
    net = net.cuda()  # the upstream's own call; the session sends it to the chosen device
    optimizer = torch.optim.Adam(net.parameters(), lr=_first_rate(cfg.LR), betas=(0.9, 0.999),
                                 weight_decay=0.0005)  # as main()
    criterion = pieces.TotalLoss()
    attachment = patch.attach(net, optimizer, criterion, shared.attachable_ftcl(ctx, patch.embedding_dim(net)))
    loader = DataLoader(_features(pieces, cfg, "train", "random"), batch_size=cfg.BATCH_SIZE, shuffle=True,
                        num_workers=0, generator=torch.Generator().manual_seed(seed))
    per_epoch = len(loader)
    total = shared.total_steps(ctx, per_epoch)
    writer = shared.RecordingWriter()
    history: list[dict[str, Any]] = []
    marks, before = writer.marks(), 0
    loader_iter = iter(loader)
    for step in range(1, total + 1):
        if (step - 1) % per_epoch == 0:
            loader_iter = iter(loader)  # as main(): a fresh pass over the loader every len(loader) steps
        pieces.train_one_step(net, loader_iter, optimizer, criterion, writer, step)  # the upstream step
        if step % per_epoch == 0 or step == total:
            history.append(shared.epoch_row(math.ceil(step / per_epoch), step, writer.means_since(marks),
                                     attachment.history[before:]))
            marks, before = writer.marks(), len(attachment.history)
    attachment.remove()
    test_loader = DataLoader(_features(pieces, cfg, "test", "uniform"), batch_size=1, shuffle=False, num_workers=0)
    test_info: dict[str, list] = {"step": [], "test_acc": [], "average_mAP": []}
    test_info.update({f"mAP@{t:.1f}": [] for t in cfg.TIOU_THRESH})
    try:
        pieces.test_all(net, cfg, test_loader, test_info, total)
        own = {"name": "CoLA ANETdetection (main_cola.test_all), mean over tIoU 0.1:0.7",
               "average_mAP": float(test_info["average_mAP"][-1]), "test_acc": float(test_info["test_acc"][-1]),
               **{key: float(values[-1]) for key, values in test_info.items() if key.startswith("mAP@")}}
    except Exception as error:  # the upstream evaluator has known crash cases (docs/baselines.md)
        own = {"name": "CoLA test_all", "failed": f"{type(error).__name__}: {error}"}
        print(f"[ftcl-upstream] the upstream's own evaluation failed: {own['failed']}")

    def run(features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        video_scores, _, actionness, cas = net(features)
        # As test_all reads them: min-max normalised CAS and actionness, softmax video scores.
        return minmax_over_time(cas[0]), video_scores[0], minmax_over_time(actionness[0][:, None])[:, 0]

    return shared.UpstreamRun(model=shared.UpstreamModel("cola", net, run), history=history, evaluation=own,
                              ftcl_steps=len(attachment.history))


def _features(pieces: Any, cfg: Any, mode: str, sampling: str) -> Any:
    """CoLA's ``NpyFeature`` dataset of one split, as ``main_cola`` builds it."""
    return pieces.NpyFeature(data_path=cfg.DATA_PATH, mode=mode, modal=cfg.MODAL, feature_fps=cfg.FEATS_FPS,
                             num_segments=cfg.NUM_SEGMENTS, supervision="weak", class_dict=cfg.CLASS_DICT,
                             seed=cfg.SEED, sampling=sampling)
