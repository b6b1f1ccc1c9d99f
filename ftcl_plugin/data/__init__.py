"""Datasets for weakly-supervised temporal action localization.

- Loaders for the three I3D feature layouts the baselines use, all returning the same
  :class:`VideoRecord`: :class:`AcmNetFeatures`, :class:`ColaFeatures`, :class:`WtalcFeatures`,
  :func:`open_dataset`; :func:`collate_videos` pads them into a :class:`VideoBatch`.
- :func:`convert` between layouts, :func:`check_dataset` before training.
- :func:`load_npy`, the one ``.npy`` reader every loader uses: plain arrays without pickles, object arrays (W-TALC)
  only when asked and through a restricted unpickler that cannot run code from the file.
- A structured synthetic benchmark (:mod:`ftcl_plugin.data.synthetic`) and :func:`builtin`, which returns
  the cached built-in dataset. Synthetic mAP is not THUMOS14 mAP.
- :class:`ClassPairSampler`, a batch sampler that guarantees same-class pairs per batch, and
  :class:`SimilarPairSampler`, W-TALC's batches (same-class pairs first, then random videos).
"""

from __future__ import annotations

from .cache import builtin, cache_root
from .check import check_dataset
from .datasets import AcmNetFeatures, ColaFeatures, WtalcFeatures, open_dataset
from .layouts import convert, write_dataset
from .npy import load_npy
from .records import VideoBatch, VideoRecord, collate_videos
from .samplers import ClassPairSampler, SimilarPairSampler
from .sampling import sample_indices
from .synthetic import GENERATOR_VERSION, SyntheticConfig, generate, make_config

__all__ = [
    "GENERATOR_VERSION",
    "AcmNetFeatures",
    "ClassPairSampler",
    "ColaFeatures",
    "SimilarPairSampler",
    "SyntheticConfig",
    "VideoBatch",
    "VideoRecord",
    "WtalcFeatures",
    "builtin",
    "cache_root",
    "check_dataset",
    "collate_videos",
    "convert",
    "generate",
    "load_npy",
    "make_config",
    "open_dataset",
    "sample_indices",
    "write_dataset",
]
