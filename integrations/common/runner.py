"""The training and evaluation runner behind every ``integrations/<name>/train.py``.

``main(name, argv)`` parses the common flags, resolves the baseline's TOML config, trains the clean-room model with
or without FTCL (added as the README does: ``model.ftcl = FTCL(feature_dim=E)`` before the optimizer and
``loss = loss + ftcl(embedding, attention, labels)`` every step, scaled by a short linear warm-up), checkpoints,
evaluates with ``ftcl_plugin.localization`` and ``ftcl_plugin.evaluation`` and writes everything under ``--out``.
``--compare`` runs the paired protocol: one baseline pre-training, then both arms fine-tuned from that checkpoint
for the same steps with the same data order. Run under ``torchrun`` it trains data-parallel (gradients averaged by
all-reduce; FTCL pairs mined per rank, or across ranks with ``--ddp-gather``).

A user's mistake (a bad flag or override, an ``--out`` that is a file or holds another run, an unusable
checkpoint, unreadable data) ends with a one-line message and exit status 2; Ctrl-C ends with status 130 and the
command that resumes the run.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import torch

from .compare import paired_compare
from .config import apply_overrides, load_config, set_dotted
from .context import BUILTIN_NAMES, DISPLAY_NAMES, make_contrastive, prepare
from .files import CheckpointError, RunError, read_checkpoint, write_json, write_text
from .outputs import data_note, row_name
from .report import machine_description, markdown_table, summary_rows
from .rundir import folder_lock
from .training import BATCH_SAMPLERS, train

__all__ = ["ArgumentParser", "build_parser", "check_settings", "main", "resume_command"]


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, but an error is two lines (the message and where to find help), not the usage block."""

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message>`` and a pointer to ``--help``; exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message}\n(`{self.prog} --help` lists the flags)\n")


def build_parser(name: str) -> argparse.ArgumentParser:
    """The command-line parser shared by every ``integrations/<name>/train.py``.

    Args:
        name: the baseline's directory name.

    Returns:
        The parser.
    """
    display = DISPLAY_NAMES.get(name, name)
    parser = ArgumentParser(
        prog=f"integrations/{name}/train.py",
        description=(
            f"Train and evaluate {display} with or without FTCL. With no arguments: {display} + FTCL on the built-in "
            "thumos14-like synthetic dataset, then the mAP table."
        ),
    )
    data = parser.add_argument_group("data")
    data.add_argument("--data", type=Path, default=None, metavar="DIR",
                      help="feature root of a real dataset (default: the built-in synthetic dataset)")
    data.add_argument("--layout", choices=["acmnet", "cola", "wtalc"], default=None,
                      help="layout of --data (default: acmnet)")
    data.add_argument("--dataset", choices=["thumos14", "activitynet"], default="thumos14",
                      help="selects the config (thresholds, T, hyperparameters) and the built-in dataset")
    model = parser.add_argument_group("FTCL")
    model.add_argument("--ftcl", dest="ftcl", action="store_true", default=None, help="add FTCL (default)")
    model.add_argument("--no-ftcl", dest="ftcl", action="store_false", help="train the plain baseline")
    model.add_argument("--fsd-weight", type=_non_negative, default=None, help="FSD weight (default: variant's)")
    model.add_argument("--lcs-weight", type=_non_negative, default=None, help="LCS weight (default: variant's)")
    model.add_argument("--variant", choices=["paper", "official"], default=None, help="FTCL defaults to follow")
    run = parser.add_argument_group("run")
    run.add_argument("--seed", type=int, default=None, help="seed of init, data order and sampling")
    run.add_argument("--epochs", type=_positive_int, default=None, help="training epochs")
    run.add_argument("--iterations", type=_positive_int, default=None, help="cap on training steps")
    run.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    run.add_argument("--init-from", type=Path, default=None, metavar="CKPT",
                     help="start from this checkpoint's model weights (the release recipe: fine-tune a baseline)")
    run.add_argument("--resume", action="store_true",
                     help="continue the run in --out from its last checkpoint (refused if a setting differs)")
    run.add_argument("--out", type=Path, default=None, metavar="DIR", help="output folder (default: runs/<...>)")
    run.add_argument("--overwrite", action="store_true",
                     help="if --out holds a different run, delete its files first (default: refuse)")
    run.add_argument("--compare", action="store_true",
                     help="paired protocol: pre-train the baseline, fine-tune both arms from it, print the difference")
    run.add_argument("--best-on-test", action="store_true",
                     help="also report the epoch that is best on the test set (labelled; evaluates every epoch)")
    run.add_argument("--ddp-gather", action="store_true",
                     help="under torchrun: mine FTCL pairs across ranks (all-gather embedding and attention)")
    run.add_argument("--no-plot", action="store_true", help="skip the CAS/attention plot")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="override any config value (TOML syntax), e.g. --set optim.lr=3e-4; repeatable")
    run.add_argument("--upstream", type=Path, default=None, metavar="PATH",
                     help="run the upstream codebase checked out at PATH with FTCL patched in")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}")
    return value


