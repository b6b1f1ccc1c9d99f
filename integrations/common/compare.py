"""The paired protocol: one baseline pre-training, then every arm fine-tuned from that checkpoint."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .context import DISPLAY_NAMES, Context, RunResult
from .training import run_meta, train

__all__ = ["paired_compare"]


def _reusable(out: Path, config: dict[str, Any], epochs: int, run: dict[str, Any] | None = None) -> bool:
    """Whether ``out`` holds a finished run of exactly this config (so experiments can share or resume it).

    ``run`` is the run table to match too (``None``: ignore it, as for a pre-training shared between tables).
    """
    path, saved = out / "checkpoints" / "last.pt", out / "config.json"
    if not (path.is_file() and saved.is_file()):
        return False
    stored = json.loads(saved.read_text())
    stored_run = stored.pop("run", None)
    if stored != json.loads(json.dumps(config, default=str)):
        return False
    if run is not None and stored_run != json.loads(json.dumps(run, default=str)):
        return False
    state = torch.load(path, map_location="cpu", weights_only=True)
    return int(state["epoch"]) >= epochs and not state.get("partial")


def _load_result(out: Path, label: str) -> RunResult:
    """The :class:`RunResult` of a finished run, read back from its ``table.json``."""
    table = json.loads((out / "table.json").read_text())
    return RunResult(out=out, last=table["last"], best=table.get("best_on_test") or None, history=[],
                     steps=int(table["steps"]), seconds=float(table["seconds"]), label=label)


def paired_compare(ctx: Context, out: Path, *, init_from: Path | None = None, best_on_test: bool = False,
                   plot: bool = True, arms: dict[str, Callable[[int], nn.Module] | None] | None = None,
                   pretrain_dir: Path | None = None, reuse: bool = False) -> dict[str, Any]:
    """The paired protocol: pre-train the baseline once, then fine-tune every arm from that checkpoint.

    Every arm starts from the same weights, sees the same batches in the same order with the same temporal
    samples and dropout stream, and takes the same number of steps; only its extra loss differs.

    Args:
        ctx: the run context (``compare.pretrain_epochs`` and ``compare.finetune_epochs`` set the lengths).
        out: the output folder (``pretrain/`` and one folder per arm under it).
        init_from: skip pre-training and fine-tune from this checkpoint.
        best_on_test: also report best-on-test rows.
        plot: write plots.
        arms: arm name -> contrastive factory (``None`` = FTCL from the config); default
            ``{"baseline": no extra loss, "ftcl": FTCL}``. The arm named ``"baseline"`` trains without extra loss.
        pretrain_dir: where to pre-train (default ``out / "pretrain"``); a finished pre-training of the same config
            found there is reused.
        reuse: reuse arms already finished in ``out`` with the same config (adding seeds to a table).

    Returns:
        ``{"rows": [(name, summary)], "results": {arm: RunResult}, "difference": {column: with - without}}``.
    """
    compare = ctx.config.get("compare", {})
    display = DISPLAY_NAMES.get(ctx.name, ctx.name)
    if init_from is None:
        pre_out = pretrain_dir or out / "pretrain"
        epochs = int(compare.get("pretrain_epochs", 1))
        if not _reusable(pre_out, ctx.config, epochs):
            train(ctx, pre_out, ftcl=False, epochs=epochs, plot=False, label=f"{display} (pre-training)")
        init_from = pre_out / "checkpoints" / "last.pt"
    arms = arms if arms is not None else {"baseline": None, "ftcl": None}
    results: dict[str, RunResult] = {}
    epochs = int(compare.get("finetune_epochs", 1))
    for arm, factory in arms.items():
        name = display if arm == "baseline" else f"{display} + {'FTCL' if arm == 'ftcl' else arm}"
        meta = run_meta(arm != "baseline", init_from, epochs, name)
        if reuse and _reusable(out / arm, ctx.config, epochs, meta) and (out / arm / "table.json").is_file():
            results[arm] = _load_result(out / arm, name)
            continue
        results[arm] = train(ctx, out / arm, ftcl=arm != "baseline", init_from=init_from, epochs=epochs,
                             best_on_test=best_on_test, plot=plot, contrastive=factory, label=name)
    rows = [(result.label, result.last.get("summary", {})) for result in results.values()]
    difference = {}
    if "baseline" in results and "ftcl" in results and ctx.rank == 0:
        base, with_ftcl = results["baseline"].last["summary"], results["ftcl"].last["summary"]
        difference = {k: with_ftcl[k] - base[k] for k in base}
    return {"rows": rows, "results": results, "difference": difference, "init_from": str(init_from)}
