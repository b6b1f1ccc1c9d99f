"""THUMOS14 and ActivityNet1.3 ground truth shipped with the package, loadable by name.

* ``"thumos14"``: the THUMOS14 temporal annotations of the 20 detection classes in the gt.json layout, 200
  videos in subset ``"validation"`` (3,007 instances, the usual training set) and 212 in subset ``"test"``
  (3,358 instances); with the video lists ``split_train.txt`` (200) and ``split_test.txt`` (210: it does not
  list ``video_test_0000270`` and ``video_test_0001496``, whose 47 instances stay in the ground truth and so
  count as missed by a method that skips those videos).
* ``"activitynet"``: the ActivityNet1.3 validation annotations (200 classes) of the 4,419 validation videos
  that have features in the ACM-Net / FTCL releases, 6,823 instances, all in subset ``"validation"``.

Where each file comes from, byte for byte, and on what terms: ``NOTICE.md`` beside this file (and
``docs/evaluation.md``). Anything that takes a ground truth in :mod:`ftcl_plugin.evaluation` also takes these
names, e.g. ``detection_map("thumos14", predictions)`` or ``ftcl-eval --gt thumos14 --pred results.json``.
"""

from __future__ import annotations

import gzip
import json
from importlib import resources
from typing import Any

NAMES = ("thumos14", "activitynet")
_FILES = {"thumos14": "thumos14_gt.json.gz", "activitynet": "activitynet13_gt_validation.json.gz"}
_SPLITS = {("thumos14", "train"): "thumos14_split_train.txt", ("thumos14", "test"): "thumos14_split_test.txt"}


def _read(filename: str) -> bytes:
    return resources.files(__name__).joinpath(filename).read_bytes()


def load(name: str) -> dict[str, Any]:
    """The shipped ground truth ``name`` as a gt.json dict (a fresh copy on every call).

    Args:
        name: ``"thumos14"`` or ``"activitynet"``.

    Returns:
        ``{"version", "taxonomy", "database": {video: {"subset", "duration", "annotations": [...]}}}``.

    Raises:
        ValueError: ``name`` is not a shipped ground truth.

    Example:
        >>> gt = load("thumos14")
        >>> sum(len(v["annotations"]) for v in gt["database"].values() if v["subset"] == "test")
        3358
    """
    if not isinstance(name, str) or name not in _FILES:
        raise ValueError(f"`name` must be one of {', '.join(repr(n) for n in NAMES)}, but got {name!r}.")
    return json.loads(gzip.decompress(_read(_FILES[name])))


def split(name: str, subset: str) -> list[str]:
    """The video list of a shipped split file, in file order.

    Args:
        name: ``"thumos14"`` (the only shipped ground truth with split files).
        subset: ``"train"`` (``split_train.txt``, the 200 validation videos) or ``"test"``
            (``split_test.txt``, 210 test videos).

    Returns:
        Video names.

    Raises:
        ValueError: no such split file is shipped.

    Example:
        >>> len(split("thumos14", "train")), split("thumos14", "test")[0]
        (200, 'video_test_0000004')
    """
    if (name, subset) not in _SPLITS:
        shipped = ", ".join(f"({n!r}, {s!r})" for n, s in _SPLITS)
        raise ValueError(f"no split file ({name!r}, {subset!r}) is shipped; shipped: {shipped}.")
    return _read(_SPLITS[(name, subset)]).decode("ascii").split()
