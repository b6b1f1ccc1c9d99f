"""``integrations/<name>/train.py --upstream PATH``: train the user's own checkout of the baseline with FTCL added.

The upstream's model class, dataset class, loss and per-step (or per-epoch) training function run unchanged from the
checkout; ``patches/<name>.py`` makes them run on today's numpy/torch and on the chosen device, hooks FTCL onto the
embedding and the attention, adds the FTCL parameters to the upstream optimizer and the FTCL loss to the upstream
loss. The baseline's driver, ``integrations/<name>/upstream.py`` (see :mod:`integrations.common.upstream_driver`),
does that inside the session; :func:`run_upstream` does what is common to the four: check the flags and the
checkout, own the run folder, score the trained model with our localization and evaluator, and write the outputs of
the clean-room mode (``config.json``, ``metrics.csv``, ``predictions.json``, ``table.md``, ``table.json``,
``checkpoints/last.pt``) plus ``upstream.json`` (the checkout, its identification and the upstream's own numbers)
and ``upstream.log`` (what the upstream printed).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from patches import get as get_patch
from patches._common import UpstreamError, check_checkout

from .cli import check_flags, check_ftcl, resolve_config
from .context import Context, RunResult, builtin_root, prepare
from .files import save_checkpoint, write_json
from .outputs import evaluate, row_name, write_csv, write_outputs
from .rundir import claim
from .settings import RunSettings
from .training import run_meta
from .upstream_driver import UpstreamRun

__all__ = ["UNAVAILABLE_FLAGS", "run_upstream"]

#: Flags of the clean-room runner that the upstream's own loop cannot honour.
UNAVAILABLE_FLAGS = ("compare", "resume", "ddp_gather", "best_on_test")


class _Tee(io.TextIOBase):
    """Copy what the upstream prints to the console into a log file as well."""

    def __init__(self, *streams: Any) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


def run_upstream(name: str, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Train and evaluate the upstream checkout at ``args.upstream`` with FTCL patched in.

    The output folder is claimed as in the clean-room mode (``rundir.claim``): locked while the run writes, a folder
    holding another run refused unless ``--overwrite``, ``config.json`` written first.

    Args:
        name: ``"acmnet"``, ``"cola"``, ``"wtalc"`` or ``"stpn"``.
        args: the runner's parsed flags.
        parser: the runner's parser (for error messages).

    Returns:
        The exit status (0 on success).

    Raises:
        SystemExit: with status 2 and an ``argument --upstream: ...`` message for a checkout that is not the
            supported commit, lacks a file, or whose classes or signatures changed (and for the other flag errors).
        RunError: for an output folder in use or holding another run, an unusable ``--init-from``, unreadable data.
    """
    for flag in UNAVAILABLE_FLAGS:
        if getattr(args, flag, False):
            parser.error(f"argument --{flag.replace('_', '-')}: not available with --upstream")
    if args.dataset != "thumos14":
        parser.error("argument --dataset: the --upstream mode drives the upstream's THUMOS14 recipe only")
    check_flags(args, parser)
    patch = get_patch(name)
    driver = importlib.import_module(f"integrations.{name}.upstream")
    try:
        # Refuse a wrong checkout before any data is read or generated.
        check_checkout(args.upstream, patch.SPEC)
    except UpstreamError as error:
        parser.error(f"argument --upstream: {error}")
    if args.layout is not None and args.layout != driver.LAYOUT:
        parser.error(f"argument --layout: the upstream {name} code reads the {driver.LAYOUT} layout, not "
                     f"{args.layout} (convert with `ftcl-data convert`).")
    config = resolve_config(name, args, parser)
    # The upstream reads the features as they are stored: no input scaling in this mode.
    config["data"]["input_scale"] = 1.0
    config["meta"].update({"layout": driver.LAYOUT, "upstream": str(args.upstream),
                           "init_from": str(args.init_from) if args.init_from is not None else None})
    settings = RunSettings.from_config(config)
    check_ftcl(settings, parser)
    tag = "ftcl" if settings.ftcl.enabled else "baseline"
    out = args.out if args.out is not None else Path("runs") / f"{name}-upstream-{tag}-seed{settings.train.seed}"
    root = args.data if args.data is not None else builtin_root(settings.data, driver.LAYOUT)
    ctx = prepare(name, config, data=root, layout=driver.LAYOUT, device=args.device)
    label = row_name(ctx, ftcl=settings.ftcl.enabled) + " (upstream)"
    record = config | {"run": run_meta(settings.ftcl.enabled, args.init_from, settings.train.epochs, label)
                       | {"protocol": "upstream"}}
    started = time.perf_counter()
    with claim(out, record, overwrite=args.overwrite):
        try:
            with (out / "upstream.log").open("w") as log, contextlib.redirect_stdout(_Tee(sys.stdout, log)):
                report = _run_in_session(patch, driver, args, ctx, out, label, started)
        except UpstreamError as error:
            parser.error(f"argument --upstream: {error}")
        write_json(out / "upstream.json", report, default=_json_default)
    print((out / "table.md").read_text().rstrip())
    if report["upstream_evaluation"]:
        print(f"\nupstream's own evaluation: {json.dumps(report['upstream_evaluation'], default=_json_default)}")
    print(f"\noutputs: {out}  ({time.perf_counter() - started:.0f} s)")
    return 0


def _run_in_session(patch: ModuleType, driver: ModuleType, args: argparse.Namespace, ctx: Context, out: Path,
                    label: str, started: float) -> dict[str, Any]:
    """Train, evaluate and write the outputs, all inside one upstream session; the ``upstream.json`` content."""
    with patch.session(args.upstream, device=ctx.device) as up:
        stand_ins = list(up.stand_ins)
        print(f"[ftcl-upstream] {patch.SPEC.short} at {up.root} ({up.identified_by}); "
              f"stand-ins for missing packages: {', '.join(stand_ins) or 'none'}")
        run: UpstreamRun = driver.drive(up, ctx, out)
        (out / "checkpoints").mkdir(exist_ok=True)
        # The upstream model's own state_dict (loadable by its code, and by --init-from here); FTCL's heads are a
        # training aid and are not saved.
        save_checkpoint(out / "checkpoints" / "last.pt", {"model": run.model.upstream.state_dict()})
        # Still inside the session: some upstream forwards call .cuda(), which the session redirects.
        last = evaluate(ctx, run.model)
        write_csv(out / "metrics.csv", run.history)
        steps = int(run.history[-1]["step"]) if run.history else 0
        result = RunResult(out=out, last=last, best=None, history=run.history, steps=steps,
                           seconds=time.perf_counter() - started)
        write_outputs(ctx, run.model, result, label=label, plot=not args.no_plot)
        identified_by = up.identified_by
    settings = ctx.settings
    return {"baseline": ctx.name, "repository": patch.SPEC.repository, "commit": patch.SPEC.commit,
            "checkout": str(Path(args.upstream).resolve()), "identified_by": identified_by, "stand_ins": stand_ins,
            "data": str(ctx.root), "ftcl": settings.ftcl.enabled, "seed": settings.train.seed, "steps": steps,
            "upstream_evaluation": run.evaluation, "ftcl_steps": run.ftcl_steps, **run.extra}
