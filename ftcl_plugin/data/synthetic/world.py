"""The class definitions: ordered phase sequences drawn from a shared pool, and the prototype vectors."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from .config import DIFFICULTIES, SyntheticConfig


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
        >>> from ftcl_plugin.data.synthetic import make_config
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
