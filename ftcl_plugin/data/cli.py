"""The ``ftcl-data`` command: ``synth`` (generate a synthetic dataset), ``convert`` (between layouts), ``check``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .check import check_dataset, format_report
from .datasets import LAYOUTS
from .layouts import DEFAULT_WTALC_NAME, convert
from .synthetic import DIFFICULTIES, PRESETS, SIZES, generate


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ftcl-data",
        description="Datasets for ftcl-plugin: generate the synthetic benchmark, convert between feature layouts, "
                    "check a dataset before training.")
    commands = parser.add_subparsers(dest="command", required=True)

    synth = commands.add_parser("synth", help="generate a synthetic WSAL dataset (synthetic mAP is not THUMOS14 mAP)")
    synth.add_argument("--preset", choices=PRESETS, default="thumos14-like")
    synth.add_argument("--size", choices=SIZES, default="small")
    synth.add_argument("--difficulty", choices=DIFFICULTIES, default="standard")
    synth.add_argument("--layout", choices=LAYOUTS, default="acmnet")
    synth.add_argument("--out", type=Path, required=True, help="output directory (must not hold a dataset)")
    synth.add_argument("--video-seed", type=int, default=0, help="seed of the video draw (classes stay fixed)")
    synth.add_argument("--gt-source", default=None,
                       help="plant synthetic features on the videos and segments of this real gt.json, or of the "
                            "shipped THUMOS14 ground truth and splits: thumos14")
    synth.add_argument("--dataset-name", default=None, help="W-TALC file prefix (default by preset)")
    synth.add_argument("--num-train", type=int, default=None)
    synth.add_argument("--num-test", type=int, default=None)
    synth.add_argument("--feature-dim", type=int, default=None)

    conv = commands.add_parser("convert", help="rewrite a dataset in another layout")
    conv.add_argument("source", type=Path)
    conv.add_argument("destination", type=Path)
    conv.add_argument("--from", dest="source_layout", choices=LAYOUTS, required=True)
    conv.add_argument("--to", dest="destination_layout", choices=LAYOUTS, required=True)
    conv.add_argument("--dataset-name", default=DEFAULT_WTALC_NAME, help="W-TALC file prefix of the source")
    conv.add_argument("--out-dataset-name", default=None, help="W-TALC file prefix of the output")
    conv.add_argument("--overwrite", action="store_true",
                      help="replace the content of a non-empty DESTINATION (refused without this flag)")

    chk = commands.add_parser("check", help="report missing/corrupt files, mismatches and statistics")
    chk.add_argument("root", type=Path)
    chk.add_argument("--layout", choices=LAYOUTS, default=None,
                     help="default: detected from file names (features/ -> cola; split_*.txt, train/, test/ -> "
                          "acmnet; <name>-I3D-JOINTFeatures.npy with <name>-Annotations/ -> wtalc); files of more "
                          "than one layout are refused")
    chk.add_argument("--dataset-name", default=None, help="W-TALC file prefix (default: detected, else "
                     f"{DEFAULT_WTALC_NAME})")
    chk.add_argument("--fps", type=float, default=25.0)
    chk.add_argument("--frames-per-snippet", type=int, default=16)
    chk.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def _wtalc_names(root: Path) -> list[str]:
    # A W-TALC dataset is the pair <name>-I3D-JOINTFeatures.npy + <name>-Annotations/; a lone features file is not.
    suffix = "-I3D-JOINTFeatures.npy"
    return sorted(path.name[: -len(suffix)] for path in root.glob(f"*{suffix}")
                  if (root / f"{path.name[: -len(suffix)]}-Annotations").is_dir())


def detect_layout(root: Path, dataset_name: str | None = None) -> tuple[str, str | None]:
    """Tell a dataset's layout from its file names alone (nothing is opened), so ``ftcl-data check DIR`` needs no
    flag.

    Candidates: CoLA when ``features/`` exists; ACM-Net when ``split_*.txt``, ``train/`` or ``test/`` exist (and
    no ``features/``); W-TALC for each ``<name>-I3D-JOINTFeatures.npy`` that has its ``<name>-Annotations/``
    folder beside it (only ``dataset_name`` when given). One candidate is the answer; none means ACM-Net (whose
    check then names the missing files); two or more are refused, so a stray file never picks the layout.

    Args:
        root: the dataset root.
        dataset_name: the W-TALC file prefix, if known.

    Returns:
        ``(layout, dataset_name)``; the name is None except for W-TALC.

    Raises:
        ValueError: when the files fit more than one layout (or several W-TALC prefixes), listing the candidates.

    Example:
        >>> import tempfile
        >>> detect_layout(Path(tempfile.mkdtemp()))
        ('acmnet', None)
    """
    candidates: list[tuple[str, str | None, str]] = []
    if (root / "features").is_dir():
        candidates.append(("cola", None, "cola (features/)"))
    else:
        found = [name for name in ("split_train.txt", "split_test.txt", "train", "test") if (root / name).exists()]
        if found:
            candidates.append(("acmnet", None, f"acmnet ({', '.join(found)})"))
    names = _wtalc_names(root)
    for name in names if dataset_name is None else [n for n in names if n == dataset_name]:
        candidates.append(("wtalc", name, f"wtalc ({name}-I3D-JOINTFeatures.npy, {name}-Annotations/)"))
    if len(candidates) > 1:
        listed = "; ".join(description for _, _, description in candidates)
        raise ValueError(f"{root} holds files of more than one dataset layout: {listed}. Pass --layout (and "
                         f"--dataset-name for W-TALC) to say which one to check.")
    if not candidates:
        return "acmnet", None
    layout, name, _ = candidates[0]
    return layout, name


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ftcl-data``; return the exit status (0 success, 1 problems found or bad input, 2 usage error).

    Args:
        argv: the arguments after the program name; None reads ``sys.argv``.

    Returns:
        The exit status.

    Example:
        >>> import tempfile
        >>> out = tempfile.mkdtemp() + "/d"
        >>> main(["synth", "--out", out, "--num-train", "3", "--num-test", "2", "--feature-dim", "8"])  # doctest: +ELLIPSIS
        wrote ...
        0
    """
    args = _parser().parse_args(argv)
    try:
        if args.command == "synth":
            overrides = {k: v for k, v in (("num_train", args.num_train), ("num_test", args.num_test),
                                           ("feature_dim", args.feature_dim), ("video_seed", args.video_seed))
                         if v is not None}
            root = generate(args.out, preset=args.preset, size=args.size, difficulty=args.difficulty,
                            layout=args.layout, gt_source=args.gt_source, dataset_name=args.dataset_name,
                            **overrides)
            print(f"wrote {args.preset} ({args.size}, {args.difficulty}) in the {args.layout} layout to {root}")
            return 0
        if args.command == "convert":
            root = convert(args.source, args.destination, source_layout=args.source_layout,
                           destination_layout=args.destination_layout, source_dataset_name=args.dataset_name,
                           destination_dataset_name=args.out_dataset_name, overwrite=args.overwrite)
            print(f"wrote {args.source} ({args.source_layout}) as {args.destination_layout} to {root}")
            return 0
        layout, dataset_name = args.layout, args.dataset_name
        if layout is None:
            layout, dataset_name = detect_layout(args.root, args.dataset_name)
        elif layout == "wtalc" and dataset_name is None:
            names = _wtalc_names(args.root)
            if len(names) > 1:
                raise ValueError(f"{args.root} holds W-TALC files of several prefixes ({', '.join(names)}); pass "
                                 f"--dataset-name.")
            dataset_name = names[0] if names else None
        dataset_name = dataset_name or DEFAULT_WTALC_NAME
        report = check_dataset(args.root, layout=layout, dataset_name=dataset_name, fps=args.fps,
                               frames_per_snippet=args.frames_per_snippet)
        print(json.dumps(report, indent=1) if args.json else format_report(report))
        return 0 if report["ok"] else 1
    except (ValueError, TypeError, OSError) as error:
        print(f"ftcl-data {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
