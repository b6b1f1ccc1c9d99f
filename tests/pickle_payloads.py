"""``.npy`` files for the security tests, written by hand (header + pickle) so no test calls ``allow_pickle=True``.

:func:`write_malicious` writes an object array whose pickle, when unpickled without restriction, runs
``os.system("touch <marker>")``: the classic code-execution payload. :func:`unrestricted_load` proves a file is
live by doing exactly what an unrestricted ``numpy.load(..., allow_pickle=True)`` does; the tests then assert that
every loader path refuses the same file and that the marker never appears.
"""

from __future__ import annotations

import os
import pickle
import shlex
from pathlib import Path
from typing import Any

import numpy as np


class Payload:
    """Unpickles as a call of ``os.system(command)``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (self.command,)


def write_object_npy(path: Path, items: list[Any], *, protocol: int = 4) -> Path:
    """A 1-D object ``.npy`` of ``items``: the same header and pickle ``numpy.save`` writes."""
    array = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        array[i] = item
    return write_array_pickle(path, array, protocol=protocol)


def write_array_pickle(path: Path, array: np.ndarray, *, protocol: int = 4) -> Path:
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": np.lib.format.dtype_to_descr(array.dtype),
                                                      "fortran_order": False, "shape": array.shape})
        pickle.dump(array, handle, protocol=protocol)
    return path


def write_malicious(path: Path, marker: Path, *, also: list[Any] | None = None) -> Path:
    """An object array whose unrestricted unpickling creates ``marker`` (``also`` are harmless extra items)."""
    return write_object_npy(path, [*(also or []), Payload(f"touch {shlex.quote(str(marker))}")])


def unrestricted_load(path: Path) -> Any:
    """What ``numpy.load(path, allow_pickle=True)`` does with an object array: header, then ``pickle.load``."""
    with open(path, "rb") as handle:
        np.lib.format.read_magic(handle)
        np.lib.format.read_array_header_1_0(handle)
        return pickle.load(handle)  # noqa: S301 - deliberately unrestricted, to prove the payload is live
