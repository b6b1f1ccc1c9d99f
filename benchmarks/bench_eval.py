"""Detection-mAP speed: the vectorised evaluator against a plain per-prediction loop, in one run.

About 100k predictions against the THUMOS14 test ground truth, shaped like a localizer's proposal sweep:
jittered copies of ground-truth segments, bursts of near-duplicates (the same run found at neighbouring
thresholds), wrong-class copies and random background segments, with random scores. Prints a Markdown table and
checks that both evaluators agree to 1e-6 at every threshold.

    python benchmarks/bench_eval.py                 # ../shared/data/thumos14/gt.json beside the checkout
    python benchmarks/bench_eval.py --gt PATH --num-predictions 100000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ftcl_plugin.evaluation import PRESETS, detection_map  # noqa: E402

DEFAULT_GT = Path(__file__).resolve().parents[2] / "shared" / "data" / "thumos14" / "gt.json"


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
    """Straightforward per-prediction evaluator (the description, one Python step per prediction)."""
    by_class: dict[str, dict[str, list[tuple[int, float, float]]]] = defaultdict(lambda: defaultdict(list))
    count = defaultdict(int)
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
        rows = rows.iloc[np.argsort(-rows["score"].to_numpy(), kind="stable")]
        for k, threshold in enumerate(thresholds):
            taken = set()
            hits = []
            for video, start, end in zip(rows["video"], rows["t_start"], rows["t_end"]):
                best, best_iou = None, -1.0
                for index, g_start, g_end in videos.get(video, ()):
                    if index in taken:
                        continue
                    inter = max(0.0, min(end, g_end) - max(start, g_start))
                    union = (g_end - g_start) + (end - start) - inter
                    iou = inter / union if union > 0 else 0.0
                    if iou >= threshold and iou > best_iou:
                        best, best_iou = index, iou
                if best is not None:
                    taken.add(best)
                hits.append(best is not None)
            hits = np.asarray(hits, dtype=bool)
            tp, fp = np.cumsum(hits), np.cumsum(~hits)
            precision = np.r_[0.0, tp / np.maximum(tp + fp, 1), 0.0]
            recall = np.r_[0.0, tp / count[label], 1.0]
            for i in range(precision.size - 2, -1, -1):
                precision[i] = max(precision[i], precision[i + 1])
            mean_ap[k] += np.sum((recall[1:] - recall[:-1]) * precision[1:]) / len(by_class)
    return mean_ap


def best_of(repeats: int, function) -> tuple[float, object]:
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = function()
        times.append(time.perf_counter() - start)
    return min(times), value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gt", type=Path, default=DEFAULT_GT, help="THUMOS14 gt.json (default: ../shared/data)")
    parser.add_argument("--num-predictions", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-loop", action="store_true", help="time only the vectorised evaluator")
    args = parser.parse_args()
    if not args.gt.is_file():
        sys.stderr.write(f"bench_eval: ground truth not found at {args.gt}; pass --gt\n")
        return 1
    gt = json.loads(args.gt.read_text())
    frame = make_predictions(gt, args.num_predictions, args.seed)
    results = {"results": {video: [{"segment": [s, e], "label": label, "score": score}
                                   for s, e, label, score in zip(g.t_start, g.t_end, g.label, g.score)]
                           for video, g in frame.groupby("video", sort=False)}}
    thresholds = np.asarray(PRESETS["thumos14"].thresholds)
    rows = []
    seconds, vectorised = best_of(args.repeats, lambda: detection_map(gt, frame))
    rows.append(("vectorised, DataFrame input", seconds, vectorised["mAP"]))
    seconds, from_json = best_of(args.repeats, lambda: detection_map(gt, results))
    rows.append(("vectorised, results-JSON dict (incl. flattening)", seconds, from_json["mAP"]))
    agree = "not run"
    if not args.skip_loop:
        seconds, looped = best_of(1, lambda: loop_map(gt, frame, thresholds))
        rows.append(("per-prediction Python loop", seconds, list(looped)))
        difference = float(np.max(np.abs(np.asarray(vectorised["mAP"]) - looped)))
        agree = f"max |difference| = {difference:.1e} ({'equal' if difference <= 1e-6 else 'NOT EQUAL'})"
    print(f"{len(frame):,} predictions, {sum(len(e['annotations']) for e in gt['database'].values() if e['subset'] == 'test'):,}"
          f" ground-truth segments (THUMOS14 test), best of {args.repeats}; loop vs vectorised: {agree}\n")
    print("| evaluator | seconds | mAP@0.1 | mAP@0.5 | mAP@0.7 | Avg 0.1:0.7 |")
    print("|---|---|---|---|---|---|")
    for name, seconds, mean_ap in rows:
        print(f"| {name} | {seconds:.3f} | {100 * mean_ap[0]:.2f} | {100 * mean_ap[4]:.2f} | {100 * mean_ap[6]:.2f} "
              f"| {100 * np.mean(mean_ap):.2f} |")
    return 0 if agree == "not run" or "NOT" not in agree else 1


if __name__ == "__main__":
    sys.exit(main())
