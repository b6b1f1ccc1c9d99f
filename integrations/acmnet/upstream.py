"""``integrations/acmnet/train.py --upstream PATH``: ACM-Net's own training epochs, with FTCL patched in.

Builds what ispc-lab/ACM-Net @4d38dc6 ``main_thu.main`` builds (its argument namespace, ``ACMNet``, Adam, ``ACMLoss``,
``build_dataset``), with the data paths, class list and feature size taken from ``--data``; runs its ``train``
function once per epoch (the iteration cap stops inside an epoch), then its own ``test`` once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from integrations.common import upstream_driver as shared
from integrations.common.context import Context
from patches import acmnet as patch
from patches._common import UpstreamSession

__all__ = ["LAYOUT", "drive"]

#: The layout ACM-Net's ``build_dataset`` reads.
LAYOUT = "acmnet"


class _Capped:
    """Iterate ``loader`` but stop after ``budget`` batches (for ``--iterations`` inside an upstream epoch loop)."""

    def __init__(self, loader: Any, budget: int) -> None:
        self.loader, self.budget, self.taken = loader, budget, 0

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            if self.taken >= self.budget:
                return
            self.taken += 1
            yield batch

    def __len__(self) -> int:
        return min(len(self.loader), self.budget)


def drive(up: UpstreamSession, ctx: Context, out: Path) -> shared.UpstreamRun:
    """Train and evaluate the checkout's ACM-Net with FTCL (see the module docstring).

    Args:
        up: the entered ACM-Net session.
        ctx: the run context (data, device, settings).
        out: the run folder (the upstream's own outputs go to ``out/upstream``).

    Returns:
        The trained model and what the run logged.
    """
    settings = ctx.settings
    seed, batch_size, epochs, cap = (settings.train.seed, settings.optim.batch_size, settings.train.epochs,
                                     settings.train.iterations)
    pieces = patch.load(up)
    pieces.set_random_seed(seed)
    shared.seed_everything(seed)
    save_dir = out / "upstream"
    save_dir.mkdir(exist_ok=True)
    up_args = patch.build_args(
        up, pieces, argv=["--without_wandb", "--batch_size", str(batch_size), "--epochs", str(epochs),
                          "--num_workers", "0"],
        data_dir=str(ctx.root), test_gt_file_path=str(ctx.root / "gt.json"), class_name_lst=list(ctx.class_names),
        action_cls_num=len(ctx.class_names), feature_dim=ctx.feature_dim, save_dir=str(save_dir), device=ctx.device,
    )
    model = pieces.ACMNet(up_args)
    # main_thu.main loads --checkpoint here, before .to(device).
    shared.load_init_from(model, ctx.settings.meta.init_from)
    model = model.to(ctx.device)
    # As main_thu.main builds them.
    optimizer = torch.optim.Adam(model.parameters(), lr=up_args.lr, betas=(0.9, 0.999),
                                 weight_decay=up_args.weight_decay)
    criterion = pieces.ACMLoss(lamb1=up_args.loss_lamb_1, lamb2=up_args.loss_lamb_2, lamb3=up_args.loss_lamb_3)
    attachment = patch.attach(model, optimizer, criterion, shared.attachable_ftcl(ctx, up_args.feature_dim))
    train_set = pieces.build_dataset(up_args, phase="train", sample="random")
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, num_workers=0, drop_last=False,
                        generator=torch.Generator().manual_seed(seed))
    history: list[dict[str, Any]] = []
    step = 0
    for epoch in range(epochs):
        budget = cap - step if cap else len(loader)
        if budget <= 0:
            break
        capped = _Capped(loader, budget)
        before = len(attachment.history)
        logged = pieces.train(up_args, model, capped, criterion, optimizer)  # the upstream's epoch, FTCL inside
        step += capped.taken
        history.append(shared.epoch_row(epoch + 1, step, logged, attachment.history[before:]))
    attachment.remove()
    test_set = pieces.build_dataset(up_args, phase="test", sample="uniform")
    test_loader = DataLoader(test_set, batch_size=1, shuffle=False, num_workers=0)
    with torch.no_grad():
        test_log, _ = pieces.test(up_args, model, test_loader, criterion)
    own = {"name": "ACM-Net ANETDetection (main_thu.test), mean over tIoU 0.1:0.9",
           "tiou_thresholds": [round(float(t), 2) for t in up_args.tiou_thresholds],
           "average_mAP": float(test_log["test_mAP"]), "test_acc": float(test_log["test_acc"])}
    num_classes = len(ctx.class_names)

    def run(features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        outputs = model(features)
        act_inst_cls, temp_att, act_inst_cas = outputs[0], outputs[6], outputs[7]
        # As main_thu.test reads them: the instance CAS and video score without the background column, and the
        # instance attention channel.
        return act_inst_cas[0, :, :num_classes], act_inst_cls[0, :num_classes], temp_att[0, :, 0]

    return shared.UpstreamRun(model=shared.UpstreamModel("acmnet", model, run), history=history, evaluation=own,
                              ftcl_steps=len(attachment.history))
