"""``ftcl-data check``: find what would break a training run, before it starts, and summarise the dataset."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .._checks import check_choice, check_number
from . import _io
from .datasets import LAYOUTS, Layout, _read_wtalc, _wtalc_ground_truth, _wtalc_subset

MAX_LISTED = 10  # problems of one kind listed by name; the rest are counted


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    array = np.asarray(values, dtype=np.float64)
    return {"n": int(array.size), "mean": round(float(array.mean()), 4), "median": round(float(np.median(array)), 4),
            "min": round(float(array.min()), 4), "max": round(float(array.max()), 4)}


class _Report:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self._counts: dict[str, int] = {}

    def add(self, kind: str, message: str, *, error: bool = True) -> None:
        count = self._counts.get(kind, 0) + 1
        self._counts[kind] = count
        target = self.errors if error else self.warnings
        if count <= MAX_LISTED:
            target.append(message)
        elif count == MAX_LISTED + 1:
            target.append(f"... more problems of the kind '{kind}' (counted in 'problem_counts').")

    @property
    def counts(self) -> dict[str, int]:
        return dict(self._counts)


def check_dataset(root: str | os.PathLike, *, layout: Layout = "acmnet", dataset_name: str = "Thumos14reduced",
                  fps: float = 25.0, frames_per_snippet: int = 16, tolerance: float = 0.05) -> dict[str, Any]:
    """Check a dataset directory and report problems and statistics instead of raising.

    Reported as errors: a missing or unreadable gt.json or split file, every entry of the gt.json that breaks its
    layout (each one, not only the first), split videos absent from the ground truth, a video listed twice in a
    split, missing, unreadable or wrongly shaped feature files (including a FIFO, device or directory named like a
    feature file, which is reported without being opened for a blocking read, and a pickled object array, which
    is never unpickled), dtypes that are not floating point, NaN/inf, feature dims that differ between videos,
    RGB/flow length mismatches (CoLA), training videos without annotations, empty splits. Reported as warnings: snippet counts that disagree with ``duration * fps / frames_per_snippet``
    by more than ``tolerance`` (relative, and at least 2 snippets), segments outside [0, duration], and
    ground-truth videos in no split.

    Args:
        root: the dataset directory.
        layout: ``"acmnet"``, ``"cola"`` or ``"wtalc"``.
        dataset_name: W-TALC file prefix.
        fps: frame rate of the feature extraction (25 for the I3D features of every baseline).
        frames_per_snippet: frames per snippet (16).
        tolerance: relative tolerance of the time-base check.

    Returns:
        ``{"root", "layout", "ok", "errors", "warnings", "problem_counts", "splits", "statistics"}``: ``ok`` is
        True when there are no errors; ``splits`` holds per split the video count, feature dim, subset and
        snippet counts; ``statistics`` the ground truth's instances per video, durations and coverage.

    Raises:
        ValueError: for a bad ``layout``, ``fps``, ``frames_per_snippet`` or ``tolerance`` (never for the data).

    Example:
        >>> import tempfile
        >>> from ftcl_plugin.data.synthetic import generate
        >>> root = generate(tempfile.mkdtemp(), num_train=3, num_test=2, feature_dim=8, max_length=30)
        >>> report = check_dataset(root)
        >>> report["ok"], report["splits"]["train"]["videos"]
        (True, 3)
    """
    check_choice(layout, "layout", LAYOUTS)
    check_number(fps, "fps", minimum=0, strict_minimum=True)
    check_number(frames_per_snippet, "frames_per_snippet", minimum=1, integer=True)
    check_number(tolerance, "tolerance", minimum=0)
    root = Path(root)
    report = _Report()
    result: dict[str, Any] = {"root": str(root), "layout": layout, "splits": {}, "statistics": {}}

    def finish() -> dict[str, Any]:
        result.update(ok=not report.errors, errors=report.errors, warnings=report.warnings,
                      problem_counts=report.counts)
        return result

    if not root.is_dir():
        report.add("root", f"Dataset root {root} is not a directory.")
        return finish()
    try:
        if layout == "wtalc":
            arrays = _read_wtalc(root, dataset_name)
            source = "the W-TALC annotations"
            ground_truth = _wtalc_ground_truth(arrays, validate=False)
            by_video = {v: i for i, v in enumerate(arrays["videoname"])}
            subsets = set(arrays["subset"])
            splits = {split: [v for v, s in zip(arrays["videoname"], arrays["subset"])
                              if s == _wtalc_subset(split, subsets)] for split in _io.SPLITS}
        else:
            source = str(root / "gt.json")
            ground_truth = _io.read_ground_truth_json(root / "gt.json")
            splits = {}
            for split in _io.SPLITS:
                try:
                    splits[split] = _io.read_split(root / f"split_{split}.txt")
                except ValueError as error:
                    report.add("split file", str(error))
    except ValueError as error:
        report.add("ground truth", str(error))
        return finish()
    # Every gt.json problem is reported; the videos they concern are left out of the checks below.
    invalid: set[str] = set()
    for video, message in _io.ground_truth_problems(ground_truth, source):
        report.add("ground truth", message)
        if video is None:
            return finish()
        invalid.add(video)
    database = {v: e for v, e in ground_truth["database"].items() if v not in invalid}
    ground_truth = {**ground_truth, "database": database}
    seconds_per_snippet = frames_per_snippet / fps

    def reader(split: str, video: str) -> Callable[[], np.ndarray]:
        if layout == "acmnet":
            return lambda: _io.load_features(root / split / f"{video}.npy")
        if layout == "cola":
            def cola() -> np.ndarray:
                base = root / "features" / split
                rgb = _io.load_features(base / "rgb" / f"{video}.npy")
                flow = _io.load_features(base / "flow" / f"{video}.npy")
                if rgb.shape[0] != flow.shape[0]:
                    raise ValueError(f"Video {video!r} has {rgb.shape[0]} RGB snippets but {flow.shape[0]} flow "
                                     f"snippets under {base}.")
                return np.concatenate([rgb, flow], axis=1)
            return cola
        entry = arrays["features"][by_video[video]]
        return lambda: _io.check_feature_array(entry, f"Entry {by_video[video]} ({video!r}) of the W-TALC features")

    dims: dict[int, str] = {}
    listed: set[str] = set()
    for split, listing in splits.items():
        for video, count in Counter(listing).items():
            if count > 1:
                report.add("listed twice", f"Video {video!r} is listed {count} times in the {split} split (the "
                           f"loaders refuse a split that lists a video more than once).")
        videos = list(dict.fromkeys(listing))
        info: dict[str, Any] = {"videos": len(videos)}
        result["splits"][split] = info
        if not videos:
            report.add("empty split", f"The {split} split is empty.")
            continue
        lengths: list[float] = []
        split_subsets: set[str] = set()
        for video in videos:
            listed.add(video)
            if video in invalid:
                continue  # reported with the ground truth's problems
            if video not in database:
                report.add("not in ground truth", f"Video {video!r} of the {split} split is not in the ground truth.")
                continue
            entry = database[video]
            split_subsets.add(entry["subset"])
            if split == "train" and not entry.get("annotations"):
                report.add("training video without annotations",
                           f"Training video {video!r} has no annotations (a weakly supervised training video needs "
                           f"at least one label).")
            try:
                features = reader(split, video)()
            except ValueError as error:
                report.add("feature file", str(error))
                continue
            length, dim = features.shape
            lengths.append(length)
            dims.setdefault(dim, video)
            expected = float(entry["duration"]) / seconds_per_snippet
            if abs(length - expected) > max(2.0, tolerance * expected):
                report.add("time base", f"Video {video!r} has {length} snippets, but its duration "
                           f"{entry['duration']:.2f} s gives {expected:.1f} at {fps:g} fps and {frames_per_snippet} "
                           f"frames per snippet.", error=False)
            for annotation in entry.get("annotations", []):
                start, end = annotation["segment"]
                if start < 0 or end > float(entry["duration"]) + 1e-6 or end <= start:
                    report.add("segment", f"Video {video!r} has segment {annotation['segment']} outside "
                               f"[0, {entry['duration']}] or empty.", error=False)
        if len(split_subsets) > 1:
            report.add("mixed subsets", f"The {split} split mixes ground-truth subsets {sorted(split_subsets)}.")
        info.update(subset=sorted(split_subsets)[0] if len(split_subsets) == 1 else sorted(split_subsets),
                    snippets=_summary(lengths))
    if len(dims) > 1:
        examples = ", ".join(f"D={d} (e.g. {v!r})" for d, v in sorted(dims.items()))
        report.add("feature dim", f"Feature dims differ between videos: {examples}.")
    for split_info in result["splits"].values():
        split_info["feature_dim"] = next(iter(dims)) if len(dims) == 1 else sorted(dims)
    unlisted = [v for v in database if v not in listed]
    if unlisted:
        report.add("unlisted", f"{len(unlisted)} ground-truth video(s) are in no split (e.g. {unlisted[0]!r}); "
                   f"they are not trained on, and count as misses if the evaluator's subset includes them.",
                   error=False)
    result["statistics"] = ground_truth_statistics(ground_truth, [v for v in listed if v in database],
                                                   seconds_per_snippet)
    return finish()


def ground_truth_statistics(ground_truth: dict[str, Any], videos: list[str],
                            seconds_per_snippet: float = _io.SECONDS_PER_SNIPPET) -> dict[str, Any]:
    """Summary statistics of the annotations of ``videos``, in seconds and in snippets.

    Args:
        ground_truth: the gt.json dict.
        videos: the videos to summarise.
        seconds_per_snippet: the time base for the snippet-unit statistics.

    Returns:
        Summaries (n, mean, median, min, max) of instances per video, classes per video, instance and video
        duration in seconds and snippets, and action coverage, plus the class count.

    Example:
        >>> gt = {"database": {"a": {"subset": "test", "duration": 10.0,
        ...                          "annotations": [{"segment": [1.0, 3.0], "label": "x"}]}}}
        >>> ground_truth_statistics(gt, ["a"])["action_coverage_fraction"]["mean"]
        0.2
    """
    instances, classes, durations, video_durations, coverage = [], [], [], [], []
    labels: set[str] = set()
    for video in videos:
        entry = ground_truth["database"][video]
        annotations = entry.get("annotations", [])
        duration = float(entry["duration"])
        video_durations.append(duration)
        if not annotations:
            continue
        instances.append(len(annotations))
        classes.append(len({a["label"] for a in annotations}))
        labels.update(a["label"] for a in annotations)
        segments = sorted((float(a["segment"][0]), float(a["segment"][1])) for a in annotations)
        # Instance lengths as annotated: clipping to the duration would make an instance that starts past it (a
        # duration written for the wrong frame rate) negative.
        durations.extend(e - s for s, e in segments)
        covered, end = 0.0, 0.0
        for s, e in segments:  # union length inside the video, so overlapping segments are not counted twice
            s, e = max(s, end), min(e, duration)
            if e > s:
                covered += e - s
                end = e
        coverage.append(covered / duration)
    return {
        "num_videos": len(videos),
        "num_classes_present": len(labels),
        "instances_per_video": _summary(instances),
        "classes_per_video": _summary(classes),
        "instance_duration_s": _summary(durations),
        "instance_duration_snippets": _summary([d / seconds_per_snippet for d in durations]),
        "video_duration_s": _summary(video_durations),
        "video_duration_snippets": _summary([d / seconds_per_snippet for d in video_durations]),
        "action_coverage_fraction": _summary(coverage),
    }


def format_report(report: dict[str, Any]) -> str:
    """Human-readable text of a :func:`check_dataset` report.

    Args:
        report: the report dict.

    Returns:
        Multi-line text: verdict, errors, warnings, per-split summary, statistics.

    Example:
        >>> print(format_report({"root": "d", "layout": "acmnet", "ok": True, "errors": [], "warnings": [],
        ...                      "splits": {}, "statistics": {}}).splitlines()[0])
        d (acmnet): OK
    """
    lines = [f"{report['root']} ({report['layout']}): {'OK' if report['ok'] else 'PROBLEMS FOUND'}"]
    for title, items in (("errors", report["errors"]), ("warnings", report["warnings"])):
        if items:
            lines.append(f"{title}:")
            lines.extend(f"  - {item}" for item in items)
    if report.get("problem_counts"):
        lines.append("problem counts: " + ", ".join(f"{k}: {v}" for k, v in sorted(report["problem_counts"].items())))
    for split, info in report["splits"].items():
        snippets = info.get("snippets", {})
        detail = (f", snippets median {snippets['median']:g} (min {snippets['min']:g}, max {snippets['max']:g})"
                  if snippets.get("n") else "")
        lines.append(f"{split}: {info['videos']} videos, subset {info.get('subset')!r}, "
                     f"D={info.get('feature_dim')}{detail}")
    stats = report.get("statistics", {})
    if stats:
        lines.append(f"classes present: {stats['num_classes_present']}")
        for key in ("instances_per_video", "classes_per_video", "instance_duration_s", "instance_duration_snippets",
                    "video_duration_snippets", "action_coverage_fraction"):
            summary = stats[key]
            if summary.get("n"):
                lines.append(f"{key}: mean {summary['mean']:g}, median {summary['median']:g}, "
                             f"min {summary['min']:g}, max {summary['max']:g}")
    return "\n".join(lines)
