"""The snippet features of one laid-out video: background runs, phase mixtures, context, noise."""

from __future__ import annotations

import math

import numpy as np

from .config import SyntheticConfig
from .videos import VideoLayout
from .world import World, _prototypes, _unit


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
        >>> from ftcl_plugin.data.synthetic import build_world, draw_layouts, make_config
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
