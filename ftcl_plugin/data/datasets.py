"""Feature loaders for the three on-disk layouts the baselines use (ACM-Net/FTCL, CoLA, W-TALC).

All three return the same :class:`~ftcl_plugin.data.records.VideoRecord` and expose the same attributes, so a
training script never needs to know which layout it reads.
"""

from __future__ import annotations

import abc
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from .._checks import check_choice, check_number
from . import _io
from .records import VideoRecord
from .sampling import SAMPLINGS, Sampling, sample_indices

Split = Literal["train", "test"]
Layout = Literal["acmnet", "cola", "wtalc"]
LAYOUTS = ("acmnet", "cola", "wtalc")


class _FeatureDataset(Dataset, abc.ABC):
    """Shared machinery: ground truth, labels, temporal sampling, per-item seeding, errors naming files.

    Subclasses implement ``_header`` and ``_read`` and call ``_setup`` from ``__init__``.
    """

    def __init__(self, root: str | os.PathLike, split: Split, *, num_segments: int | None, sampling: Sampling | None,
                 seed: int | None, skip_missing: bool) -> None:
        check_choice(split, "split", _io.SPLITS)
        if num_segments is not None:
            check_number(num_segments, "num_segments", minimum=1, integer=True)
        if sampling is None:
            sampling = "random" if split == "train" else "uniform"
        check_choice(sampling, "sampling", SAMPLINGS)
        if seed is not None:
            check_number(seed, "seed", minimum=0, integer=True)
        if not isinstance(skip_missing, bool):
            raise TypeError(f"`skip_missing` must be a bool, but got {type(skip_missing).__name__}.")
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"Dataset root {self.root} is not a directory.")
        self.split = split
        self.num_segments = num_segments
        self.sampling = sampling
        self.skip_missing = skip_missing
        # A fresh entropy draw (not the global RNG) when no seed is given; recorded so a run can be repeated.
        self.seed = int(np.random.SeedSequence().entropy) if seed is None else seed
        self.epoch = 0
        self._draws: Counter[int] = Counter()

    def _setup(self, ground_truth: dict[str, Any], videos: list[str], source: str) -> None:
        """Validate the split against the ground truth, drop or refuse missing videos, build labels."""
        database = ground_truth["database"]
        if not videos:
            raise ValueError(f"The {self.split} split of {source} is empty.")
        absent = [v for v in videos if v not in database]
        if absent:
            more = f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""
            raise ValueError(f"Video {absent[0]!r}{more} of the {self.split} split of {source} is not in the "
                             f"ground truth.")
        duplicates = [v for v, n in Counter(videos).items() if n > 1]
        if duplicates:
            raise ValueError(f"Video {duplicates[0]!r} is listed twice in the {self.split} split of {source}.")
        keep: list[str] = []
        shapes: list[tuple[int, int]] = []
        for video in videos:
            try:
                shapes.append(self._header(video))
            except _MissingFeatures as missing:
                if not self.skip_missing:
                    raise ValueError(f"{missing} (pass skip_missing=True to skip such videos with a warning)."
                                     ) from None
                warnings.warn(f"Skipping video {video!r}: {missing}.", stacklevel=3)
                continue
            keep.append(video)
        if not keep:
            raise ValueError(f"No video of the {self.split} split of {source} has features.")
        dims = Counter(d for _, d in shapes)
        self.feature_dim = dims.most_common(1)[0][0]
        for video, (_, dim) in zip(keep, shapes):
            if dim != self.feature_dim:
                raise ValueError(f"Features of video {video!r} have D={dim}, but the other videos of {source} "
                                 f"have D={self.feature_dim}.")
        if self.split == "train":
            unlabelled = [v for v in keep if not database[v].get("annotations")]
            if unlabelled:
                raise ValueError(f"Training video {unlabelled[0]!r} has no annotations in the ground truth of "
                                 f"{source}; a weakly supervised training video needs at least one label.")
        subsets = sorted({database[v]["subset"] for v in keep})
        if len(subsets) != 1:
            raise ValueError(f"The {self.split} split of {source} mixes ground-truth subsets {subsets}; a split must "
                             f"come from one subset.")
        self.ground_truth = ground_truth
        self.subset: str = subsets[0]
        self.videos: list[str] = keep
        self.class_names: list[str] = _io.class_names_of(ground_truth)
        if not self.class_names:
            raise ValueError(f"The ground truth of {source} has no annotations, so it defines no classes.")
        self.num_classes = len(self.class_names)
        self.labels = torch.from_numpy(_io.labels_of(ground_truth, keep, self.class_names))
        self.num_snippets = np.array([length for length, _ in shapes], dtype=np.int64)
        self.durations = np.array([float(database[v]["duration"]) for v in keep], dtype=np.float64)

    @abc.abstractmethod
    def _header(self, video: str) -> tuple[int, int]:
        """(L, D) of a video's features, checked without loading them; raise _MissingFeatures if absent."""

    @abc.abstractmethod
    def _read(self, index: int) -> np.ndarray:
        """The (L, D) float32 features of video ``index``, validated."""

    def read_features(self, index: int) -> np.ndarray:
        """The full-length (L, D) float32 features of video ``index``, without sampling.

        Args:
            index: the video's position in ``videos``.

        Returns:
            The validated features.

        Raises:
            ValueError: naming the file for an unreadable file, wrong shape or dtype, or NaN/inf.

        Example:
            >>> import tempfile
            >>> from ftcl_plugin.data.synthetic import generate
            >>> root = generate(tempfile.mkdtemp(), num_train=2, num_test=2, feature_dim=8, max_length=30)
            >>> dataset = AcmNetFeatures(root, "test")
            >>> dataset.read_features(0).shape[0] == int(dataset.num_snippets[0])
            True
        """
        return self._read(index)

    def set_epoch(self, epoch: int) -> None:
        """Reseed the random sampler for a new epoch (call it each epoch when DataLoader workers are used).

        Args:
            epoch: the epoch number, >= 0.
        """
        check_number(epoch, "epoch", minimum=0, integer=True)
        self.epoch = epoch
        self._draws.clear()

    def skip_reads(self, indices: Sequence[int]) -> None:
        """Count one read of each video in ``indices`` (once per occurrence) without reading it.

        A read's temporal sample is seeded by the video's earlier reads in the epoch, so a resumed epoch that skips
        its first batches counts their reads here and then draws what an uninterrupted epoch would have drawn.

        Raises:
            IndexError: for an index out of range (nothing is counted then).

        Example:
            >>> import tempfile
            >>> from ftcl_plugin.data.synthetic import generate
            >>> root = generate(tempfile.mkdtemp(), num_train=2, num_test=1, feature_dim=4, min_length=32)
            >>> straight, resumed = (open_dataset(root, "train", num_segments=4, seed=0) for _ in range(2))
            >>> first, second = straight[0], straight[0]  # a second read draws another sample
            >>> resumed.skip_reads([0])
            >>> torch.equal(resumed[0].features, second.features), torch.equal(second.features, first.features)
            (True, False)
        """
        bad = next((index for index in indices if not -len(self) <= index < len(self)), None)
        if bad is not None:
            raise IndexError(f"index {bad} is out of range for a dataset of {len(self)} videos.")
        self._draws.update(int(index) % len(self) for index in indices)  # Counter.update counts occurrences

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> VideoRecord:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for a dataset of {len(self)} videos.")
        index = index % len(self)
        features = self._read(index)
        length = features.shape[0]
        # One generator per (dataset seed, epoch, video, draw): reproducible whatever the loading order or worker.
        generator = np.random.default_rng([self.seed, self.epoch, index, self._draws[index]])
        self._draws[index] += 1
        indices = sample_indices(length, self.num_segments, self.sampling, generator)
        return VideoRecord(
            features=torch.from_numpy(np.ascontiguousarray(features[indices])),
            label=self.labels[index].clone(),
            video=self.videos[index],
            num_snippets=int(length),
            duration=float(self.durations[index]),
        )

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, videos={len(self)}, "
                f"classes={self.num_classes}, feature_dim={self.feature_dim}, num_segments={self.num_segments}, "
                f"sampling={self.sampling!r})")


