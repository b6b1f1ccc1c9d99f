"""Writing a generated dataset: ground truth, features in a layout, and ``synthetic.json``."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..._checks import check_choice
from .. import _io
from ..datasets import LAYOUTS, Layout
from ..layouts import write_dataset
from .config import GENERATOR_VERSION, Difficulty, Preset, Size, make_config
from .features import synthesize
from .videos import VideoLayout, _layouts_from_ground_truth, draw_layouts
from .world import World, build_world

# Shipped ground truths with train and test split files (ActivityNet1.3's shipped videos are all "validation").
_SHIPPED_WITH_SPLITS = ("thumos14",)


def _ground_truth(layouts: dict[str, list[VideoLayout]], world: World, version: str) -> dict[str, Any]:
    database: dict[str, Any] = {}
    for videos in layouts.values():
        for layout in videos:
            database[layout.name] = {
                "subset": layout.subset,
                "duration": layout.duration,
                "annotations": [
                    {"segment": [round(s * _io.SECONDS_PER_SNIPPET, 2),
                                 round(min(e * _io.SECONDS_PER_SNIPPET, layout.duration), 2)],
                     "label": world.class_names[c]}
                    for s, e, c, _ in sorted(layout.instances, key=lambda x: x[0])
                ],
            }
    return {"version": version, "taxonomy": [], "database": database}


def generate(out: str | os.PathLike, *, preset: Preset = "thumos14-like", size: Size = "small",
             difficulty: Difficulty = "standard", layout: Layout = "acmnet", gt_source: str | os.PathLike | None = None,
             dataset_name: str | None = None, **overrides: Any) -> Path:
    """Generate a synthetic dataset into ``out`` in one of the three layouts.

    Args:
        out: output directory; created, must not contain a previous dataset (``gt.json``).
        preset: ``"thumos14-like"`` or ``"activitynet-like"``.
        size: ``"small"`` or ``"paper"``.
        difficulty: ``"standard"``, ``"hard"`` or ``"order"``.
        layout: ``"acmnet"``, ``"cola"`` or ``"wtalc"``.
        gt_source: a real gt.json whose videos, durations and segments to reuse (features are synthetic); its
            ``split_{train,test}.txt`` beside it choose the splits when present, else its subsets do. The string
            ``"thumos14"`` names the THUMOS14 ground truth shipped in :mod:`ftcl_plugin.evaluation.ground_truth`
            with its shipped split files (200 training, 210 test videos).
        dataset_name: W-TALC file prefix; ``Thumos14reduced`` / ``ActivityNet1.2`` by preset, so W-TALC tools run
            unchanged.
        **overrides: any :class:`SyntheticConfig` field (``num_train``, ``feature_dim``, ``video_seed``, ...).

    Returns:
        ``out`` as a Path. Besides the layout's files it holds ``synthetic.json`` (version, configuration, class
        phase sequences).

    Raises:
        ValueError: for bad presets or parameters, or an ``out`` that already holds a dataset.

    Example:
        >>> import tempfile
        >>> root = generate(tempfile.mkdtemp(), num_train=4, num_test=2, feature_dim=16, max_length=40)
        >>> sorted(p.name for p in root.iterdir())
        ['gt.json', 'split_test.txt', 'split_train.txt', 'synthetic.json', 'test', 'train']
    """
    check_choice(layout, "layout", LAYOUTS)
    config = make_config(preset, size, difficulty, **overrides)
    if config.feature_dim < 2 or config.feature_dim % 2:
        raise ValueError(f"`feature_dim` must be even (RGB half, flow half), but got {config.feature_dim}.")
    out = Path(out)
    if (out / "gt.json").exists():
        raise ValueError(f"{out} already holds a dataset (gt.json); choose an empty directory.")
    if gt_source is not None:
        ground_truth, splits = _real_source(gt_source)
        world = build_world(config, _io.class_names_of(ground_truth))
        layouts = _layouts_from_ground_truth(ground_truth, splits, world, config)
        ground_truth = {**ground_truth, "database": {v: ground_truth["database"][v]
                                                     for videos in splits.values() for v in videos}}
    else:
        world = build_world(config)
        layouts = draw_layouts(config, world)
        ground_truth = _ground_truth(layouts, world, f"ftcl-plugin synthetic v{GENERATOR_VERSION}")
        splits = {split: [x.name for x in videos] for split, videos in layouts.items()}
    by_name = {(split, x.name): (i, x) for split, videos in layouts.items() for i, x in enumerate(videos)}

    def features(split: str, video: str) -> np.ndarray:
        i, video_layout = by_name[(split, video)]
        # Per-video stream: a video's features do not depend on how many videos precede it.
        rng = np.random.default_rng([config.video_seed, _io.SPLITS.index(split), 1, i])
        return synthesize(video_layout, world, config, rng)

    name = dataset_name or ("ActivityNet1.2" if preset == "activitynet-like" else "Thumos14reduced")
    write_dataset(out, layout, ground_truth, splits, features, dataset_name=name)
    metadata = {
        "generator_version": GENERATOR_VERSION,
        "note": "Synthetic benchmark; its mAP is not comparable to THUMOS14 or ActivityNet mAP.",
        "layout": layout,
        "wtalc_dataset_name": name if layout == "wtalc" else None,
        "gt_source": str(gt_source) if gt_source is not None else None,
        "config": dataclasses.asdict(config),
        "classes": [{"name": n, "phases": p} for n, p in zip(world.class_names, world.phases)],
    }
    _io.write_json(out / "synthetic.json", metadata)
    return out


def _real_source(gt_source: str | os.PathLike) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The ground truth and the train/test video lists of ``generate``'s ``gt_source`` (a shipped name or a path)."""
    # Imported here: the evaluation package brings pandas, which generating without a real source does not need.
    from ...evaluation import ground_truth as shipped

    if isinstance(gt_source, str) and gt_source in shipped.NAMES:
        if gt_source not in _SHIPPED_WITH_SPLITS:
            raise ValueError(f"`gt_source` {gt_source!r} is shipped without train/test split files; use one of "
                             f"{', '.join(map(repr, _SHIPPED_WITH_SPLITS))} or a gt.json path.")
        return shipped.load(gt_source), {split: shipped.split(gt_source, split) for split in _io.SPLITS}
    ground_truth = _io.load_ground_truth(gt_source)
    return ground_truth, _splits_of(Path(gt_source), ground_truth)


