"""Evaluation and the files a run writes: ``metrics.csv``, ``predictions.json``, ``table.md``, ``table.json``, plots.

Every file is written atomically (:func:`~integrations.common.files.atomic_file`): a run killed mid-write leaves the
previous version or the new one, never a truncated file.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ftcl_plugin.evaluation import classification_map, detection_map
from ftcl_plugin.localization import localize, results_json

from .baseline import Baseline
from .context import DISPLAY_NAMES, Context, RunResult
from .files import atomic_file, write_json, write_text
from .report import machine_description, markdown_table, summary_rows

__all__ = ["data_note", "evaluate", "jsonable", "plot_videos", "row_name", "write_csv", "write_outputs"]


def write_csv(path: Path, history: list[dict[str, Any]]) -> None:
    """Write the per-epoch metrics rows to ``path`` (columns in order of first appearance)."""
    columns: list[str] = []
    for row in history:
        columns += [key for key in row if key not in columns]
    with atomic_file(path, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)


def evaluate(ctx: Context, model: Baseline) -> dict[str, Any]:
    """Localize every test video and compute detection and classification mAP.

    Args:
        ctx: the run context.
        model: the trained model.

    Returns:
        The ``detection_map`` result with ``"cmap"`` (classification mAP) and ``"predictions"`` (results JSON).
    """
    settings = ctx.settings
    loc_cfg = settings.localization_config(**model.localization_overrides())
    scale = settings.data.input_scale
    was_training = model.training
    model.eval()
    proposals: dict[str, list[dict]] = {}
    scores, labels = [], []
    with torch.no_grad():
        for index in range(len(ctx.test)):
            record = ctx.test[index]
            features = record.features[None].to(ctx.device) * scale
            output = model(features, torch.tensor([features.shape[1]], device=ctx.device))
            cas, video_scores, attention = model.inference(output)
            proposals[record.video] = localize(
                cas, video_scores, attention=attention, class_names=ctx.class_names,
                num_snippets=int(record.num_snippets), duration=float(record.duration), config=loc_cfg,
            )
            scores.append(np.asarray(video_scores, dtype=np.float64))
            labels.append(record.label.numpy().astype(np.float64))
    model.train(was_training)
    predictions = results_json(proposals)
    result = detection_map(ctx.test.ground_truth, predictions, preset=settings.evaluation.preset,
                           subset=ctx.test.subset)
    result["cmap"] = float(classification_map(np.stack(scores), np.stack(labels)))
    result["predictions"] = predictions
    return result


def jsonable(result: dict[str, Any]) -> dict[str, Any]:
    """The numbers of an evaluation (no predictions or curves), with numpy scalars turned into floats."""
    keep = {k: v for k, v in result.items() if k != "predictions"}
    return json.loads(json.dumps(keep, default=float))


def row_name(ctx: Context, *, ftcl: bool, label: str = "") -> str:
    """The table row name of an arm, e.g. ``"ACM-Net + FTCL"``."""
    return label or (DISPLAY_NAMES.get(ctx.name, ctx.name) + (" + FTCL" if ftcl else ""))


def write_outputs(ctx: Context, model: Baseline, result: RunResult, *, label: str, plot: bool) -> None:
    """Write ``predictions.json``, ``table.md``, ``table.json`` and (with ``plot``) ``plot.png`` under ``result.out``."""
    out = result.out
    write_json(out / "predictions.json", result.last["predictions"], indent=None, default=None)
    named = [(f"{label} (last epoch)", result.last["summary"])]
    if result.best:
        named.append((f"{label} (best-on-test, epoch {result.best['epoch']})", result.best["summary"]))
    header, rows = summary_rows(named)
    write_text(out / "table.md", data_note(ctx) + "\n\n" + markdown_table(header, rows) + "\n")
    write_json(out / "table.json",
               {"rows": [{"name": n, "summary": s} for n, s in named], "last": jsonable(result.last),
                "best_on_test": result.best, "steps": result.steps, "seconds": result.seconds,
                "ftcl_activity": result.activity, "data": ctx.settings.meta.data, "seed": ctx.settings.train.seed,
                "machine": machine_description()})
    if plot:
        note = plot_videos(ctx, model, out / "plot.png")
        if note:
            print(note, file=sys.stderr)


def data_note(ctx: Context) -> str:
    """The line above every table: data, test videos, seed and machine."""
    settings = ctx.settings
    kind = "synthetic" if settings.meta.synthetic else "real features"
    return (f"Data: {settings.meta.data} ({kind}), {len(ctx.test)} test videos; seed {settings.train.seed}; "
            f"machine: {machine_description()}. mAP in %, last epoch unless labelled.")


def plot_videos(ctx: Context, model: Baseline, path: Path, *, count: int | None = None) -> str:
    """Plot the CAS (ground-truth classes) and the attention of a few test videos against their ground truth.

    Args:
        ctx: the run context.
        model: the trained model.
        path: the PNG to write.
        count: videos to plot (default ``plot.videos`` or 3).

    Returns:
        ``""`` on success, or a note saying why no plot was written (matplotlib missing).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "note: matplotlib is not installed (pip install ftcl-plugin[plot]); no plot written."
    count = int(count or ctx.settings.plot.videos)
    curves = _curves(ctx, model, count)
    figure, axes = plt.subplots(len(curves), 1, figsize=(10, 2.2 * len(curves)), squeeze=False)
    database = ctx.test.ground_truth["database"]
    for axis, curve in zip(axes[:, 0], curves):
        cas = curve["cas"]
        seconds = np.arange(cas.shape[0]) * curve["duration"] / max(cas.shape[0], 1)
        for segment in database.get(curve["video"], {}).get("annotations", []):
            axis.axvspan(*segment["segment"], color="tab:green", alpha=0.2)
        for c in np.flatnonzero(curve["label"]):
            axis.plot(seconds, cas[:, c], label=f"CAS {ctx.class_names[c]}")
        if curve["attention"] is not None:
            axis.plot(seconds, np.asarray(curve["attention"]), color="black", linestyle="--", label="attention")
        axis.set_title(f"{curve['video']} (green: ground truth)", fontsize=9)
        axis.set_ylim(-0.05, 1.05)
        axis.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("seconds")
    figure.tight_layout()
    with atomic_file(path, binary=True) as handle:
        figure.savefig(handle, format="png", dpi=90)
    plt.close(figure)
    return ""


def _curves(ctx: Context, model: Baseline, count: int) -> list[dict[str, Any]]:
    scale = ctx.settings.data.input_scale
    was_training = model.training
    model.eval()
    curves = []
    with torch.no_grad():
        for index in range(min(count, len(ctx.test))):
            record = ctx.test[index]
            output = model(record.features[None].to(ctx.device) * scale)
            cas, attention = model.plot_signals(output)
            curves.append({"video": record.video, "cas": np.asarray(cas), "attention": attention,
                           "label": record.label.numpy(), "duration": float(record.duration)})
    model.train(was_training)
    return curves
