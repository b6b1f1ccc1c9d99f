"""The built-in synthetic dataset: generated into a user cache directory on first use, reused after."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: builds are not locked, interrupted ones are not cleaned up
    fcntl = None  # type: ignore[assignment]

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

    The dataset is generated into a temporary directory beside the cache entry and renamed into place, so no
    process ever sees a half-written dataset. A lock file per entry (``flock``) lets one process build it while
    the others wait and then use its copy; the folders of builds that were interrupted (Ctrl-C, a kill, a crash)
    are never used, and are deleted by the next build once their builder is gone.
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
    with _locked(root / f".{target.name}.lock") as locked:
        if target.is_dir():
            return target  # built by the process that held the lock before us
        if locked:
            _remove_partials(root, target.name)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=root))
        try:
            generate(tmp, preset=name, size=size, difficulty=difficulty, layout=layout)
            try:
                os.rename(tmp, target)
            except OSError:
                # Another process (without the lock: no fcntl, or another cache user) renamed its complete copy
                # first; theirs is complete, so use it.
                if not target.is_dir():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    _remove_stale_partials(root)
    return target


@contextlib.contextmanager
def _locked(path: Path, *, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` (created if absent); yields whether the lock is held.

    The kernel releases the lock when its holder dies, even by SIGKILL, so a lock that can be taken means nobody
    is building that dataset now. Without ``fcntl`` (Windows) nothing is locked and False is yielded.
    """
    if fcntl is None:
        yield False
        return
    with open(path, "a+b") as handle:  # "a": create without truncating a file another process holds
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_partials(root: Path, name: str) -> None:
    """Delete the temporary folders of earlier, interrupted builds of ``name`` (call with its lock held)."""
    for path in root.glob(f".{name}.*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def _remove_stale_partials(root: Path) -> None:
    """Delete interrupted builds of every cached dataset whose lock nobody holds (their builder has died)."""
    for lock in root.glob(".*.lock"):
        name = lock.name[1: -len(".lock")]
        with _locked(lock, blocking=False) as free:
            if free:
                _remove_partials(root, name)
