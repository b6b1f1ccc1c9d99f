"""Reversible attribute changes: everything a session or an attachment changes is undone in reverse order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class _Undo:
    """Attribute changes to revert in reverse order."""

    def __init__(self) -> None:
        self._steps: list[Callable[[], None]] = []

    def setattr(self, obj: object, name: str, value: Any) -> None:
        if name in vars(obj):
            old = vars(obj)[name]
            self._steps.append(lambda: setattr(obj, name, old))
        else:
            self._steps.append(lambda: delattr(obj, name))
        setattr(obj, name, value)

    def call(self, step: Callable[[], None]) -> None:
        self._steps.append(step)

    def undo(self) -> None:
        while self._steps:
            self._steps.pop()()
