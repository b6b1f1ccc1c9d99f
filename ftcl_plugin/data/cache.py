"""The built-in synthetic dataset: generated into a user cache directory on first use, reused after."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .._checks import check_choice
from .datasets import LAYOUTS, Layout
from .synthetic import DIFFICULTIES, GENERATOR_VERSION, PRESETS, SIZES, Difficulty, Preset, Size, generate


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where built-in datasets live: ``cache_dir``, else ``$FTCL_PLUGIN_CACHE``, else
    ``$XDG_CACHE_HOME/ftcl-plugin``, else ``~/.cache/ftcl-plugin``.

    Args:
        cache_dir: an explicit directory, or None.

    Returns:
        The directory (not created here).

    Example:
        >>> cache_root("/tmp/x").as_posix()
        '/tmp/x'
    """
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("FTCL_PLUGIN_CACHE"):
        return Path(os.environ["FTCL_PLUGIN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ftcl-plugin"


def builtin(name: Preset = "thumos14-like", *, size: Size = "small", difficulty: Difficulty = "standard",
            layout: Layout = "acmnet", cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of a built-in synthetic dataset, generated on first use and cached.

    The dataset is generated into a temporary directory beside the cache entry and renamed into place, so
    concurrent processes never see a half-written dataset; a process that loses the race uses the winner's copy.
    The cache key includes the generator version, so a new generator never reuses an old dataset. The small
    thumos14-like dataset takes a few seconds and about 70 MB.

    Args:
        name: ``"thumos14-like"`` or ``"activitynet-like"``.
        size: ``"small"`` or ``"paper"`` (D=2048, real split sizes: about 1 GB for thumos14-like, 20 GB for
            activitynet-like).
        difficulty: ``"standard"``, ``"hard"`` or ``"order"``.
        layout: ``"acmnet"``, ``"cola"`` or ``"wtalc"`` (W-TALC prefix ``Thumos14reduced``/``ActivityNet1.2``).
        cache_dir: overrides the cache location (see :func:`cache_root`).

    Returns:
        The dataset directory, readable with :func:`~ftcl_plugin.data.open_dataset` and ``layout``.

    Raises:
        ValueError: for an unknown name, size, difficulty or layout.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as cache:
        ...     root = builtin("thumos14-like", cache_dir=cache)
        ...     again = builtin("thumos14-like", cache_dir=cache)  # cached: returns at once
        ...     names = sorted(p.name for p in root.iterdir())
        >>> root == again, names[:3]
        (True, ['gt.json', 'split_test.txt', 'split_train.txt'])
    """
    check_choice(name, "name", PRESETS)
    check_choice(size, "size", SIZES)
    check_choice(difficulty, "difficulty", DIFFICULTIES)
    check_choice(layout, "layout", LAYOUTS)
    root = cache_root(cache_dir)
    target = root / f"{name}_{size}_{difficulty}_{layout}_v{GENERATOR_VERSION}"
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    try:
        generate(tmp, preset=name, size=size, difficulty=difficulty, layout=layout)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process renamed its copy first; theirs is complete, so use it.
            if not target.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
