"""The paper's experiment tables as commands, with the paired protocol and several seeds.

    python integrations/run_experiments.py --table 5            # 4 baselines x (without, with FTCL) x 5 seeds
    python integrations/run_experiments.py --table 3            # ACM-Net ablation
    python integrations/run_experiments.py --table 4            # FTCL vs a soft-DTW contrastive loss
    python integrations/run_experiments.py --table 1            # ACM-Net +/- FTCL, THUMOS14 columns
    python integrations/run_experiments.py --table 2            # ACM-Net +/- FTCL, ActivityNet columns

Every comparison follows the paired protocol: per seed, the baseline is pre-trained once, then every arm is
fine-tuned from that checkpoint for the same steps on the same batches; the table reports each arm's mean and
standard deviation over seeds and, above all, the paired difference to the baseline arm (mean, spread, and how many
seeds agree in sign). Default data: the built-in synthetic benchmark (labelled as such); ``--data`` runs the same on
real features. Tables are written to ``results/table<N>.md`` and ``.json``.

Runs live under ``--work``, one run folder each (see ``docs/integrations.md``): a finished run with the same
settings is reused, so an interrupted table continues where it stopped when the same command is run again; a folder
holding a run with other settings is refused unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from integrations.common.cli import ArgumentParser, positive_int  # noqa: E402
from integrations.common.compare import paired_compare  # noqa: E402
from integrations.common.config import apply_overrides, load_config, set_dotted  # noqa: E402
from integrations.common.context import BUILTIN_NAMES, DISPLAY_NAMES, prepare  # noqa: E402
from integrations.common.files import RunError, write_json, write_text  # noqa: E402
from integrations.common.report import machine_description, markdown_table, paired_stats  # noqa: E402
from integrations.common.settings import check_settings  # noqa: E402
from integrations.common.training import batches_of  # noqa: E402

BASELINES = ("acmnet", "cola", "wtalc", "stpn")
# Table 5 trains ACM-Net last, so a concurrent table 3 or 4 run has usually pre-trained it by then.
TABLE5_ORDER = ("cola", "wtalc", "stpn", "acmnet")
TABLE3_COLUMNS = ("0.1", "0.3", "0.5", "0.7", "Avg")
# What FTCL did in a run (means over its fine-tuning steps; the fractions over steps with positive pairs), stored in
# each FTCL arm's per-seed record and shown beside its mAP: column title -> record key.
ACTIVITY = {"lcs_active_fraction": "LCS active", "fsd_active_fraction": "FSD active",
            "ftcl_grad_ratio": "FTCL/host grad", "ftcl_weight": "FTCL weight", "lcs_threshold": "LCS threshold"}


# The paper's exact equations (Eq. 2-8 as read in docs/losses.md): no warm-up, no gradient-share cap, raw FSD path
# sums ranked at temperature 0.2, the fixed LCS threshold 0.92, unit weights. (TOML has no null:
# max_grad_ratio = 0 stands for no cap.)
PAPER_EXACT = {"warmup_steps": 0, "max_grad_ratio": 0, "fsd_loss": {"length_normalized": False},
               "lcs_loss": {"min_match_fraction": 0.0}}
# One measure for both roles (Table 3) or a standard soft-DTW for both (Table 4); every other setting is FTCL's
# default, and a measure in the FSD role is ranked at FTCL's FSD temperature.
BOTH_FSD = {"lcs_loss": {"similarity": "fsd"}}
BOTH_LCS = {"fsd_loss": {"similarity": "lcs", "ranking_temperature": 1.0}}
SOFT_DTW = {"fsd_loss": {"similarity": "soft_dtw", "ranking_temperature": 1.0}, "lcs_loss": {"similarity": "soft_dtw"}}


def arms_of(table: int) -> dict[str, dict[str, Any] | None]:
    """Arm name -> the ``[ftcl]`` settings of that arm (``{}``: FTCL's defaults; the baseline arm has no FTCL).

    Args:
        table: 1 to 5.

    Returns:
        The arms in table order.
    """
    if table == 3:
        return {"baseline": None, "FTCL (w/o FSD)": {"fsd_weight": 0.0}, "FTCL (w/o LCS)": {"lcs_weight": 0.0},
                "FTCL (both-FSD)": BOTH_FSD, "FTCL (both-LCS)": BOTH_LCS, "ftcl": {}}
    if table == 4:
        return {"baseline": None, "soft-DTW": SOFT_DTW, "ftcl": {}}
    return {"baseline": None, "ftcl": {}, "FTCL, paper-exact": PAPER_EXACT}


def _config(name: str, args: argparse.Namespace, dataset: str, seed: int) -> dict[str, Any]:
    config = load_config(name, dataset, builtin_data=args.data is None)
    apply_overrides(config, args.overrides)
    set_dotted(config, ["train", "seed"], seed)
    if args.pretrain_epochs is not None:
        set_dotted(config, ["compare", "pretrain_epochs"], args.pretrain_epochs)
    if args.finetune_epochs is not None:
        set_dotted(config, ["compare", "finetune_epochs"], args.finetune_epochs)
    if args.iterations is not None:
        set_dotted(config, ["train", "iterations"], args.iterations)
    config.setdefault("meta", {}).update(
        {"baseline": name, "dataset": dataset, "device": args.device,
         "data": str(args.data) if args.data is not None else f"builtin:{BUILTIN_NAMES[dataset]}",
         "layout": args.layout or "acmnet"})
    return config


def run_table(args: argparse.Namespace) -> dict[str, Any]:
    """Run every (baseline, seed, arm) of the table and collect the summaries.

    Args:
        args: the parsed flags.

    Returns:
        ``{"runs": {baseline: {arm: [summary per seed]}}, "labels": {arm: row name}, "meta": {...}}``.
    """
    dataset = "activitynet" if args.table == 2 else args.dataset
    baselines = sorted(args.baselines, key=TABLE5_ORDER.index) if args.table == 5 else ["acmnet"]
    runs: dict[str, dict[str, list[dict[str, float]]]] = {}
    labels: dict[str, dict[str, str]] = {}
    meta: dict[str, Any] = {}
    started = time.perf_counter()
    run_seconds = 0.0  # the runs' own times, reused runs included: what the table cost to compute
    for name in baselines:
        runs[name] = {}
        for seed in args.seeds:
            config = _config(name, args, dataset, seed)
            ctx = prepare(name, config, data=args.data, layout=args.layout, device=args.device)
            if args.finetune_steps is not None:
                per_epoch = len(batches_of(ctx, ctx.train_split(0).labels, 0))
                set_dotted(config, ["compare", "finetune_epochs"], -(-args.finetune_steps // per_epoch))
            arms = arms_of(args.table)
            # Table 1 is Table 5's ACM-Net rows with the paper's full columns: the same arms, so the same runs.
            out = args.work / f"table{5 if args.table == 1 else args.table}" / name / f"seed{seed}"
            print(f"[table {args.table}] {name} seed {seed} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
            # Pre-training is shared between tables (reused only when the resolved config is identical).
            pretrain = args.work / "pretrain" / dataset / name / f"seed{seed}"
            report = paired_compare(ctx, out, arms=arms, plot=False, pretrain_dir=pretrain, reuse=True,
                                    overwrite=args.overwrite)
            run_seconds += sum(result.seconds for result in report["results"].values())
            run_seconds += _seconds_of(Path(report["init_from"]).parent.parent)
            for arm, result in report["results"].items():
                record = dict(result.last["summary"]) | {"seed": seed, "steps": result.steps}
                if arm != "baseline":
                    # A term switched off by a zero weight sends no gradient: its activity is recorded as 0 and
                    # listed as switched off (the Markdown shows "-").
                    off = [key for key in ("lcs_active_fraction", "fsd_active_fraction", "lcs_threshold")
                           if key not in result.activity]
                    record.update({key: result.activity.get(key, 0.0) for key in ACTIVITY})
                    record["switched_off"] = off
                runs[name].setdefault(arm, []).append(record)
                labels.setdefault(name, {})[arm] = result.label
            meta[name] = {
                "train_videos": len(ctx.train_split(0)), "test_videos": len(ctx.test),
                "feature_dim": ctx.feature_dim, "train_segments": config["data"].get("train_segments"),
                "pretrain_epochs": config["compare"].get("pretrain_epochs"),
                "finetune_epochs": config["compare"].get("finetune_epochs"),
                "finetune_steps": report["results"]["ftcl"].steps,
                "data": config["meta"]["data"], "data_root": config["meta"].get("data_root"),
            }
    return {"runs": runs, "labels": labels, "meta": meta, "seconds": time.perf_counter() - started,
            "run_seconds": run_seconds}


def _seconds_of(run: Path) -> float:
    """The training and evaluation time a finished run folder recorded (0 when it recorded none)."""
    try:
        return float(json.loads((run / "table.json").read_text())["seconds"])
    except (OSError, ValueError, KeyError):
        return 0.0


def format_table(args: argparse.Namespace, collected: dict[str, Any]) -> str:
    """Markdown: per arm mean +/- sd over seeds, and per non-baseline arm the paired difference to the baseline.

    Args:
        args: the parsed flags.
        collected: :func:`run_table`'s output.

    Returns:
        The Markdown text (header note, tables, legend).
    """
    runs, labels, meta = collected["runs"], collected["labels"], collected["meta"]
    first = next(iter(runs.values()))
    columns = [key for key in first["baseline"][0] if key not in ("seed", "steps", "switched_off", *ACTIVITY)]
    if args.table in (3, 4, 5) and set(TABLE3_COLUMNS[:-1]) <= set(columns):
        # The paper's compact layout: four thresholds and the overall average (the last "Avg" column).
        averages = [c for c in columns if c.startswith("Avg")]
        columns = [*TABLE3_COLUMNS[:-1], *averages[-1:]]
    seeds = args.seeds
    raw_rows, diff_rows = [], []
    for name in sorted(runs, key=BASELINES.index):
        arms = runs[name]
        for arm, summaries in arms.items():
            cells = []
            for column in columns:
                values = [100 * s[column] for s in summaries]
                stats = paired_stats(values)
                cells.append(f"{stats['mean']:.1f} ± {stats['std']:.1f}")
            for key in ACTIVITY:
                values = [s[key] for s in summaries if key in s and key not in s.get("switched_off", ())]
                cells.append(f"{sum(values) / len(values):.3g}" if values else "-")
            raw_rows.append([labels[name][arm], *cells])
            if arm == "baseline":
                continue
            cells = []
            for column in columns:
                diffs = [100 * (s[column] - b[column]) for s, b in zip(summaries, arms["baseline"])]
                stats = paired_stats(diffs)
                cells.append(f"{stats['mean']:+.2f} ± {stats['std']:.2f} ({int(stats['positive'])}+/"
                             f"{int(stats['negative'])}-)")
            diff_rows.append([f"{labels[name][arm]} − {DISPLAY_NAMES.get(name, name)}", *cells])
    any_meta = next(iter(meta.values()))
    synthetic = any_meta["data"].startswith("builtin:")
    roots = sorted({str(m.get("data_root")) for m in meta.values()})
    sizes = "; ".join(
        f"{DISPLAY_NAMES.get(n, n)}: {m['train_videos']} train / {m['test_videos']} test videos, D={m['feature_dim']}, "
        f"T={m['train_segments']}, pre-train {m['pretrain_epochs']} epochs, fine-tune {m['finetune_epochs']} epochs "
        f"({m['finetune_steps']} steps)" for n, m in meta.items())
    titles = {1: "ACM-Net and ACM-Net + FTCL (THUMOS14 columns)", 2: "ACM-Net and ACM-Net + FTCL (ActivityNet columns)",
              3: "Ablation of FTCL on ACM-Net", 4: "FTCL against a soft-DTW contrastive loss on ACM-Net",
              5: "FTCL on four baselines"}
    lines = [
        f"## Table {args.table}: {titles[args.table]}" + (" — SYNTHETIC DATA" if synthetic else ""),
        "",
        f"Data: {any_meta['data']}" + (" (built-in synthetic benchmark; synthetic mAP is not THUMOS14 or ActivityNet mAP)"
                                      if synthetic else "") + f", read from {', '.join(roots)}. Sizes: {sizes}.",
        f"Seeds: {', '.join(map(str, seeds))} (n = {len(seeds)}). Machine: {machine_description()}. "
        f"Compute: {collected['run_seconds'] / 60:.0f} min of training and evaluation summed over every run "
        "(pre-trainings shared between tables counted in each; runs in parallel overlap in wall time); this "
        f"invocation took {collected['seconds'] / 60:.1f} min (finished runs are reused).",
        "Protocol: per seed the baseline is pre-trained once; every arm is fine-tuned from that checkpoint for the "
        "same steps on the same batches. Last-epoch numbers (no best-on-test selection). mAP in %.",
        "",
        "Mean ± sample standard deviation over seeds:",
        "",
        markdown_table(["method", *columns, *ACTIVITY.values()], raw_rows),
        "",
        "FTCL's activity, means over each run's fine-tuning steps, then over seeds: LCS / FSD active = fraction of "
        "positive pairs the term sent gradient for (LCS: a match on the LCS path; FSD: a ranking term with slope "
        ">= 0.01), over steps with positive pairs; FTCL/host grad = norm of FTCL's weighted gradient on the "
        "embedding over the host loss's; FTCL weight = FTCL's own schedule x gradient-share cap; LCS threshold = "
        "the LCS match threshold used.",
        "",
        "Paired difference to the baseline arm (same seed, same data, same start): mean ± sd (seeds with a positive "
        "/ negative difference):",
        "",
        markdown_table(["difference", *columns], diff_rows),
    ]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser.

    Returns:
        The parser.
    """
    parser = ArgumentParser(prog="integrations/run_experiments.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", type=int, choices=[1, 2, 3, 4, 5], required=True)
    parser.add_argument("--seeds", type=_seeds, default=list(range(5)),
                        help="comma-separated seeds or a count N (= 0..N-1); default 5 seeds")
    parser.add_argument("--baselines", type=_baselines, default=list(BASELINES),
                        help="comma-separated subset of acmnet,cola,wtalc,stpn (table 5)")
    parser.add_argument("--data", type=Path, default=None, metavar="DIR", help="real features (default: built-in)")
    parser.add_argument("--layout", choices=["acmnet", "cola", "wtalc"], default=None)
    parser.add_argument("--dataset", choices=["thumos14", "activitynet"], default="thumos14")
    parser.add_argument("--pretrain-epochs", type=positive_int, default=None)
    parser.add_argument("--finetune-epochs", type=positive_int, default=None)
    parser.add_argument("--finetune-steps", type=positive_int, default=None,
                        help="fine-tune each baseline for at least this many steps (sets its fine-tuning epochs from "
                             "its own batches per epoch; overrides --finetune-epochs)")
    parser.add_argument("--iterations", type=positive_int, default=None, help="cap on steps per training run")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--work", type=Path, default=Path("runs/experiments"), help="folder for the runs")
    parser.add_argument("--results", type=Path, default=Path(__file__).resolve().parents[1] / "results",
                        help="folder for the tables")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace runs under --work whose settings differ (default: refuse)")
    return parser


def _seeds(text: str) -> list[int]:
    try:
        if "," in text:
            return [int(s) for s in text.split(",")]
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count or comma-separated seeds, got {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected at least one seed, got {text!r}")
    return list(range(count))


def _baselines(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in BASELINES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown baseline(s) {unknown}; choose from {', '.join(BASELINES)}")
    return names


def main(argv: list[str] | None = None) -> int:
    """Run one table and write it under ``--results``.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    dataset = "activitynet" if args.table == 2 else args.dataset
    for name in args.baselines if args.table == 5 else ["acmnet"]:
        try:
            config = load_config(name, dataset, builtin_data=args.data is None)
            apply_overrides(config, args.overrides)
            check_settings(config)
        except ValueError as error:
            parser.error(f"argument --set: {error}")
    if args.data is not None and not args.data.is_dir():
        parser.error(f"argument --data: {args.data} is not a directory")
    for flag, folder in (("--work", args.work), ("--results", args.results)):
        for path in (folder, *folder.parents):
            if path.exists():
                if not path.is_dir():
                    parser.error(f"argument {flag}: {path} is a file, not a folder")
                break
    try:
        collected = run_table(args)
    except RunError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    except KeyboardInterrupt:
        print(f"\ninterrupted. Finished runs under {args.work} are kept: run the same command again to continue "
              "(they are reused).", file=sys.stderr)
        return 130
    text = format_table(args, collected)
    args.results.mkdir(parents=True, exist_ok=True)
    stem = args.results / f"table{args.table}"
    write_text(stem.with_suffix(".md"), text)
    write_json(stem.with_suffix(".json"),
               {"table": args.table, "seeds": args.seeds, "runs": collected["runs"], "labels": collected["labels"],
                "meta": collected["meta"], "seconds": collected["seconds"], "run_seconds": collected["run_seconds"],
                "machine": machine_description()})
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
