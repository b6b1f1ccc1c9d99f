"""Everything a patch module or a driver needs from the shared machinery, in one import.

The machinery lives in one module per job: :mod:`patches._checkout` (is this the supported commit, with the
expected files and signatures?), :mod:`patches._session` (one checkout importable at a time, undone on exit),
:mod:`patches._compat` (numpy/torch/joblib compatibility for the session, including the ``np.load`` that never
unpickles beyond numpy's array reconstruction), :mod:`patches._stand_ins` (no-op modules for missing loggers),
:mod:`patches._pieces` (a patch's ``load``: the upstream objects it uses and their signatures, declared as data),
:mod:`patches._attach` (hooks, optimizer group and loss term of FTCL) and :mod:`patches._undo` (reversible attribute
changes). Nothing here runs at import time.
"""

from __future__ import annotations

from ._attach import FTCLAttachment
from ._checkout import (
    ALLOW_UNSUPPORTED_ENV,
    UpstreamError,
    UpstreamSpec,
    check_checkout,
    check_signature,
    git_head,
    require_attribute,
)
from ._pieces import Pieces, Signature, load_pieces, loader
from ._session import UpstreamSession, session_factory

__all__ = [
    "ALLOW_UNSUPPORTED_ENV",
    "FTCLAttachment",
    "Pieces",
    "Signature",
    "UpstreamError",
    "UpstreamSession",
    "UpstreamSpec",
    "check_checkout",
    "check_signature",
    "git_head",
    "load_pieces",
    "loader",
    "require_attribute",
    "session_factory",
]