class _MissingFeatures(Exception):
    """Internal: a video's feature file is absent (skippable with ``skip_missing=True``)."""


def _require_file(path: Path) -> None:
    # exists(), not is_file(): a FIFO or directory named like a feature file is an error, not a missing file
    if not path.exists():
        raise _MissingFeatures(f"Feature file {path} does not exist")


def _check_header(path: Path) -> tuple[int, int]:
    shape, dtype = _io.feature_header(path)
    if dtype.kind not in _io.FLOAT_KINDS:
        raise ValueError(f"Feature file {path} must hold floating-point features, but has dtype {dtype}.")
    if len(shape) != 2 or shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"Feature file {path} must have shape (T, D) with T >= 1, but has shape {shape}.")
    return int(shape[0]), int(shape[1])


class _GtJsonDataset(_FeatureDataset):
    """A layout whose ground truth is ``<root>/gt.json`` and whose splits are ``<root>/split_{train,test}.txt``
    (ACM-Net and CoLA); subclasses say where a video's features are."""

    def __init__(self, root: str | os.PathLike, split: Split, *, num_segments: int | None = 750,
                 sampling: Sampling | None = None, seed: int | None = None, skip_missing: bool = False) -> None:
        super().__init__(root, split, num_segments=num_segments, sampling=sampling, seed=seed,
                         skip_missing=skip_missing)
        ground_truth = _io.load_ground_truth(self.root / "gt.json")
        videos = _io.read_split(self.root / f"split_{split}.txt")
        self._setup(ground_truth, videos, str(self.root))


