"""``ftcl-eval``: detection mAP of an ActivityNet results file, printed as a Markdown table."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from . import ground_truth as shipped
from .detection import PRESETS, detection_map, format_table

EXIT_OK, EXIT_BAD_INPUT, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _thresholds(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ftcl-eval",
        description="Detection mAP per t-IoU threshold, identical to ActivityNet's ANETdetection evaluator.",
    )
    parser.add_argument("--gt", required=True,
                        help=f"ground truth: a shipped name ({', '.join(shipped.NAMES)}) or a file in the gt.json "
                             "layout")
    parser.add_argument("--pred", required=True, help="predictions in the ActivityNet results-JSON layout")
    parser.add_argument("--preset", default=None, choices=sorted(PRESETS),
                        help="thresholds and summary columns (default: activitynet for --gt activitynet, "
                             "else thumos14)")
    parser.add_argument("--subset", default=None, help="ground-truth subset (default: the preset's)")
    parser.add_argument("--tiou-thresholds", type=_thresholds, default=None,
                        help="custom comma-separated thresholds in (0, 1], replacing the preset's")
    parser.add_argument("--unknown-videos", default="false_positive", choices=["false_positive", "ignore", "error"],
                        help="predictions for videos outside the subset (default: false_positive, as ActivityNet)")
    parser.add_argument("--ambiguous", default=None,
                        help="THUMOS14 Ambiguous intervals file ('video start end' lines); drops overlapping "
                             "predictions (off by default)")
    parser.add_argument("--name", default="", help="row label of the printed table")
    parser.add_argument("--output-json", default=None,
                        help="write {tiou_thresholds, mAP, average_mAP, summary} here (mAP as fractions)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ftcl-eval`` command line; return its exit status.

    Args:
        argv: arguments without the program name (``None``: ``sys.argv[1:]``).

    Returns:
        0 on success, 1 on bad input (the message names the file, video or field), 2 on a usage error.

    Example:
        >>> main(["--help"])  # doctest: +ELLIPSIS
        usage: ftcl-eval ...
        0
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # argparse reports usage errors itself and exits
        return EXIT_OK if stop.code == 0 else EXIT_USAGE
    try:
        result = detection_map(args.gt, args.pred, preset=args.preset, subset=args.subset,
                               tiou_thresholds=args.tiou_thresholds, unknown_videos=args.unknown_videos,
                               ambiguous=args.ambiguous)
    except (ValueError, TypeError) as error:
        sys.stderr.write(f"ftcl-eval: error: {error}\n")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        sys.stderr.write("ftcl-eval: interrupted; nothing was written.\n")
        return EXIT_INTERRUPTED
    sys.stdout.write(format_table(result, name=args.name) + "\n")
    if args.output_json:
        layout = {key: result[key] for key in ("tiou_thresholds", "mAP", "average_mAP", "summary")}
        try:
            _write_atomically(Path(args.output_json), json.dumps(layout, indent=2) + "\n")
        except OSError as error:
            sys.stderr.write(f"ftcl-eval: error: cannot write {args.output_json!r} ({error.strerror or error})\n")
            return EXIT_BAD_INPUT
    return EXIT_OK


def _write_atomically(path: Path, text: str) -> None:
    # a kill mid-write leaves the previous file (or none), never a truncated one
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)  # mkstemp creates the file private; give it the mode a plain open() would
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
