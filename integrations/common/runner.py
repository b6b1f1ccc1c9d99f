"""The training and evaluation runner behind every ``integrations/<name>/train.py``.

``main(name, argv)`` parses the common flags, resolves the baseline's TOML config, trains the clean-room model with
or without FTCL (added as the README does: ``model.ftcl = FTCL(feature_dim=E)`` before the optimizer and
``loss = loss + ftcl(embedding, attention, labels)`` every step), checkpoints, evaluates with
``ftcl_plugin.localization`` and ``ftcl_plugin.evaluation`` and writes everything under ``--out``.
``--compare`` runs the paired protocol: one baseline pre-training, then both arms fine-tuned from that checkpoint
for the same steps with the same data order. Run under ``torchrun`` it trains data-parallel (gradients averaged by
all-reduce; FTCL pairs mined per rank, or across ranks with ``--ddp-gather``). ``--upstream PATH`` hands the run
to :func:`integrations.common.upstream.run_upstream`.

A user's mistake (a bad flag or override, an ``--out`` that is a file or holds another run, an unusable
checkpoint, unreadable data) ends with a one-line message and exit status 2; Ctrl-C ends with status 130 and the
command that resumes the run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from .cli import build_parser, check_flags, check_ftcl, resolve_config
from .compare import paired_compare
from .context import Context, prepare
from .files import CheckpointError, RunError, read_checkpoint, write_json, write_text
from .outputs import data_note, row_name
from .report import machine_description, markdown_table, summary_rows
from .rundir import folder_lock
from .settings import RunSettings
from .training import train
from .upstream import run_upstream

__all__ = ["default_out", "main", "resume_command"]


def default_out(name: str, args: argparse.Namespace, config: dict[str, Any]) -> Path:
    """``runs/<name>-<dataset>-<ftcl|baseline|compare>-seed<seed>``."""
    settings = RunSettings.from_config(config)
    tag = "compare" if args.compare else ("ftcl" if settings.ftcl.enabled else "baseline")
    return Path("runs") / f"{name}-{args.dataset}-{tag}-seed{settings.train.seed}"


def main(name: str, argv: list[str] | None = None) -> int:
    """Entry point of ``integrations/<name>/train.py``.

    Args:
        name: the baseline's directory name.
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status: 0, or 130 after Ctrl-C (with the command that resumes the run).

    Raises:
        SystemExit: with status 2 and a one-line message for a user's mistake (a bad flag or ``--set``, an
            ``--out`` that is a file, in use or holding another run, an unusable checkpoint, unreadable data).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(name)
    args = parser.parse_args(argv)
    if args.upstream is not None:
        try:
            return run_upstream(name, args, parser)
        except RunError as error:
            parser.exit(2, f"{parser.prog}: error: {error}\n")
        except KeyboardInterrupt:
            print("\ninterrupted. An --upstream run cannot be resumed: run the same command again.", file=sys.stderr)
            return 130
    check_flags(args, parser)
    config = resolve_config(name, args, parser)
    check_ftcl(RunSettings.from_config(config), parser, required=args.compare)
    out = args.out or default_out(name, args, config)
    try:
        return _run(name, args, config, out)
    except RunError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    except KeyboardInterrupt:
        return _interrupted(name, argv, args, out)


def _run(name: str, args: argparse.Namespace, config: dict[str, Any], out: Path) -> int:
    started = time.perf_counter()
    ctx = prepare(name, config, data=args.data, layout=args.layout, device=args.device, ddp_gather=args.ddp_gather)
    ftcl = ctx.settings.ftcl.enabled
    if args.compare:
        with folder_lock(out) if ctx.rank == 0 else contextlib.nullcontext():
            report = paired_compare(ctx, out, init_from=args.init_from, best_on_test=args.best_on_test,
                                    plot=not args.no_plot, overwrite=args.overwrite)
            if ctx.rank == 0:
                _write_compare(ctx, out, report)
    else:
        train(ctx, out, ftcl=ftcl, init_from=args.init_from, resume=args.resume, best_on_test=args.best_on_test,
              plot=not args.no_plot, label=row_name(ctx, ftcl=ftcl), overwrite=args.overwrite)
        if ctx.rank == 0:
            print((out / "table.md").read_text().rstrip())
    if ctx.rank == 0:
        print(f"\noutputs: {out}  ({time.perf_counter() - started:.0f} s)")
    if ctx.world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0


def _write_compare(ctx: Context, out: Path, report: dict[str, Any]) -> None:
    settings = ctx.settings
    header, rows = summary_rows(report["rows"])
    diff = report["difference"]
    rows.append(["difference (with - without)", *(f"{100.0 * diff[c]:+.1f}" for c in header[1:])])
    text = (f"{data_note(ctx)}\nPaired protocol: both arms fine-tuned from {report['init_from']} for "
            f"{report['results']['ftcl'].steps} steps.\n\n" + markdown_table(header, rows))
    write_text(out / "compare.md", text + "\n")
    write_json(out / "compare.json",
               {"rows": [{"name": n, "summary": s} for n, s in report["rows"]], "difference": diff,
                "init_from": report["init_from"], "data": settings.meta.data, "seed": settings.train.seed,
                "machine": machine_description()})
    print(text)


def resume_command(name: str, argv: list[str], out: Path) -> str:
    """The command that continues an interrupted run: the same arguments with ``--resume`` and ``--out``.

    Args:
        name: the baseline's directory name.
        argv: the arguments the run was started with.
        out: its output folder.

    Returns:
        A shell command line (``torchrun --nproc_per_node=N ...`` under torchrun).

    Example:
        >>> resume_command("acmnet", ["--seed", "1"], Path("runs/x"))  # doctest: +SKIP
        'python integrations/acmnet/train.py --seed 1 --out runs/x --resume'
    """
    script = sys.argv[0] if Path(sys.argv[0]).name == "train.py" else f"integrations/{name}/train.py"
    words = [word for word in argv if word not in ("--resume", "--overwrite")]
    if not any(word == "--out" or word.startswith("--out=") for word in words):
        words += ["--out", str(out)]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    launcher = ["torchrun", f"--nproc_per_node={world}"] if world > 1 else ["python"]
    return shlex.join([*launcher, script, *words, "--resume"])


def _interrupted(name: str, argv: list[str], args: argparse.Namespace, out: Path) -> int:
    """Say where an interrupted run stands and how to continue it; the exit status of SIGINT (130)."""
    if int(os.environ.get("RANK", "0")) != 0:
        return 130
    last = out / "checkpoints" / "last.pt"
    if args.compare:
        text = (f"interrupted. A --compare run cannot be resumed: run the same command again (a finished "
                f"pre-training in {out / 'pretrain'} is reused).")
    elif last.is_file():
        try:
            state = read_checkpoint(last, "--resume", require=("epoch", "step"))
            where = f" (after epoch {int(state['epoch'])}, step {int(state['step'])})"
        except CheckpointError:
            where = ""
        text = f"interrupted. Last checkpoint: {last}{where}.\nContinue with: {resume_command(name, argv, out)}"
    else:
        text = f"interrupted before the first checkpoint of {out}; run the same command again to start over."
    print("\n" + text, file=sys.stderr)
    return 130