class AcmNetFeatures(_GtJsonDataset):
    """The ACM-Net / FTCL-release layout: ``<root>/{train,test}/<video>.npy`` of shape (T, D).

    ``<root>/gt.json`` holds the ground truth, ``<root>/split_{train,test}.txt`` the video names per split.
    D is 2048 for real I3D features (RGB 1024 then flow 1024). THUMOS14 trains on its validation videos and
    tests on its test videos; ActivityNet1.3 trains on training and tests on validation.

    Args:
        root: the dataset directory.
        split: ``"train"`` or ``"test"``.
        num_segments: T, the sampled length (750 for THUMOS14, 75 for ActivityNet); None keeps full length.
        sampling: ``"random"`` (stratified random, the training default), ``"uniform"`` (the test default) or
            ``"full"``; see :func:`~ftcl_plugin.data.sampling.sample_indices`.
        seed: seeds the random sampler (per video, epoch and draw); None draws fresh entropy once.
        skip_missing: skip videos whose feature file is absent with a warning instead of raising.

    Attributes:
        class_names: sorted class names of the ground truth; ``labels[:, c]`` is ``class_names[c]``.
        videos: video names in split order. labels: (N, C) float32 multi-hot tensor. ground_truth: the gt.json
        dict. subset: the gt.json subset of this split. feature_dim: D. num_classes: C. num_snippets: (N,) true
        lengths. durations: (N,) seconds.

    Raises:
        ValueError: naming the file or video for a missing root, split file, gt.json or feature file; a file that
            is not a (T, D) floating array; NaN/inf (when the video is read); a split video absent from the
            ground truth; an empty split; a training video without annotations.

    Example:
        >>> import tempfile
        >>> from ftcl_plugin.data.synthetic import generate
        >>> root = generate(tempfile.mkdtemp(), num_train=4, num_test=2, feature_dim=16, max_length=40)
        >>> dataset = AcmNetFeatures(root, "train", num_segments=32, seed=0)
        >>> record = dataset[0]
        >>> tuple(record.features.shape), record.label.shape[0] == len(dataset.class_names)
        ((32, 16), True)
    """

    def _path(self, video: str) -> Path:
        return self.root / self.split / f"{video}.npy"

    def _header(self, video: str) -> tuple[int, int]:
        path = self._path(video)
        _require_file(path)
        return _check_header(path)

    def _read(self, index: int) -> np.ndarray:
        return _io.load_features(self._path(self.videos[index]), feature_dim=self.feature_dim)


