"""Where the actions of each video are: lengths, classes, instances and context runs, without features."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _io
from .config import SyntheticConfig
from .world import World, build_world


@dataclass
class VideoLayout:
    """Where the actions of one video are, in snippet units (continuous).

    Attributes:
        name, subset: video name and gt subset. length: L snippets. duration: seconds (L <= duration/0.64 < L+1).
        classes: the video's class ids. instances: (start, end, class, phase proportions) per instance.
        contexts: (start, end, class) per context run.
    """

    name: str
    subset: str
    length: int
    duration: float
    classes: list[int]
    instances: list[tuple[float, float, int, np.ndarray]]
    contexts: list[tuple[float, float, int]]


def _lognormal(rng: np.random.Generator, median: float, sigma: float, lo: float, hi: float) -> float:
    return float(np.clip(median * math.exp(sigma * rng.standard_normal()), lo, hi))


def _instance_lengths(rng: np.random.Generator, config: SyntheticConfig, length: int,
                      world: World, classes: list[int]) -> tuple[list[float], list[int], list[np.ndarray]]:
    """Instance lengths, classes and phase proportions filling the drawn coverage of a video of ``length``."""
    mean, kappa = config.coverage_mean, config.coverage_concentration
    coverage = float(np.clip(rng.beta(mean * kappa, (1 - mean) * kappa), config.min_coverage, config.max_coverage))
    target = coverage * length
    budget = 0.95 * length
    lengths: list[float] = []
    instance_classes: list[int] = []
    proportions: list[np.ndarray] = []
    shares: list[float] = []
    if config.instance_mode == "count":
        count = 1 if rng.random() < config.single_instance_prob else 2 + int(rng.poisson(config.extra_instances_mean))
        count = max(1, min(count, int(target // max(config.min_instance, 1.0)) or 1))
        shares = [max(float(s), config.min_instance) for s in rng.dirichlet(np.full(count, 2.0)) * target]
    while (len(lengths) < len(shares)) if shares else (sum(lengths) < target):
        i = len(lengths)
        # Every class of the video gets an instance first; the rest are drawn among the video's classes.
        cls = classes[i] if i < len(classes) else classes[int(rng.integers(len(classes)))]
        k = len(world.phases[cls])
        if config.phase_length is not None:
            parts = rng.uniform(config.phase_length[0], config.phase_length[1], size=k)
            props = parts / parts.sum()
            draw = shares[i] if shares else float(parts.sum())
        else:
            props = rng.dirichlet(np.full(k, 3.0))
            draw = shares[i] if shares else _lognormal(rng, config.instance_median, config.instance_sigma,
                                                       config.min_instance, config.max_instance)
        total = sum(lengths)
        # Stop at whichever of (without, with this instance) is closer to the target coverage: unbiased coverage.
        if lengths and not shares and total + draw - target > target - total:
            break
        if total + draw > budget:
            if lengths:
                break
            draw = budget
        lengths.append(draw)
        instance_classes.append(cls)
        proportions.append(props)
    return lengths, instance_classes, proportions


def _draw_layout(rng: np.random.Generator, config: SyntheticConfig, world: World, name: str, subset: str,
                 primary: int) -> VideoLayout:
    if config.length_law == "normal":
        draw = config.length_median * (1.0 + config.length_sigma * rng.standard_normal())
        length = int(round(float(np.clip(draw, config.min_length, config.max_length))))
    else:
        length = int(round(_lognormal(rng, config.length_median, config.length_sigma, config.min_length,
                                      config.max_length)))
    duration = round((length + rng.uniform(0.05, 0.95)) * _io.SECONDS_PER_SNIPPET, 3)
    num_classes = len(world.class_names)
    probs = np.asarray(config.classes_per_video, dtype=np.float64)
    extra = int(rng.choice(len(probs), p=probs / probs.sum()))
    others = [c for c in range(num_classes) if c != primary]
    classes = [primary] + [int(c) for c in rng.choice(others, size=min(extra, len(others)), replace=False)]
    lengths, instance_classes, proportions = _instance_lengths(rng, config, length, world, classes)
    classes = sorted(set(instance_classes), key=instance_classes.index)
    # Random order, then gaps from a flat Dirichlet over the free time: fractional starts everywhere.
    order = rng.permutation(len(lengths))
    free = max(length - sum(lengths), 0.0)
    gaps = rng.dirichlet(np.ones(len(lengths) + 1)) * free
    instances: list[tuple[float, float, int, np.ndarray]] = []
    position = 0.0
    for gap, i in zip(gaps, order):
        start = position + float(gap)
        instances.append((start, start + lengths[i], instance_classes[i], proportions[i]))
        position = start + lengths[i]
    contexts: list[tuple[float, float, int]] = []
    if config.context_prob > 0:
        bounds = [0.0] + [x for s, e, _, _ in instances for x in (s, e)] + [float(length)]
        for j, (start, end, cls, _) in enumerate(instances):
            before = (start - bounds[2 * j]) / (2.0 if j > 0 else 1.0)
            after = (bounds[2 * j + 3] - end) / (2.0 if j < len(instances) - 1 else 1.0)
            for side, room in (("before", before), ("after", after)):
                if rng.random() >= config.context_prob:
                    continue
                size = min(rng.uniform(config.min_context, config.max_context), room)
                if size <= 0:
                    continue
                contexts.append((start - size, start, cls) if side == "before" else (end, end + size, cls))
    return VideoLayout(name, subset, length, duration, classes, instances, contexts)


def draw_layouts(config: SyntheticConfig, world: World | None = None) -> dict[str, list[VideoLayout]]:
    """The action layout of every video of both splits, without features (cheap; used for statistics).

    Args:
        config: the generator configuration.
        world: the class definitions; built from ``config`` when None.

    Returns:
        ``{"train": [...], "test": [...]}`` lists of :class:`VideoLayout`.

    Example:
        >>> from ftcl_plugin.data.synthetic import make_config
        >>> layouts = draw_layouts(make_config(num_train=5, num_test=3))
        >>> len(layouts["train"]), len(layouts["test"])
        (5, 3)
    """
    world = world if world is not None else build_world(config)
    result: dict[str, list[VideoLayout]] = {}
    for split_id, (split, count, subset) in enumerate(
            (("train", config.num_train, config.train_subset), ("test", config.num_test, config.test_subset))):
        rng = np.random.default_rng([config.video_seed, split_id, 0])
        num_classes = len(world.class_names)
        # Balanced primary classes: every class leads about count/C videos of each split.
        primaries = np.concatenate([rng.permutation(num_classes) for _ in range(-(-count // num_classes))] + [[]])
        result[split] = [
            _draw_layout(rng, config, world, config.name_format.format(subset=subset, index=i + 1), subset,
                         int(primaries[i]))
            for i in range(count)
        ]
    return result


def _layouts_from_ground_truth(ground_truth: dict[str, Any], splits: dict[str, list[str]],
                              world: World, config: SyntheticConfig) -> dict[str, list[VideoLayout]]:
    """Layouts that follow a real gt.json's segments (the "real-gt layout" option); phases drawn per instance."""
    rng = np.random.default_rng([config.video_seed, 7])
    index = {name: i for i, name in enumerate(world.class_names)}
    result: dict[str, list[VideoLayout]] = {}
    for split, videos in splits.items():
        result[split] = []
        for video in videos:
            entry = ground_truth["database"][video]
            duration = float(entry["duration"])
            length = max(int(duration / _io.SECONDS_PER_SNIPPET), 1)
            instances = []
            for annotation in entry.get("annotations", []):
                start, end = (x / _io.SECONDS_PER_SNIPPET for x in annotation["segment"])
                start, end = max(start, 0.0), min(max(end, start + 0.05), float(length))
                if end <= start:
                    continue
                cls = index[annotation["label"]]
                instances.append((start, end, cls, rng.dirichlet(np.full(len(world.phases[cls]), 3.0))))
            classes = sorted({i[2] for i in instances})
            result[split].append(VideoLayout(video, entry["subset"], length, duration, classes, instances, []))
    return result
