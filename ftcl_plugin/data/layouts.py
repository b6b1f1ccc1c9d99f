"""Writers for the three layouts and the converter between them (``ftcl-data convert``)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._checks import check_choice
from . import _io
from .datasets import LAYOUTS, Layout, _wtalc_subset, open_dataset

DEFAULT_WTALC_NAME = "Thumos14reduced"


def write_dataset(root: str | os.PathLike, layout: Layout, ground_truth: Mapping[str, Any],
                  splits: Mapping[str, list[str]], features: Callable[[str, str], np.ndarray], *,
                  dataset_name: str = DEFAULT_WTALC_NAME) -> Path:
    """Write features and ground truth in one of the three layouts.

    Args:
        root: the output directory (created; existing files of the same names are replaced).
        layout: ``"acmnet"``, ``"cola"`` or ``"wtalc"``.
        ground_truth: the gt.json dict; every split video must be in it.
        splits: ``{"train": [videos], "test": [videos]}``.
        features: ``features(split, video)`` returns the (L, D) float array of a video (D even for ``"cola"``).
        dataset_name: the W-TALC file prefix.

    Returns:
        ``root`` as a Path.

    Raises:
        ValueError: for an unknown layout, a split video absent from the ground truth, an odd D for CoLA, or
            split subsets that W-TALC's fixed subset names cannot express.

    Example:
        >>> import tempfile, numpy as np
        >>> gt = {"database": {"a": {"subset": "validation", "duration": 3.2,
        ...                          "annotations": [{"segment": [0.5, 1.5], "label": "x"}]},
        ...                    "b": {"subset": "test", "duration": 3.2, "annotations": []}}}
        >>> root = write_dataset(tempfile.mkdtemp(), "acmnet", gt, {"train": ["a"], "test": ["b"]},
        ...                      lambda split, video: np.ones((5, 4), np.float32))
        >>> sorted(p.name for p in root.iterdir())
        ['gt.json', 'split_test.txt', 'split_train.txt', 'test', 'train']
    """
    check_choice(layout, "layout", LAYOUTS)
    _io.validate_ground_truth(ground_truth, "`ground_truth`")
    database = ground_truth["database"]
    for split, videos in splits.items():
        check_choice(split, "split", _io.SPLITS)
        for video in videos:
            if video not in database:
                raise ValueError(f"Video {video!r} of the {split} split is not in the ground truth.")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _io.write_json(root / "gt.json", ground_truth)
    if layout == "wtalc":
        _write_wtalc(root, ground_truth, splits, features, dataset_name)
        return root
    for split, videos in splits.items():
        _io.write_split(root / f"split_{split}.txt", videos)
        for video in videos:
            array = np.asarray(features(split, video), dtype=np.float32)
            if layout == "acmnet":
                folder = root / split
                folder.mkdir(exist_ok=True)
                _io.atomic_save(folder / f"{video}.npy", array)
                continue
            if array.shape[1] % 2:
                raise ValueError(f"The CoLA layout splits D into RGB and flow halves, but video {video!r} has "
                                 f"odd D={array.shape[1]}.")
            half = array.shape[1] // 2
            for stream, part in (("rgb", array[:, :half]), ("flow", array[:, half:])):
                folder = root / "features" / split / stream
                folder.mkdir(parents=True, exist_ok=True)
                _io.atomic_save(folder / f"{video}.npy", np.ascontiguousarray(part))
    return root


def _object_array(items: list[Any]) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        array[i] = item
    return array


def _write_wtalc(root: Path, ground_truth: Mapping[str, Any], splits: Mapping[str, list[str]],
                 features: Callable[[str, str], np.ndarray], dataset_name: str) -> None:
    database = ground_truth["database"]
    subsets = {database[v]["subset"] for videos in splits.values() for v in videos}
    for split, videos in splits.items():
        expected = _wtalc_subset(split, subsets)  # type: ignore[arg-type]
        wrong = [v for v in videos if database[v]["subset"] != expected]
        if wrong:
            raise ValueError(f"W-TALC selects its {split} split by subset name ({expected!r}), but video {wrong[0]!r} "
                             f"of the {split} split has subset {database[wrong[0]]['subset']!r}; rename the subsets "
                             f"in gt.json to 'validation'/'test' (THUMOS-style) or 'training'/'validation'.")
    order = [(split, v) for split in ("train", "test") for v in splits.get(split, [])]
    videos = [v for _, v in order]
    annotations = root / f"{dataset_name}-Annotations"
    annotations.mkdir(parents=True, exist_ok=True)
    entries = [database[v] for v in videos]
    segment_lists = [[list(map(float, a["segment"])) for a in e.get("annotations", [])] for e in entries]
    label_lists = [[a["label"] for a in e.get("annotations", [])] for e in entries]
    arrays = {
        "videoname": np.array([v.encode("utf-8") for v in videos], dtype=bytes),
        "subset": np.array([e["subset"].encode("utf-8") for e in entries], dtype=bytes),
        # (N, 1), as W-TALC's own files store it (its evaluator indexes duration[i][0])
        "duration": np.array([[float(e["duration"])] for e in entries], dtype=np.float64).reshape(-1, 1),
        "classlist": np.array([c.encode("utf-8") for c in _io.class_names_of(ground_truth)], dtype=bytes),
        "segments": _object_array(segment_lists),
        "labels": _object_array(label_lists),
        "labels_all": _object_array([sorted(set(labels)) for labels in label_lists]),
    }
    for name, array in arrays.items():
        _io.atomic_save(annotations / f"{name}.npy", array)
    # W-TALC's evaluator opens this list of ambiguous test intervals; gt.json has none to write.
    (annotations / "Ambiguous_test.txt").touch()
    stacked = _object_array([np.asarray(features(split, v), dtype=np.float32) for split, v in order])
    _io.atomic_save(root / f"{dataset_name}-I3D-JOINTFeatures.npy", stacked)


def convert(source: str | os.PathLike, destination: str | os.PathLike, *, source_layout: Layout,
            destination_layout: Layout, source_dataset_name: str = DEFAULT_WTALC_NAME,
            destination_dataset_name: str | None = None, overwrite: bool = False) -> Path:
    """Rewrite a dataset from one layout into another (full-length features, same ground truth and splits).

    The output is written into a temporary folder beside ``destination`` and renamed into place when complete, so
    an interrupted conversion never leaves a half-written dataset at ``destination``. A ``destination`` that exists
    and is not empty is refused unless ``overwrite`` is True; then its whole content is replaced (never mixed
    with the new files).

    Args:
        source: the source dataset directory.
        destination: the output directory (absent or empty, or anything with ``overwrite=True``).
        source_layout: the source layout.
        destination_layout: the output layout.
        source_dataset_name: W-TALC file prefix of the source (W-TALC sources only).
        destination_dataset_name: W-TALC file prefix of the output; defaults to ``source_dataset_name``.
        overwrite: replace a non-empty ``destination``.

    Returns:
        ``destination`` as a Path.

    Raises:
        ValueError: for unknown layouts, ``destination`` equal to or containing ``source``, a non-empty
            ``destination`` without ``overwrite``, a ``destination`` that is a file, or any loader/writer error
            (naming the file).

    Example:
        >>> import tempfile
        >>> from ftcl_plugin.data.synthetic import generate
        >>> src = generate(tempfile.mkdtemp(), num_train=3, num_test=2, feature_dim=8, max_length=30)
        >>> dst = convert(src, tempfile.mkdtemp(), source_layout="acmnet", destination_layout="cola")
        >>> (dst / "features" / "train" / "rgb").is_dir()
        True
    """
    check_choice(source_layout, "source_layout", LAYOUTS)
    check_choice(destination_layout, "destination_layout", LAYOUTS)
    if not isinstance(overwrite, bool):
        raise TypeError(f"`overwrite` must be a bool, but got {type(overwrite).__name__}.")
    source, destination = Path(source), Path(destination)
    if source.resolve() == destination.resolve():
        raise ValueError("`destination` must differ from `source`.")
    if source.resolve().is_relative_to(destination.resolve()):
        raise ValueError(f"`destination` {destination} contains `source` {source}; choose another folder.")
    if destination.exists() and not destination.is_dir():
        raise ValueError(f"`destination` {destination} is a file, not a folder.")
    if destination.is_dir() and any(destination.iterdir()) and not overwrite:
        raise ValueError(f"`destination` {destination} is not empty; choose an empty or new folder, or pass "
                         f"overwrite=True (ftcl-data convert --overwrite) to replace its content.")
    kwargs: dict[str, Any] = {"num_segments": None, "sampling": "full"}
    if source_layout == "wtalc":
        kwargs["dataset_name"] = source_dataset_name
    datasets = {split: open_dataset(source, split, layout=source_layout, **kwargs) for split in _io.SPLITS}
    ground_truth = datasets["train"].ground_truth
    index = {split: {v: i for i, v in enumerate(d.videos)} for split, d in datasets.items()}

    def features(split: str, video: str) -> np.ndarray:
        return datasets[split].read_features(index[split][video])

    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=destination.parent))
    try:
        write_dataset(staging, destination_layout, ground_truth,
                      {split: list(d.videos) for split, d in datasets.items()}, features,
                      dataset_name=destination_dataset_name or source_dataset_name)
        _replace_folder(staging, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return destination


def _replace_folder(new: Path, target: Path) -> None:
    """Rename ``new`` to ``target``; an existing ``target`` is moved aside first and deleted afterwards."""
    if not target.exists():
        os.rename(new, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.rename(target, old / target.name)
    try:
        os.rename(new, target)
    except OSError:
        os.rename(old / target.name, target)  # put the previous content back
        old.rmdir()
        raise
    shutil.rmtree(old, ignore_errors=True)