class ColaFeatures(_GtJsonDataset):
    """The CoLA layout: ``<root>/features/{train,test}/{rgb,flow}/<video>.npy``, each (T, D/2).

    The two streams are concatenated RGB first, then flow. Ground truth and splits as in
    :class:`AcmNetFeatures` (``<root>/gt.json``, ``<root>/split_{train,test}.txt``); same arguments, attributes
    and errors, plus an error when the two streams of a video differ in length.

    Args:
        root: the dataset directory.
        split: ``"train"`` or ``"test"``.
        num_segments: T, or None for full length.
        sampling: ``"random"``, ``"uniform"`` or ``"full"`` (default by split).
        seed: seeds the random sampler.
        skip_missing: skip videos with a missing stream file, with a warning.

    Raises:
        ValueError: as :class:`AcmNetFeatures`, and when RGB and flow of a video differ in length.

    Example:
        >>> import tempfile
        >>> from ftcl_plugin.data.synthetic import generate
        >>> root = generate(tempfile.mkdtemp(), layout="cola", num_train=4, num_test=2, feature_dim=16,
        ...                 max_length=40)
        >>> ColaFeatures(root, "test").feature_dim
        16
    """

    def _paths(self, video: str) -> tuple[Path, Path]:
        base = self.root / "features" / self.split
        return base / "rgb" / f"{video}.npy", base / "flow" / f"{video}.npy"

    def _header(self, video: str) -> tuple[int, int]:
        rgb, flow = self._paths(video)
        _require_file(rgb)
        _require_file(flow)
        (length_rgb, dim_rgb), (length_flow, dim_flow) = _check_header(rgb), _check_header(flow)
        if length_rgb != length_flow:
            raise ValueError(f"Video {video!r} has {length_rgb} RGB snippets ({rgb}) but {length_flow} flow snippets "
                             f"({flow}).")
        return length_rgb, dim_rgb + dim_flow

    def _read(self, index: int) -> np.ndarray:
        rgb, flow = self._paths(self.videos[index])
        rgb_features, flow_features = _io.load_features(rgb), _io.load_features(flow)
        features = np.concatenate([rgb_features, flow_features], axis=1)
        if features.shape[1] != self.feature_dim:
            raise ValueError(f"Features of video {self.videos[index]!r} have D={features.shape[1]}, expected "
                             f"{self.feature_dim} ({rgb}, {flow}).")
        return features


def _wtalc_subset(split: Split, subsets: set[str]) -> str:
    """The W-TALC subset a split reads: ActivityNet-style data train on "training" and test on "validation";
    THUMOS14-style data train on "validation" and test on "test"."""
    if "training" in subsets:
        return "training" if split == "train" else "validation"
    return "validation" if split == "train" else "test"