def _splits_of(gt_path: Path, ground_truth: dict[str, Any]) -> dict[str, list[str]]:
    database = ground_truth["database"]
    files = {split: gt_path.parent / f"split_{split}.txt" for split in _io.SPLITS}
    if all(path.is_file() for path in files.values()):
        splits = {split: [v for v in _io.read_split(path) if v in database] for split, path in files.items()}
    else:
        subsets = {entry["subset"] for entry in database.values()}
        pairs = ("training", "validation") if "training" in subsets else ("validation", "test")
        splits = {split: [v for v, e in database.items() if e["subset"] == s] for split, s in zip(_io.SPLITS, pairs)}
    for split, videos in splits.items():
        if not videos:
            raise ValueError(f"{gt_path} yields an empty {split} split; put split_train.txt and split_test.txt "
                             f"beside it or use subsets 'validation'/'test' or 'training'/'validation'.")
    return splits


def read_metadata(root: str | os.PathLike) -> dict[str, Any]:
    """The ``synthetic.json`` of a generated dataset.

    Args:
        root: the dataset directory.

    Returns:
        The parsed metadata.

    Raises:
        ValueError: when ``root`` holds no readable synthetic.json.

    Example:
        >>> import tempfile
        >>> root = generate(tempfile.mkdtemp(), num_train=2, num_test=2, feature_dim=8, max_length=30)
        >>> read_metadata(root)["generator_version"] == GENERATOR_VERSION
        True
    """
    path = Path(root) / "synthetic.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable synthetic dataset description: {error}") from None
