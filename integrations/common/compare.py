"""The paired protocol: one baseline pre-training, then every arm fine-tuned from that checkpoint.

The ``--compare`` folder is a run folder of its own (``config.json`` with ``run.protocol = "compare"``), locked
while the protocol runs; the pre-training and every arm are run folders inside it (or, for a pre-training shared
between experiment tables, elsewhere), each claimed by ``train``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from .config import deep_merge
from .context import DISPLAY_NAMES, Context, RunResult
from .files import CheckpointError, read_checkpoint
from .rundir import claim, differences, folder_lock, read_record
from .training import run_meta, train

__all__ = ["arm_folder", "paired_compare"]


def _reusable(out: Path, record: dict[str, Any], epochs: int) -> bool:
    """Whether ``out`` holds a finished run with this ``config.json`` record (so experiments can share it)."""
    stored = read_record(out)
    if stored is None or differences(stored, record) or not (out / "table.json").is_file():
        return False
    try:
        state = read_checkpoint(out / "checkpoints" / "last.pt", "reuse", require=("epoch",))
    except CheckpointError:
        return False
    return int(state["epoch"]) >= epochs and not state.get("partial")


def _load_result(out: Path, label: str) -> RunResult:
    """The :class:`RunResult` of a finished run, read back from its ``table.json``."""
    table = json.loads((out / "table.json").read_text())
    return RunResult(out=out, last=table["last"], best=table.get("best_on_test") or None, history=[],
                     steps=int(table["steps"]), seconds=float(table["seconds"]), label=label,
                     activity=dict(table.get("ftcl_activity", {})))


def arm_folder(arm: str) -> str:
    """The folder name of an arm: its name with every run of characters other than letters, digits, ``.``, ``_``
    and ``-`` replaced by one ``-`` (``"FTCL (w/o FSD)"`` -> ``"FTCL-w-o-FSD"``), so no name nests folders."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", arm).strip("-")


def paired_compare(ctx: Context, out: Path, *, init_from: Path | None = None, best_on_test: bool = False,
                   plot: bool = True, arms: dict[str, dict[str, Any] | None] | None = None,
                   pretrain_dir: Path | None = None, reuse: bool = False, overwrite: bool = False
                   ) -> dict[str, Any]:
    """The paired protocol: pre-train the baseline once, then fine-tune every arm from that checkpoint.

    Every arm starts from the same weights, sees the same batches in the same order with the same temporal
    samples and dropout stream, and takes the same number of steps; only its extra loss differs.

    Args:
        ctx: the run context (``compare.pretrain_epochs`` and ``compare.finetune_epochs`` set the lengths).
        out: the output folder (``pretrain/`` and one folder per arm under it).
        init_from: skip pre-training and fine-tune from this checkpoint.
        best_on_test: also report best-on-test rows.
        plot: write plots.
        arms: arm name -> the ``[ftcl]`` settings that arm lays over the config's (``{}``: the config's FTCL, i.e.
            the README's two lines with their defaults); default ``{"baseline": None, "ftcl": {}}``. The arm named
            ``"baseline"`` trains without FTCL (its value is ignored). Each arm's settings are part of its run
            folder's ``config.json``.
        pretrain_dir: where to pre-train (default ``out / "pretrain"``); a finished pre-training of the same config
            found there is reused. A pre-training outside ``out`` is shared: a process that finds another one
            training it waits for it instead of refusing.
        reuse: reuse arms already finished in ``out`` with the same config (adding seeds to a table).
        overwrite: replace a different run found in ``out`` (or in the pre-training folder) instead of refusing.

    Returns:
        ``{"rows": [(name, summary)], "results": {arm: RunResult}, "difference": {column: with - without}}``.

    Raises:
        RunFolderError: if ``out`` (or a folder inside it) is in use or holds a different run.
    """
    compare = ctx.settings.compare
    display = DISPLAY_NAMES.get(ctx.name, ctx.name)
    arms = arms if arms is not None else {"baseline": None, "ftcl": {}}
    main_rank = ctx.rank == 0
    record = ctx.config | {"run": {
        "protocol": "compare", "pretrain_epochs": compare.pretrain_epochs, "finetune_epochs": compare.finetune_epochs,
        "init_from": str(init_from) if init_from else None, "best_on_test": best_on_test, "arms": list(arms)}}
    # The arms are run folders checked on their own, so the same protocol run again keeps them (a finished
    # pre-training is reused); its summary files are rewritten at the end.
    holding = claim(out, record, overwrite=overwrite, clear_same=False) if main_rank else contextlib.nullcontext()
    with holding:
        if main_rank:
            for name in ("compare.md", "compare.json"):
                (out / name).unlink(missing_ok=True)
        return _run_arms(ctx, out, arms, display=display, init_from=init_from, best_on_test=best_on_test,
                         plot=plot, pretrain_dir=pretrain_dir, reuse=reuse, overwrite=overwrite)


def _run_arms(ctx: Context, out: Path, arms: dict[str, dict[str, Any] | None], *, display: str,
              init_from: Path | None, best_on_test: bool, plot: bool, pretrain_dir: Path | None, reuse: bool,
              overwrite: bool) -> dict[str, Any]:
    compare = ctx.settings.compare
    main_rank = ctx.rank == 0
    if init_from is None:
        pre_out = pretrain_dir or out / "pretrain"
        epochs = compare.pretrain_epochs
        label = f"{display} (pre-training)"
        shared = pretrain_dir is not None
        record = ctx.config | {"run": run_meta(False, None, epochs, label)}
        # Checked under the folder's lock, so a table run that waited for another one's pre-training reuses it.
        with folder_lock(pre_out, wait=shared) if main_rank else contextlib.nullcontext():
            if not _reusable(pre_out, record, epochs):
                train(ctx, pre_out, ftcl=False, epochs=epochs, plot=False, label=label, overwrite=overwrite,
                      wait=shared)
        init_from = pre_out / "checkpoints" / "last.pt"
    results: dict[str, RunResult] = {}
    epochs = compare.finetune_epochs
    for arm, settings in arms.items():
        name = display if arm == "baseline" else f"{display} + {'FTCL' if arm == 'ftcl' else arm}"
        arm_ctx = ctx if arm == "baseline" or not settings else dataclasses.replace(
            ctx, config=deep_merge(ctx.config, {"ftcl": settings}))
        record = arm_ctx.config | {"run": run_meta(arm != "baseline", init_from, epochs, name, best_on_test)}
        folder = out / arm_folder(arm)
        if reuse and _reusable(folder, record, epochs):
            results[arm] = _load_result(folder, name)
            continue
        results[arm] = train(arm_ctx, folder, ftcl=arm != "baseline", init_from=init_from, epochs=epochs,
                             best_on_test=best_on_test, plot=plot, label=name, overwrite=overwrite)
    rows = [(result.label, result.last.get("summary", {})) for result in results.values()]
    difference = {}
    if "baseline" in results and "ftcl" in results and ctx.rank == 0:
        base, with_ftcl = results["baseline"].last["summary"], results["ftcl"].last["summary"]
        difference = {k: with_ftcl[k] - base[k] for k in base}
    return {"rows": rows, "results": results, "difference": difference, "init_from": str(init_from)}
