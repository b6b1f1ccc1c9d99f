"""A structured synthetic WSAL benchmark on which temporal order of sub-actions matters.

Each action class is an ordered sequence of 3-5 sub-action *phases* drawn from a shared pool, so classes can
share phases in a different order or with one phase swapped: a bag of snippets cannot tell them apart, their
temporal order can. Instances are time-warped (uneven phase lengths), appear several times per video among
scene-dependent background, optionally flanked by class-specific *context* snippets (same scene, action-like
motion: hard negatives), with RGB and flow halves, noise and per-video shifts. Ground-truth boundaries fall at
fractional seconds, and snippets straddling a boundary mix action and background by their overlap.

Class definitions come from a fixed *world seed* (during calibration, redrawing them moved a baseline between 17
and 55 avg mAP; see docs/data.md), and the videos from a separate *video seed*. The default parameters are the
calibrated values docs/data.md records. Synthetic mAP is not THUMOS14 mAP.

One module per step: :mod:`.config` (parameters and presets), :mod:`.world` (class definitions), :mod:`.videos`
(where the actions are), :mod:`.features` (the snippet features) and :mod:`.writer` (:func:`generate`).
"""

from __future__ import annotations

from .config import (
    DIFFICULTIES,
    GENERATOR_VERSION,
    PRESETS,
    SIZES,
    WORLD_SEED,
    Difficulty,
    Preset,
    Size,
    SyntheticConfig,
    make_config,
)
from .features import synthesize
from .videos import VideoLayout, draw_layouts
from .world import World, build_world
from .writer import generate, read_metadata

__all__ = [
    "DIFFICULTIES",
    "GENERATOR_VERSION",
    "PRESETS",
    "SIZES",
    "WORLD_SEED",
    "Difficulty",
    "Preset",
    "Size",
    "SyntheticConfig",
    "VideoLayout",
    "World",
    "build_world",
    "draw_layouts",
    "generate",
    "make_config",
    "read_metadata",
    "synthesize",
]