def resolve_config(name: str, args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Read the baseline's config and apply the command line on top of it.

    Args:
        name: the baseline's directory name.
        args: the parsed flags.
        parser: the parser (for error messages).

    Returns:
        The resolved config.
    """
    config = load_config(name, args.dataset, builtin_data=args.data is None)
    try:
        apply_overrides(config, args.overrides)
    except ValueError as error:
        parser.error(f"argument --set: {error}")
    flags = {
        ("train", "seed"): args.seed,
        ("train", "epochs"): args.epochs,
        ("train", "iterations"): args.iterations,
        ("ftcl", "enabled"): args.ftcl,
        ("ftcl", "variant"): args.variant,
        ("ftcl", "fsd_weight"): args.fsd_weight,
        ("ftcl", "lcs_weight"): args.lcs_weight,
    }
    for path, value in flags.items():
        if value is not None:
            set_dotted(config, list(path), value)
    config.setdefault("meta", {}).update(
        {"baseline": name, "dataset": args.dataset, "device": args.device,
         "data": str(args.data) if args.data is not None else f"builtin:{BUILTIN_NAMES[args.dataset]}",
         "layout": args.layout or "acmnet"}
    )
    return config


# --------------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------------


def default_out(name: str, args: argparse.Namespace, config: dict[str, Any]) -> Path:
    """``runs/<name>-<dataset>-<ftcl|baseline|compare>-seed<seed>``."""
    tag = "compare" if args.compare else ("ftcl" if config["ftcl"].get("enabled", True) else "baseline")
    return Path("runs") / f"{name}-{args.dataset}-{tag}-seed{config['train'].get('seed', 0)}"


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
        from integrations.common.upstream import run_upstream

        try:
            return run_upstream(name, args)
        except RunError as error:
            parser.exit(2, f"{parser.prog}: error: {error}\n")
        except KeyboardInterrupt:
            print("\ninterrupted. An --upstream run cannot be resumed: run the same command again.", file=sys.stderr)
            return 130
    _check_flags(args, parser)
    try:
        config = resolve_config(name, args, parser)
    except FileNotFoundError as error:
        parser.error(f"argument --dataset: {error}")
    try:
        check_settings(config)
    except ValueError as error:
        parser.error(f"argument --set: {error}")
    out = args.out or default_out(name, args, config)
    try:
        return _run(name, args, parser, config, out)
    except RunError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    except KeyboardInterrupt:
        return _interrupted(name, argv, args, out)


def _check_flags(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("argument --device: cuda was requested but torch.cuda.is_available() is False")
    if args.layout is not None and args.data is None:
        parser.error("argument --layout: only meaningful with --data DIR")
    if args.data is not None and not args.data.is_dir():
        parser.error(f"argument --data: {args.data} is not a directory")
    if args.resume and args.out is None:
        parser.error("argument --resume: needs --out DIR (the run to continue)")
    if args.resume and args.compare:
        parser.error("argument --resume: not supported with --compare (rerun the missing arm instead)")
    if args.resume and args.overwrite:
        parser.error("argument --overwrite: not allowed with --resume (one continues the run, the other deletes it)")
    if args.out is not None:
        for path in (args.out, *args.out.parents):
            if path.exists():
                if not path.is_dir():
                    parser.error(f"argument --out: {path} is a file, not a folder")
                break
    if args.init_from is not None:
        if not args.init_from.is_file():
            parser.error(f"argument --init-from: {args.init_from} is not a file")
        try:
            read_checkpoint(args.init_from, "--init-from")
        except CheckpointError as error:
            parser.error(f"argument {error}")


def check_settings(config: dict[str, Any]) -> None:
    """Check the settings read only late in a run (sampling, evaluation preset, localization) before it starts.

    Args:
        config: the resolved config.

    Raises:
        ValueError: naming the setting, its allowed values and what it got.
    """
    from ftcl_plugin.data.sampling import SAMPLINGS
    from ftcl_plugin.evaluation import PRESETS
    from ftcl_plugin.localization import LocalizationConfig

    data = config.get("data", {})
    for key in ("train_sampling", "test_sampling"):
        if key in data and data[key] not in SAMPLINGS:
            raise ValueError(f"data.{key} must be one of {', '.join(SAMPLINGS)}, but got {data[key]!r}.")
    if data.get("sampler", "random") not in BATCH_SAMPLERS:
        raise ValueError(f"data.sampler must be one of {', '.join(BATCH_SAMPLERS)}, but got {data['sampler']!r}.")
    preset = config.get("evaluation", {}).get("preset", "thumos14")
    if preset not in PRESETS:
        raise ValueError(f"evaluation.preset must be one of {', '.join(PRESETS)}, but got {preset!r}.")
    try:
        LocalizationConfig(**config.get("localization", {}))
    except (ValueError, TypeError) as error:
        raise ValueError(f"the [localization] settings are not valid: {error}") from None


def _run(name: str, args: argparse.Namespace, parser: argparse.ArgumentParser, config: dict[str, Any],
         out: Path) -> int:
    started = time.perf_counter()
    ctx = prepare(name, config, data=args.data, layout=args.layout, device=args.device, ddp_gather=args.ddp_gather)
    ftcl = bool(config["ftcl"].get("enabled", True))
    if ftcl or args.compare:
        try:
            # FTCL checks its own options (weights, variant, ...): a bad [ftcl] setting stops here, by name.
            make_contrastive(ctx, 8)
        except (ValueError, TypeError) as error:
            parser.error(f"argument --set: the [ftcl] settings are not valid: {error}")
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


def _write_compare(ctx: Any, out: Path, report: dict[str, Any]) -> None:
    config = ctx.config
    header, rows = summary_rows(report["rows"])
    diff = report["difference"]
    rows.append(["difference (with - without)", *(f"{100.0 * diff[c]:+.1f}" for c in header[1:])])
    text = (f"{data_note(ctx)}\nPaired protocol: both arms fine-tuned from {report['init_from']} for "
            f"{report['results']['ftcl'].steps} steps.\n\n" + markdown_table(header, rows))
    write_text(out / "compare.md", text + "\n")
    write_json(out / "compare.json",
               {"rows": [{"name": n, "summary": s} for n, s in report["rows"]], "difference": diff,
                "init_from": report["init_from"], "data": config["meta"]["data"],
                "seed": config["train"].get("seed", 0), "machine": machine_description()})
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