class WtalcFeatures(_FeatureDataset):
    """The W-TALC layout: ``<root>/<Dataset>-I3D-JOINTFeatures.npy`` plus ``<root>/<Dataset>-Annotations/``.

    The features file is an object array with one (T, D) array per video, aligned with the annotation arrays
    ``videoname.npy``, ``subset.npy``, ``duration.npy``, ``segments.npy`` (per video, a list of [start, end] in
    seconds), ``labels.npy`` (per video, the label of each segment) and ``classlist.npy``. The training split is
    the "validation" subset and the test split the "test" subset (THUMOS14), or "training"/"validation" when a
    "training" subset exists (ActivityNet). Labels, class names and the ground truth come from the segments, so
    class ids agree with the gt.json layouts (W-TALC's own ``labels_all.npy`` is not used).

    These object arrays are pickles. They are read with :func:`~ftcl_plugin.data.load_npy`, whose restricted
    unpickler admits only numpy's array reconstruction and plain builtin types: a file that names any other global
    (the way a malicious pickle runs code) is refused with a ``ValueError`` naming the file and the global, and
    nothing in it runs.

    Args:
        root: the directory holding the two W-TALC entries.
        split: ``"train"`` or ``"test"``.
        dataset_name: the file prefix, ``"Thumos14reduced"`` (or ``"ActivityNet1.2"``, ...).
        num_segments: T, or None for full length.
        sampling: ``"random"``, ``"uniform"`` or ``"full"`` (default by split).
        seed: seeds the random sampler.
        skip_missing: skip videos whose feature entry is empty, with a warning.
        ground_truth: optional path of a gt.json to use as the ground truth instead of rebuilding it from the
            annotation arrays (e.g. THUMOS14's full test gt with its two unlisted videos).

    Raises:
        ValueError: naming the file for a missing or unreadable array, arrays of different lengths, a feature entry
            that is not a (T, D) float array, NaN/inf, an empty split.

    Example:
        >>> import tempfile
        >>> from ftcl_plugin.data.synthetic import generate
        >>> root = generate(tempfile.mkdtemp(), layout="wtalc", num_train=4, num_test=2, feature_dim=16,
        ...                 max_length=40)
        >>> WtalcFeatures(root, "test").subset
        'test'
    """

    def __init__(self, root: str | os.PathLike, split: Split, *, dataset_name: str = "Thumos14reduced",
                 num_segments: int | None = 750, sampling: Sampling | None = None, seed: int | None = None,
                 skip_missing: bool = False, ground_truth: str | os.PathLike | None = None) -> None:
        super().__init__(root, split, num_segments=num_segments, sampling=sampling, seed=seed,
                         skip_missing=skip_missing)
        if not isinstance(dataset_name, str) or not dataset_name:
            raise TypeError("`dataset_name` must be a non-empty string.")
        self.dataset_name = dataset_name
        arrays = _read_wtalc(self.root, dataset_name)
        self._features_path = self.root / f"{dataset_name}-I3D-JOINTFeatures.npy"
        self._by_video = {name: i for i, name in enumerate(arrays["videoname"])}
        self._features = arrays["features"]
        target = _wtalc_subset(split, set(arrays["subset"]))
        videos = [v for v, s in zip(arrays["videoname"], arrays["subset"]) if s == target]
        gt = _io.load_ground_truth(ground_truth) if ground_truth is not None else _wtalc_ground_truth(arrays)
        self._setup(gt, videos, str(self._features_path))

    def _entry(self, video: str) -> Any:
        return self._features[self._by_video[video]]

    def _header(self, video: str) -> tuple[int, int]:
        entry = self._entry(video)
        source = f"Entry {self._by_video[video]} ({video!r}) of {self._features_path}"
        if isinstance(entry, np.ndarray) and entry.size == 0:
            raise _MissingFeatures(f"{source} is empty")
        if not isinstance(entry, np.ndarray) or entry.dtype.kind not in _io.FLOAT_KINDS or entry.ndim != 2:
            kind = f"dtype {entry.dtype}, shape {entry.shape}" if isinstance(entry, np.ndarray) else type(entry).__name__
            raise ValueError(f"{source} must be a (T, D) floating array, but is {kind}.")
        return int(entry.shape[0]), int(entry.shape[1])

    def _read(self, index: int) -> np.ndarray:
        video = self.videos[index]
        source = f"Entry {self._by_video[video]} ({video!r}) of {self._features_path}"
        return _io.check_feature_array(self._entry(video), source, feature_dim=self.feature_dim)


WTALC_ARRAYS = ("videoname", "subset", "duration", "segments", "labels", "classlist")


