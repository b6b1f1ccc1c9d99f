"""The generator's parameters: every field in one frozen dataclass, and the named presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from ..._checks import check_choice

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
            a per-dim sigma of 0.06 at D=256 would be 0.96.
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
