"""The command line of every ``integrations/<name>/train.py``: its flags, and the config they resolve to.

:func:`build_parser` defines the flags; :func:`resolve_config` reads the baseline's TOML config and lays ``--set``
overrides and the flags over it, giving the dict that becomes the run's ``config.json``. Both the clean-room runner
(:mod:`integrations.common.runner`) and the ``--upstream`` mode (:mod:`integrations.common.upstream`) start here.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, NoReturn

import torch

from .config import apply_overrides, load_config, set_dotted
from .context import BUILTIN_NAMES, DISPLAY_NAMES, build_ftcl
from .files import CheckpointError, read_checkpoint
from .settings import RunSettings, check_settings

__all__ = ["ArgumentParser", "build_parser", "check_flags", "check_ftcl", "non_negative", "positive_int",
           "resolve_config"]


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
    model.add_argument("--fsd-weight", type=non_negative, default=None, help="FSD weight (default: variant's)")
    model.add_argument("--lcs-weight", type=non_negative, default=None, help="LCS weight (default: variant's)")
    model.add_argument("--variant", choices=["paper", "official"], default=None, help="FTCL defaults to follow")
    run = parser.add_argument_group("run")
    run.add_argument("--seed", type=int, default=None, help="seed of init, data order and sampling")
    run.add_argument("--epochs", type=positive_int, default=None, help="training epochs")
    run.add_argument("--iterations", type=positive_int, default=None, help="cap on training steps")
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


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1, or an ``ArgumentTypeError`` quoting the text."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative(text: str) -> float:
    """argparse type: a finite number >= 0, or an ``ArgumentTypeError`` quoting the text."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}")
    return value


def check_flags(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Refuse flags that cannot work together or name something unusable, before anything is read or written.

    Args:
        args: the parsed flags.
        parser: the parser (for error messages).

    Raises:
        SystemExit: with status 2 and an ``argument --<flag>: ...`` message.
    """
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


def resolve_config(name: str, args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Read the baseline's config and apply the command line on top of it.

    Args:
        name: the baseline's directory name.
        args: the parsed flags.
        parser: the parser (for error messages).

    Returns:
        The resolved config (checked: :func:`~integrations.common.settings.check_settings`).

    Raises:
        SystemExit: with status 2 and an ``argument --dataset:`` or ``argument --set:`` message for a missing config
            file or a bad setting.
    """
    try:
        config = load_config(name, args.dataset, builtin_data=args.data is None)
    except FileNotFoundError as error:
        parser.error(f"argument --dataset: {error}")
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
    try:
        check_settings(config)
    except ValueError as error:
        parser.error(f"argument --set: {error}")
    return config


def check_ftcl(settings: RunSettings, parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    """Build FTCL once from the ``[ftcl]`` settings, so a bad option stops the command before it trains, by name.

    Args:
        settings: the run's settings.
        parser: the parser (for error messages).
        required: check even when ``ftcl.enabled`` is false (``--compare`` trains an FTCL arm anyway).

    Raises:
        SystemExit: with status 2 and ``argument --set: the [ftcl] settings are not valid: ...``.
    """
    if not (settings.ftcl.enabled or required):
        return
    try:
        build_ftcl(settings.ftcl, 8)  # FTCL checks its own options (weights, variant, ...)
    except (ValueError, TypeError) as error:
        parser.error(f"argument --set: the [ftcl] settings are not valid: {error}")
