"""A structured synthetic WSAL benchmark on which temporal order of sub-actions matters.

Each action class is an ordered sequence of 3-5 sub-action *phases* drawn from a shared pool, so classes can
share phases in a different order or with one phase swapped: a bag of snippets cannot tell them apart, their
temporal order can. Instances are time-warped (uneven phase lengths), appear several times per video among
scene-dependent background, optionally flanked by class-specific *context* snippets (same scene, action-like
motion: hard negatives), with RGB and flow halves, noise and per-video shifts. Ground-truth boundaries fall at
fractional seconds, and snippets straddling a boundary mix action and background by their overlap.

Class definitions come from a fixed *world seed* (the notes in SYNTHETIC_NOTES.md: redrawing them moved a
baseline between 17 and 55 avg mAP), and the videos from a separate *video seed*. The default parameters are
the calibrated values recorded there. Synthetic mAP is not THUMOS14 mAP.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .._checks import check_choice
from . import _io
from .datasets import LAYOUTS, Layout
from .layouts import write_dataset

GENERATOR_VERSION = 2  # bump on any change to the output; it is part of the builtin() cache key
WORLD_SEED = 20220619  # fixed: class definitions never change with the video seed
PRESETS = ("thumos14-like", "activitynet-like")
SIZES = ("small", "paper")
DIFFICULTIES = ("standard", "hard", "order")
Preset = Literal["thumos14-like", "activitynet-like"]
Size = Literal["small", "paper"]
Difficulty = Literal["standard", "hard", "order"]
ClassStructure = Literal["random", "shared", "order"]


@dataclass(frozen=True)
class SyntheticConfig:
    """Every parameter of the generator (lengths in snippets of 0.64 s).

    Attributes:
        preset, size, difficulty: the names this configuration was built from (recorded in metadata).
        num_classes, num_train, num_test, feature_dim: C, split sizes, D (RGB half then flow half).
        train_subset, test_subset, name_format: gt.json subset names and video-name pattern per split.
        length_law, length_median, length_sigma, min_length, max_length: video length L, ``"lognormal"``
            (median, log-sd) or ``"normal"`` (mean = median, sd = sigma x median), clipped.
        instance_mode: ``"fill"`` draws instances until the coverage is reached (THUMOS-like);
            ``"count"`` draws a count and splits the covered time among the instances (ActivityNet-like).
        instance_median, instance_sigma, min_instance, max_instance: lognormal instance length ("fill" mode).
        single_instance_prob, extra_instances_mean: "count" mode: P(one instance), else 2 + Poisson(mean).
        phase_length: (lo, hi) uniform length of each phase; None draws instance lengths and Dirichlet(3)
            phase proportions instead.
        coverage_mean, coverage_concentration, min_coverage, max_coverage: Beta fraction of the video in actions.
        classes_per_video: probabilities of 1, 2, 3 classes per video.
        phase_pool, min_phases, max_phases: the shared phase pool and phases per class.
        class_structure: ``"random"`` (each class draws its phases), ``"shared"`` (random plus ``num_reordered``
            classes reusing another class's phases in a new order and ``num_swapped`` with one phase swapped),
            ``"order"`` (groups of 4 classes with the same 4 phases in 4 orders: order-only cues).
        phase_jitter, phase_width: per-instance prototype jitter, soft phase-mixture width (x phase proportion).
        context_prob, min_context, max_context, context_weight: per-side probability and length of context.
        scene_correlation: weight of a class-specific component in the video's scene vector.
        num_background, background_run, background_weight: generic background prototypes, mean run length.
        action_scene_weight: scene weight inside action snippets.
        video_offset: norm of the per-video shift.
        noise: noise norm relative to the signal norm, per half. 0.6 by calibration with ACM-Net (docs/data.md);
            the notes' sigma 0.06 per dim at D=256 is 0.96.
        world_seed, video_seed: class definitions and video draw.
    """

    preset: str = "thumos14-like"
    size: str = "small"
    difficulty: str = "standard"
    num_classes: int = 20
    num_train: int = 200
    num_test: int = 200
    feature_dim: int = 256
    train_subset: str = "validation"
    test_subset: str = "test"
    name_format: str = "video_{subset}_{index:07d}"
    length_law: str = "lognormal"
    length_median: float = 180.0
    length_sigma: float = 0.45
    min_length: int = 64
    max_length: int = 256
    instance_mode: str = "fill"
    instance_median: float = 5.0
    instance_sigma: float = 0.8
    min_instance: float = 1.0
    max_instance: float = 40.0
    single_instance_prob: float = 0.78
    extra_instances_mean: float = 1.5
    phase_length: tuple[float, float] | None = None
    coverage_mean: float = 0.3
    coverage_concentration: float = 6.0
    min_coverage: float = 0.03
    max_coverage: float = 0.8
    classes_per_video: tuple[float, float, float] = (0.84, 0.15, 0.01)
    phase_pool: int = 40
    min_phases: int = 3
    max_phases: int = 5
    class_structure: str = "shared"
    num_reordered: int = 2
    num_swapped: int = 2
    phase_jitter: float = 0.35
    phase_width: float = 0.35
    context_prob: float = 0.0
    min_context: float = 1.0
    max_context: float = 3.0
    context_weight: float = 0.8
    scene_correlation: float = 0.0
    num_background: int = 16
    background_run: float = 15.0
    background_weight: float = 0.8
    action_scene_weight: float = 0.5
    video_offset: float = 0.3
    noise: float = 0.6
    world_seed: int = WORLD_SEED
    video_seed: int = 0


def make_config(preset: Preset = "thumos14-like", size: Size = "small", difficulty: Difficulty = "standard",
                **overrides: Any) -> SyntheticConfig:
    """The named preset's configuration, with any field overridden by keyword.

    Args:
        preset: ``"thumos14-like"`` (20 classes, ~15 short instances per long video) or ``"activitynet-like"``
            (200 classes, ~1.5 long instances per short video).
        size: ``"small"`` (D=256, ~200+200 videos for THUMOS-like, videos up to 256 snippets) or ``"paper"``
            (D=2048, the real dataset's split sizes and length distribution).
        difficulty: ``"standard"``, ``"hard"`` (context snippets around 90% of instance sides) or ``"order"``
            (order-only classes; phases of 4-8 snippets, longer than a k=3 convolution's receptive field).
        **overrides: any :class:`SyntheticConfig` field.

    Returns:
        The configuration.

    Raises:
        ValueError: for an unknown preset, size, difficulty or field.

    Example:
        >>> make_config("thumos14-like", "small", "hard").context_prob
        0.9
        >>> make_config(num_train=10).num_train
        10
    """
    check_choice(preset, "preset", PRESETS)
    check_choice(size, "size", SIZES)
    check_choice(difficulty, "difficulty", DIFFICULTIES)
    values: dict[str, Any] = {"preset": preset, "size": size, "difficulty": difficulty}
    if preset == "thumos14-like" and size == "paper":
        # THUMOS14 test: median 252 snippets, mean 331; 200 training and 210 test videos.
        values.update(num_train=200, num_test=210, feature_dim=2048, length_median=252.0, length_sigma=0.75,
                      min_length=24, max_length=2600)
    elif preset == "activitynet-like":
        values.update(num_classes=200, train_subset="training", test_subset="validation",
                      name_format="v_synth_{subset}_{index:06d}", instance_mode="count", coverage_mean=0.65,
                      coverage_concentration=2.0, min_coverage=0.02, max_coverage=0.99, min_instance=1.0,
                      classes_per_video=(0.999, 0.001, 0.0), num_reordered=20, num_swapped=20)
        if size == "small":
            # Five training videos per class is the least that trains; lengths capped like thumos14-like small.
            values.update(num_train=1000, num_test=500, length_median=120.0, length_sigma=0.5, min_length=16,
                          max_length=256)
        else:
            # ActivityNet1.3 (BSN features): 9649 training, 4728 validation videos, median 184 snippets.
            values.update(num_train=9649, num_test=4728, feature_dim=2048, length_law="normal",
                          length_median=185.0, length_sigma=0.57, min_length=4, max_length=1180)
    if difficulty == "hard":
        values.update(context_prob=0.9)
    elif difficulty == "order":
        values.update(class_structure="order", phase_length=(4.0, 8.0))
    fields = {f.name for f in dataclasses.fields(SyntheticConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"Unknown synthetic parameter(s) {unknown}; see SyntheticConfig.")
    values.update(overrides)
    if "max_length" in overrides and "min_length" not in overrides:
        values["min_length"] = min(values.get("min_length", SyntheticConfig.min_length), overrides["max_length"])
    return SyntheticConfig(**values)


# ------------------------------------------------------------------------------------------------ world


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _prototypes(rng: np.random.Generator, count: int, dim: int, rgb_weight: float) -> np.ndarray:
    """Unit vectors whose RGB half carries ``rgb_weight`` of the norm (appearance) and flow the rest (motion)."""
    half = dim // 2
    rgb = _unit(rng.standard_normal((count, half))) * rgb_weight
    flow = _unit(rng.standard_normal((count, dim - half))) * math.sqrt(1.0 - rgb_weight**2)
    return np.concatenate([rgb, flow], axis=1)


@dataclass(frozen=True)
class World:
    """Class definitions and prototypes, fixed by the world seed.

    Attributes:
        class_names: sorted names; class c is ``class_names[c]``.
        phases: per class, its ordered phase ids into ``phase_vectors``.
        phase_vectors: (P, D) phase prototypes (motion-heavy). background: (K, D) generic background.
        class_scenes: (C, D) class scene components. context: (C, D) class context vectors.
    """

    class_names: list[str]
    phases: list[list[int]]
    phase_vectors: np.ndarray
    background: np.ndarray
    class_scenes: np.ndarray
    context: np.ndarray


def _class_phases(rng: np.random.Generator, config: SyntheticConfig, num_classes: int) -> list[list[int]]:
    pool, lo, hi = config.phase_pool, config.min_phases, config.max_phases
    if not 1 <= lo <= hi <= pool:
        raise ValueError(f"Phases per class must satisfy 1 <= min_phases <= max_phases <= phase_pool, but got "
                         f"{lo}, {hi}, {pool}.")
    sequences: list[list[int]] = []
    seen: set[tuple[int, ...]] = set()

    def add(sequence: list[int]) -> bool:
        if tuple(sequence) in seen:
            return False
        seen.add(tuple(sequence))
        sequences.append(sequence)
        return True

    if config.class_structure == "order":
        # Groups of 4 classes share 4 phases; each class is a different order of them.
        size = min(4, pool)
        while len(sequences) < num_classes:
            phases = rng.choice(pool, size=size, replace=False)
            orders = list(itertools.permutations(range(size)))
            picks = rng.choice(len(orders), size=min(size, num_classes - len(sequences)), replace=False)
            for pick in picks:
                add([int(phases[i]) for i in orders[pick]])
        return sequences
    derived = config.num_reordered + config.num_swapped if config.class_structure == "shared" else 0
    derived = min(derived, num_classes // 2)
    for _ in range(100 * num_classes):
        if len(sequences) >= num_classes - derived:
            break
        add([int(p) for p in rng.choice(pool, size=int(rng.integers(lo, hi + 1)), replace=False)])
    bases = list(range(len(sequences)))
    rng.shuffle(bases)
    reordered = min(config.num_reordered, derived)
    for attempt, base in enumerate(itertools.cycle(bases)):
        if len(sequences) >= num_classes or attempt > 100 * num_classes:
            break
        sequence = list(sequences[base])
        if len(sequences) < num_classes - derived + reordered:
            # Same phases, new order: only temporal order separates it from its base class.
            perm = rng.permutation(len(sequence))
            add([sequence[i] for i in perm])
        else:
            # One phase swapped for a pool phase the base class does not use.
            free = [p for p in range(pool) if p not in sequence]
            if free:
                sequence[int(rng.integers(len(sequence)))] = int(rng.choice(free))
                add(sequence)
    if len(sequences) < num_classes:
        raise ValueError(f"Cannot define {num_classes} distinct classes from a pool of {pool} phases.")
    return sequences


def build_world(config: SyntheticConfig, class_names: list[str] | None = None) -> World:
    """Draw the class definitions and prototypes from ``config.world_seed`` (independent of the video seed).

    Args:
        config: the generator configuration.
        class_names: names to use instead of ``action00``, ... (must be ``config.num_classes`` sorted names).

    Returns:
        The :class:`World`.

    Raises:
        ValueError: when the pool cannot provide ``num_classes`` distinct phase sequences.

    Example:
        >>> world = build_world(make_config())
        >>> len(world.class_names), all(3 <= len(p) <= 5 for p in world.phases)
        (20, True)
    """
    num_classes = config.num_classes if class_names is None else len(class_names)
    structure = DIFFICULTIES.index(config.difficulty) if config.difficulty in DIFFICULTIES else 0
    rng = np.random.default_rng([config.world_seed, num_classes, config.feature_dim, config.phase_pool, structure])
    phases = _class_phases(rng, config, num_classes)
    order = rng.permutation(num_classes)  # derived classes are not all at the end of the id range
    phases = [phases[i] for i in order]
    dim = config.feature_dim
    phase_vectors = _prototypes(rng, config.phase_pool, dim, 0.6)
    background = _prototypes(rng, config.num_background, dim, 0.7)
    class_scenes = _prototypes(rng, num_classes, dim, 0.9)
    # Context: class-specific and partly action-like (half a class's mean phase), so it is a hard negative.
    mean_phase = np.stack([phase_vectors[p].mean(axis=0) for p in phases])
    context = _unit(_prototypes(rng, num_classes, dim, 0.5) + 0.5 * _unit(mean_phase))
    width = len(str(num_classes - 1))
    names = class_names if class_names is not None else [f"action{c:0{width}d}" for c in range(num_classes)]
    return World(list(names), phases, phase_vectors, background, class_scenes, context)


# ------------------------------------------------------------------------------------------------ layouts


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


# ------------------------------------------------------------------------------------------------ features


def _phase_mixture(positions: np.ndarray, proportions: np.ndarray, width: float) -> np.ndarray:
    """(m, k) soft phase weights at relative positions in [0, 1]: Gaussians at phase centres, width ~ proportion."""
    centres = np.cumsum(proportions) - proportions / 2
    widths = np.maximum(width * proportions, 1e-3)
    logits = -0.5 * ((positions[:, None] - centres[None, :]) / widths[None, :]) ** 2
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    return weights / weights.sum(axis=1, keepdims=True)


def _overlaps(start: float, end: float, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Snippets overlapping [start, end): their ids, overlap fractions and the overlap centres."""
    first, last = max(int(math.floor(start)), 0), min(int(math.ceil(end)), length)
    ids = np.arange(first, last)
    lo, hi = np.maximum(ids, start), np.minimum(ids + 1, end)
    keep = hi > lo
    return ids[keep], (hi - lo)[keep], ((lo + hi) / 2)[keep]


def synthesize(layout: VideoLayout, world: World, config: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    """The (L, D) float32 features of one video laid out by ``layout``.

    Args:
        layout: the video's layout.
        world: the class definitions.
        config: the generator configuration.
        rng: the video's own generator.

    Returns:
        (L, D) float32; each half (RGB, flow) has norm sqrt(D/2) per snippet (per-dim RMS about 1, the scale
        real I3D features and the baselines' initialisations expect).

    Example:
        >>> config = make_config(num_train=1, num_test=1, feature_dim=16)
        >>> world = build_world(config)
        >>> layout = draw_layouts(config, world)["train"][0]
        >>> synthesize(layout, world, config, np.random.default_rng(0)).shape == (layout.length, 16)
        True
    """
    dim, length = config.feature_dim, layout.length
    scene = _prototypes(rng, 1, dim, 0.9)[0]
    if config.scene_correlation > 0 and layout.classes:
        rho = config.scene_correlation
        scene = _unit(rho * world.class_scenes[layout.classes[0]] + (1 - rho) * scene)
    # Piecewise-constant generic background: runs of Poisson(run)+1 snippets.
    runs = rng.poisson(config.background_run, size=length) + 1
    run_ids = np.repeat(np.arange(length), runs)[:length]
    kinds = rng.integers(config.num_background, size=length)[run_ids]
    base = scene[None, :] + config.background_weight * world.background[kinds]
    mixed = np.zeros((length, dim))
    weight = np.zeros(length)
    for start, end, cls, proportions in layout.instances:
        ids, fractions, centres = _overlaps(start, end, length)
        if ids.size == 0:
            continue
        jittered = _unit(world.phase_vectors[world.phases[cls]]
                         + config.phase_jitter * _unit(rng.standard_normal((len(proportions), dim))))
        positions = np.clip((centres - start) / (end - start), 0.0, 1.0)
        action = _phase_mixture(positions, proportions, config.phase_width) @ jittered
        action = action + config.action_scene_weight * scene
        mixed[ids] += fractions[:, None] * action
        weight[ids] += fractions
    for start, end, cls in layout.contexts:
        ids, fractions, _ = _overlaps(start, end, length)
        mixed[ids] += fractions[:, None] * (config.context_weight * world.context[cls] + scene)
        weight[ids] += fractions
    # Overlapping annotations (real-gt layouts) can sum past 1: renormalise instead of overweighting.
    scale = np.maximum(weight, 1.0)
    features = (1.0 - weight / scale)[:, None] * base + mixed / scale[:, None]
    features = features + config.video_offset * _unit(rng.standard_normal(dim))[None, :]
    half = dim // 2
    out = np.empty((length, dim), dtype=np.float32)
    for part in (slice(0, half), slice(half, dim)):
        width = part.stop - part.start
        block = _unit(features[:, part])
        block = _unit(block + rng.standard_normal(block.shape) * (config.noise / math.sqrt(width)))
        out[:, part] = block * math.sqrt(width)
    return out


# ------------------------------------------------------------------------------------------------ writing


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
            ``split_{train,test}.txt`` beside it choose the splits when present, else its subsets do.
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
        ground_truth = _io.load_ground_truth(gt_source)
        splits = _splits_of(Path(gt_source), ground_truth)
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
