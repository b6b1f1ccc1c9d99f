"""Evaluation of temporal action localization, exactly as the field computes it.

* :func:`detection_map` / :class:`DetectionMAP`: detection mAP per t-IoU threshold, identical to ActivityNet's
  reference ``ANETdetection`` evaluator, ties included, vectorised (100k predictions in well under a second).
* :mod:`~ftcl_plugin.evaluation.ground_truth`: the THUMOS14 and ActivityNet1.3 ground truth shipped with the
  package; ``detection_map("thumos14", ...)`` evaluates against it by name.
* :func:`classification_map`: video-level classification mAP.
* :func:`format_table`: a Markdown row with the preset's summary columns.
* :func:`main`: the ``ftcl-eval`` command line (also ``python -m ftcl_plugin.evaluation``).
"""

from __future__ import annotations

from .classification import classification_map
from .cli import main
from .detection import PRESETS, DetectionMAP, Preset, detection_map, format_table

__all__ = ["PRESETS", "DetectionMAP", "Preset", "classification_map", "detection_map", "format_table", "main"]
