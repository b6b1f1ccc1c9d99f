"""Shared pieces of the integrations: the baseline interface, the training runner and experiment helpers."""

from __future__ import annotations

from .baseline import Baseline, BaselineOutput

__all__ = ["Baseline", "BaselineOutput"]
