"""Detection-mAP speed: the vectorised evaluator against a plain per-prediction loop, in one run.

About 100k predictions against the THUMOS14 test ground truth shipped with the package, shaped like a
localizer's proposal sweep: jittered copies of ground-truth segments, bursts of near-duplicates (the same run
found at neighbouring thresholds), wrong-class copies and random background segments, with random scores.
``--quantum`` rounds times and scores to a grid, which makes ties in score and in t-IoU common. Prints a
Markdown table (median seconds over the repeats) and checks that both evaluators agree to 1e-6 at every
threshold; the loop follows the reference evaluator's rule, ties included.

    python benchmarks/bench_eval.py                 # shipped THUMOS14 ground truth, 100k predictions
    python benchmarks/bench_eval.py --gt PATH --num-predictions 100000 --repeats 5 --quantum 0.1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ftcl_plugin.evaluation import PRESETS, detection_map, ground_truth  # noqa: E402


def make_predictions(gt: dict, count: int, seed: int) -> pd.DataFrame:
    """A proposal-sweep-like prediction set of about ``count`` rows over the gt.json "test" subset."""
    rng = np.random.default_rng(seed)
    rows = [(video, a["segment"][0], a["segment"][1], a["label"], entry["duration"])
            for video, entry in gt["database"].items() if entry["subset"] == "test" for a in entry["annotations"]]
    table = pd.DataFrame(rows, columns=["video", "start", "end", "label", "duration"])
    classes = np.array(sorted(table["label"].unique()))
    bases = count // 3 + 1  # each base proposal comes with 1 to 5 copies (3 on average)
    pick = table.iloc[rng.integers(0, len(table), bases)].reset_index(drop=True)
    length = (pick["end"] - pick["start"]).to_numpy()
    start = pick["start"].to_numpy() + rng.normal(0, 0.25, bases) * length
    end = pick["end"].to_numpy() + rng.normal(0, 0.25, bases) * length
    label = pick["label"].to_numpy(dtype=object)
    wrong = rng.random(bases) < 0.1
    label[wrong] = classes[rng.integers(0, classes.size, int(wrong.sum()))]
    background = rng.random(bases) < 0.15  # anywhere in the video
    start[background] = rng.random(int(background.sum())) * pick["duration"].to_numpy()[background]
    end[background] = start[background] + rng.exponential(5.0, int(background.sum()))
    copies = rng.integers(1, 6, bases)
    index = np.repeat(np.arange(bases), copies)[:count]
    # near-duplicates: the same run found at a neighbouring threshold moves by whole 0.032 s positions
    duplicate = np.arange(index.size) != np.searchsorted(index, index)  # every copy but the first
    t_start = start[index] + rng.integers(-3, 4, index.size) * 0.032 * duplicate
    t_end = np.maximum(end[index] + rng.integers(-3, 4, index.size) * 0.032 * duplicate, t_start)
    return pd.DataFrame({"video": pick["video"].to_numpy()[index], "t_start": t_start, "t_end": t_end,
                         "label": label[index], "score": rng.random(index.size)})


def loop_map(gt: dict, frame: pd.DataFrame, thresholds: np.ndarray) -> np.ndarray:
    """Per-prediction evaluator with the reference's rule: ``argsort()[::-1]`` on each class's scores and on each
    prediction's t-IoUs with the ground truth of its video and class (file order), one Python step at a time."""
    by_class: dict[str, dict[str, list[tuple[int, float, float]]]] = defaultdict(lambda: defaultdict(list))
    count: dict[str, int] = defaultdict(int)
    for video, entry in gt["database"].items():
        if entry["subset"] != "test":
            continue
        for annotation in entry["annotations"]:
            label = annotation["label"]
            by_class[label][video].append((count[label], *map(float, annotation["segment"])))
            count[label] += 1
    mean_ap = np.zeros(len(thresholds))
    for label, videos in by_class.items():
        rows = frame[frame["label"] == label]
        rows = rows.iloc[rows["score"].to_numpy().argsort()[::-1]]
        taken = [set() for _ in thresholds]
        hits = np.zeros((len(thresholds), len(rows)), dtype=bool)
        for i, (video, start, end) in enumerate(zip(rows["video"], rows["t_start"], rows["t_end"])):
            mine = videos.get(video, ())
            if not mine:
                continue
            index = [g[0] for g in mine]
            g_start, g_end = np.array([g[1] for g in mine]), np.array([g[2] for g in mine])
            inter = (np.minimum(end, g_end) - np.maximum(start, g_start)).clip(0)
            with np.errstate(invalid="ignore", divide="ignore"):
                tiou = inter / ((g_end - g_start) + (end - start) - inter)
            walk = tiou.argsort()[::-1]
            for k, threshold in enumerate(thresholds):
                for j in walk:
                    if tiou[j] < threshold:
                        break
                    if index[j] not in taken[k]:
                        taken[k].add(index[j])
                        hits[k, i] = True
                        break
        for k in range(len(thresholds)):
            tp, fp = np.cumsum(hits[k]), np.cumsum(~hits[k])
            precision = np.r_[0.0, tp / np.maximum(tp + fp, 1), 0.0]
            recall = np.r_[0.0, tp / count[label], 1.0]
            for i in range(precision.size - 2, -1, -1):
                precision[i] = max(precision[i], precision[i + 1])
            mean_ap[k] += np.sum((recall[1:] - recall[:-1]) * precision[1:]) / len(by_class)
    return mean_ap