def _read_wtalc(root: Path, dataset_name: str) -> dict[str, Any]:
    """Load the W-TALC features and annotation arrays (restricted unpickling, see :class:`WtalcFeatures`)."""
    annotations = root / f"{dataset_name}-Annotations"
    features_path = root / f"{dataset_name}-I3D-JOINTFeatures.npy"
    if not features_path.exists():
        raise ValueError(f"W-TALC features {features_path} do not exist (is `dataset_name` right?).")
    raw = {name: _io.load_object_array(annotations / f"{name}.npy") for name in WTALC_ARRAYS}
    features = _io.load_object_array(features_path)
    count = len(raw["videoname"])
    arrays: dict[str, Any] = {
        "videoname": [_io.as_text(v) for v in raw["videoname"]],
        "subset": [_io.as_text(v) for v in raw["subset"]],
        "classlist": [_io.as_text(v) for v in raw["classlist"]],
        "features": features,
    }
    for name in ("subset", "duration", "segments", "labels"):
        if len(raw[name]) != count:
            raise ValueError(f"W-TALC file {annotations / (name + '.npy')} has {len(raw[name])} entries, but "
                             f"videoname.npy has {count}.")
    if len(features) != count:
        raise ValueError(f"W-TALC features {features_path} have {len(features)} entries, but videoname.npy has "
                         f"{count}.")
    try:
        # W-TALC stores (N, 1); (N,) is accepted too
        arrays["duration"] = [float(d) for d in np.asarray(raw["duration"], dtype=np.float64).reshape(count)]
        arrays["segments"] = [[[float(s), float(e)] for s, e in video] for video in raw["segments"]]
        arrays["labels"] = [[_io.as_text(label) for label in video] for video in raw["labels"]]
    except (TypeError, ValueError) as error:
        raise ValueError(f"W-TALC annotations under {annotations} are malformed: {error}") from None
    for video, segments, labels in zip(arrays["videoname"], arrays["segments"], arrays["labels"]):
        if len(segments) != len(labels):
            raise ValueError(f"W-TALC video {video!r} has {len(segments)} segments but {len(labels)} segment labels "
                             f"under {annotations}.")
    return arrays


def _wtalc_ground_truth(arrays: dict[str, Any], *, validate: bool = True) -> dict[str, Any]:
    """The gt.json dict equivalent to W-TALC annotation arrays (validated unless ``validate`` is False)."""
    database = {
        video: {
            "subset": subset,
            "duration": duration,
            "annotations": [{"segment": segment, "label": label} for segment, label in zip(segments, labels)],
        }
        for video, subset, duration, segments, labels in zip(
            arrays["videoname"], arrays["subset"], arrays["duration"], arrays["segments"], arrays["labels"])
    }
    gt = {"version": "wtalc", "database": database}
    if validate:
        _io.validate_ground_truth(gt, "the W-TALC annotations")
    return gt


def open_dataset(root: str | os.PathLike, split: Split, *, layout: Layout = "acmnet", **kwargs: Any) -> _FeatureDataset:
    """Open a dataset in any of the three layouts with the same keywords.

    Args:
        root: the dataset directory.
        split: ``"train"`` or ``"test"``.
        layout: ``"acmnet"``, ``"cola"`` or ``"wtalc"``.
        **kwargs: passed to :class:`AcmNetFeatures`, :class:`ColaFeatures` or :class:`WtalcFeatures`.

    Returns:
        The dataset.

    Raises:
        ValueError: for an unknown layout, or any error of the chosen loader.

    Example:
        >>> import tempfile
        >>> from ftcl_plugin.data.synthetic import generate
        >>> root = generate(tempfile.mkdtemp(), num_train=4, num_test=2, feature_dim=16, max_length=40)
        >>> len(open_dataset(root, "test", layout="acmnet"))
        2
    """
    check_choice(layout, "layout", LAYOUTS)
    cls = {"acmnet": AcmNetFeatures, "cola": ColaFeatures, "wtalc": WtalcFeatures}[layout]
    return cls(root, split, **kwargs)
