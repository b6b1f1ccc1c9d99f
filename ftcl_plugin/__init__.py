"""ftcl-plugin: Fine-grained Temporal Contrastive Learning (Gao et al., CVPR 2022) as a drop-in loss.

Two lines add FTCL to an existing weakly-supervised temporal action localization training loop::

    ftcl = FTCL(feature_dim=2048)                     # once, next to the model
    loss = loss + ftcl(features, attention, labels)   # every step

Public names are re-exported here and resolved on first use, so ``import ftcl_plugin`` stays cheap
(the evaluator's pandas, for example, is only imported when the evaluator is used) and has no side
effects.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    # functional: batched differentiable DP kernels
    "fsd_similarity": "functional",
    "lcs_length": "functional",
    "fsd_alignment": "functional",
    "lcs_path": "functional",
    "cosine_similarity_matrix": "functional",
    "soft_dtw": "functional",
    # roles
    "FSDLoss": "losses",
    "LCSLoss": "losses",
    "FSDTerms": "losses",
    "LCSTerms": "losses",
    "FSDSimilarity": "measures",
    "LCSSimilarity": "measures",
    "SoftDTWSimilarity": "measures",
    "ActionSelector": "selectors",
    "BackgroundSelector": "selectors",
    "ProposalSelector": "selectors",
    "Selection": "selectors",
    "PairMiner": "miners",
    "Pairs": "miners",
    # facade
    "FTCL": "facade",
    "FTCLTerms": "facade",
    "FTCLInactiveWarning": "facade",
    # data
    "ClassPairSampler": "data",
    "builtin": "data",
    # localization and evaluation
    "localize": "localization",
    "detection_map": "evaluation",
    "DetectionMAP": "evaluation",
    "classification_map": "evaluation",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ftcl_plugin' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover - static analysers see the eager imports
    from .data import ClassPairSampler, builtin
    from .evaluation import DetectionMAP, classification_map, detection_map
    from .facade import FTCL, FTCLInactiveWarning, FTCLTerms
    from .functional import (
        cosine_similarity_matrix,
        fsd_alignment,
        fsd_similarity,
        lcs_length,
        lcs_path,
        soft_dtw,
    )
    from .localization import localize
    from .losses import FSDLoss, FSDTerms, LCSLoss, LCSTerms
    from .measures import FSDSimilarity, LCSSimilarity, SoftDTWSimilarity
    from .miners import PairMiner, Pairs
    from .selectors import ActionSelector, BackgroundSelector, ProposalSelector, Selection