def median_of(repeats: int, function) -> tuple[float, object]:
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gt", default="thumos14",
                        help="a gt.json path, or a shipped ground truth by name (default: thumos14)")
    parser.add_argument("--num-predictions", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quantum", type=float, default=0.0,
                        help="round times to this grid (seconds) and scores to 2 decimals: ties everywhere")
    parser.add_argument("--skip-loop", action="store_true", help="time only the vectorised evaluator")
    args = parser.parse_args()
    if args.gt in ground_truth.NAMES:
        gt = ground_truth.load(args.gt)
    elif Path(args.gt).is_file():
        gt = json.loads(Path(args.gt).read_text(encoding="utf-8"))
    else:
        sys.stderr.write(f"bench_eval: --gt {args.gt!r} is neither a file nor one of {', '.join(ground_truth.NAMES)}\n")
        return 1
    frame = make_predictions(gt, args.num_predictions, args.seed)
    if args.quantum > 0:
        frame["t_start"] = np.round(frame["t_start"] / args.quantum) * args.quantum
        frame["t_end"] = np.maximum(np.round(frame["t_end"] / args.quantum) * args.quantum, frame["t_start"])
        frame["score"] = frame["score"].round(2)
    # rows grouped by video, so the DataFrame and the results dict present every class's rows in the same
    # order (the order decides ties, as in the reference)
    frame = frame.iloc[np.argsort(pd.factorize(frame["video"])[0], kind="stable")].reset_index(drop=True)
    results = {"results": {video: [{"segment": [s, e], "label": label, "score": score}
                                   for s, e, label, score in zip(g.t_start, g.t_end, g.label, g.score)]
                           for video, g in frame.groupby("video", sort=False)}}
    thresholds = np.asarray(PRESETS["thumos14"].thresholds)
    rows = []
    seconds, vectorised = median_of(args.repeats, lambda: detection_map(gt, frame))
    rows.append(("vectorised, DataFrame input", seconds, vectorised["mAP"]))
    seconds, from_json = median_of(args.repeats, lambda: detection_map(gt, results))
    rows.append(("vectorised, results-JSON dict (incl. flattening)", seconds, from_json["mAP"]))
    agree = "not run"
    if not args.skip_loop:
        seconds, looped = median_of(1, lambda: loop_map(gt, frame, thresholds))
        rows.append(("per-prediction Python loop (reference rule)", seconds, list(looped)))
        difference = max(float(np.max(np.abs(np.asarray(r[2]) - looped))) for r in rows[:2])
        agree = f"max |difference| = {difference:.1e} ({'equal' if difference <= 1e-6 else 'NOT EQUAL'})"
    segments = sum(len(e["annotations"]) for e in gt["database"].values() if e["subset"] == "test")
    print(f"{len(frame):,} predictions, {segments:,} ground-truth segments (subset 'test')"
          f"{f', times on a {args.quantum} s grid' if args.quantum > 0 else ''}; median of {args.repeats}; "
          f"loop vs vectorised: {agree}\n")
    print("| evaluator | seconds | mAP@0.1 | mAP@0.5 | mAP@0.7 | Avg 0.1:0.7 |")
    print("|---|---|---|---|---|---|")
    for name, seconds, mean_ap in rows:
        print(f"| {name} | {seconds:.3f} | {100 * mean_ap[0]:.2f} | {100 * mean_ap[4]:.2f} | {100 * mean_ap[6]:.2f} "
              f"| {100 * np.mean(mean_ap):.2f} |")
    return 0 if agree == "not run" or "NOT" not in agree else 1


if __name__ == "__main__":
    sys.exit(main())
