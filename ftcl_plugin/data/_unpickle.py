"""A pickle reader for numpy object arrays that cannot run code or corrupt memory.

A pickle is a small program: ``GLOBAL`` names a callable, ``REDUCE`` calls it, ``BUILD`` hands state to an object.
Two things make an ordinary unpickler unsafe for untrusted files: the callable can be anything importable
(``os.system``), and even numpy's own constructors can be misused (``numpy.ndarray(shape, object, buffer)`` turns
raw bytes into object pointers, a crafted ``dtype`` state can mark floats as references). So this reader:

- resolves only the names numpy's array pickles use, each to a wrapper that checks its arguments
  (``_reconstruct``, ``scalar``, ``_frombuffer``, ``dtype``; ``numpy.ndarray`` is a non-callable token that only
  ``_reconstruct`` accepts), plus the builtin types ``set``, ``frozenset``, ``complex``, ``bytearray`` and a
  ``_codecs.encode`` limited to text codecs; every other name is refused before it is imported;
- admits only plain dtypes (booleans, integers, floats, complex, bytes, str, object; no structured, sub-array or
  datetime dtypes) and checks each ``BUILD`` state against the state numpy itself would write.
"""

from __future__ import annotations

import codecs
import math
import pickle
import re
from typing import Any, BinaryIO

import numpy as np

__all__ = ["ADMITTED_GLOBALS", "Refused", "load_object_pickle"]

# dtype strings numpy's pickles use for plain dtypes ('O8', 'f4', 'S24', 'U7', 'b1', 'i8', ...), no 'V'/'M'/'m'
_PLAIN_DTYPE = re.compile(r"[<>|=]?(\?|b1|[iu][1248]|f(2|4|8|10|12|16)|c(8|16|20|24|32)|[SU]\d+|O[48]?)")
_PLAIN_KINDS = "biufcSUO"


class Refused(pickle.UnpicklingError):
    """A pickle asked for something outside what numpy's array pickles need; ``what`` says what."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class _NdarrayToken:
    """Stands for ``numpy.ndarray`` in a pickle: accepted by ``_reconstruct``, refused when called."""

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        raise Refused("a call of numpy.ndarray (numpy's own pickles only hand it to _reconstruct)")


_NDARRAY = _NdarrayToken()
_real_reconstruct = np.empty(1, dtype=object).__reduce__()[0]
_real_scalar = np.float64(0.0).__reduce__()[0]
_real_frombuffer = np.zeros(1).__reduce_ex__(5)[0]


def _text(value: Any) -> Any:
    return value.decode("latin1") if isinstance(value, bytes) else value


def _check_plain(dtype: Any, what: str) -> np.dtype:
    if (not isinstance(dtype, np.dtype) or dtype.kind not in _PLAIN_KINDS or dtype.fields is not None
            or dtype.subdtype is not None or dtype.metadata is not None or dtype.flags != np.dtype(dtype.str).flags
            or (dtype.kind == "O" and dtype.byteorder != "|")):
        raise Refused(f"{what} with the dtype {dtype!r} (only plain numeric, bytes, str and object dtypes are read)")
    return dtype


def _dtype(obj: Any, align: Any = False, copy: Any = True) -> np.dtype:
    spec = _text(obj)
    if not isinstance(spec, str) or not _PLAIN_DTYPE.fullmatch(spec):
        raise Refused(f"a numpy.dtype({obj!r}) (only plain numeric, bytes, str and object dtypes are read)")
    return np.dtype(spec, align=bool(align), copy=True)  # a copy: BUILD below never touches numpy's singletons


def _reconstruct(subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
    if subtype is not _NDARRAY or not isinstance(shape, tuple) or not isinstance(typecode, (bytes, str)):
        raise Refused(f"a _reconstruct({type(subtype).__name__}, ...) other than numpy's own")
    return _real_reconstruct(np.ndarray, (0,), b"b")


def _scalar(dtype: Any, value: Any = None) -> Any:
    dtype = _check_plain(dtype, "a numpy scalar")
    if dtype.kind == "O":
        return value
    if isinstance(value, str):
        value = value.encode("latin1")  # a Python 2 str holding the raw bytes
    if not isinstance(value, bytes) or len(value) != dtype.itemsize:
        raise Refused(f"a numpy scalar of {dtype} from {type(value).__name__} data")
    return _real_scalar(dtype, value)


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    dtype = _check_plain(dtype, "an array from a buffer")
    if dtype.kind == "O" or not isinstance(buffer, (bytes, bytearray)) or order not in ("C", "F"):
        raise Refused(f"an array of {dtype} from a {type(buffer).__name__} buffer")
    return _real_frombuffer(buffer, dtype, shape, order)


def _encode(text: Any, encoding: Any = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 protocol-2 pickles use it for ``bytes``, limited to text codecs."""
    if (not isinstance(text, str) or not isinstance(encoding, str)
            or codecs.lookup(encoding).name not in ("latin-1", "iso8859-1", "ascii", "utf-8")):
        raise Refused("_codecs.encode for anything but text with latin1/ascii/utf-8")
    return text.encode(encoding)


def _admitted() -> dict[tuple[str, str], Any]:
    table: dict[tuple[str, str], Any] = {("numpy", "ndarray"): _NDARRAY, ("numpy", "dtype"): _dtype}
    for core in ("numpy.core", "numpy._core"):  # numpy 1.x writes numpy.core, numpy 2.x numpy._core
        table[(f"{core}.multiarray", "_reconstruct")] = _reconstruct
        table[(f"{core}.multiarray", "scalar")] = _scalar
        table[(f"{core}.numeric", "_frombuffer")] = _frombuffer
    for builtins in ("builtins", "__builtin__"):  # Python 3 and Python 2 pickles
        for kind in (set, frozenset, complex, bytearray):
            table[(builtins, kind.__name__)] = kind
    table[("_codecs", "encode")] = _encode
    return table


_ADMITTED = _admitted()

#: ``(module, name)`` of every global an object-array pickle may name; everything else is refused.
ADMITTED_GLOBALS = tuple(sorted(_ADMITTED))


def _check_dtype_state(dtype: np.dtype, state: Any) -> None:
    canonical = dtype.__reduce__()[2]
    endian = _text(state[1]) if isinstance(state, tuple) and len(state) == len(canonical) else None
    allowed = ("|",) if canonical[1] == "|" else ("<", ">", "=")
    if endian not in allowed or state[0] != canonical[0] or tuple(state[2:]) != tuple(canonical[2:]):
        raise Refused(f"a dtype state {state!r} (numpy writes {canonical!r} for {dtype})")


def _check_array_state(state: Any) -> None:
    if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1 and isinstance(state[1], tuple)
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in state[1])):
        raise Refused(f"an array state {str(state)[:80]} (numpy writes (1, shape, dtype, fortran, data))")
    _, shape, dtype, _, data = state
    _check_plain(dtype, "an array")
    size = math.prod(shape)
    if dtype.kind == "O":
        if not isinstance(data, list) or len(data) != size:
            raise Refused(f"an object array of shape {shape} whose data is not a list of {size} items")
    elif not isinstance(data, (bytes, bytearray, str)):
        raise Refused(f"an array of {dtype} whose data is a {type(data).__name__}")


class _RestrictedUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """The pure-Python unpickler, whose ``BUILD`` is replaced so that every state is checked before it is applied."""

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ADMITTED[(module, name)]
        except KeyError:
            raise Refused(f"the global `{module}.{name}`") from None

    def persistent_load(self, pid: Any) -> Any:
        raise Refused(f"a persistent id {repr(pid)[:60]}")

    def load_build(self) -> None:
        state = self.stack.pop()
        target = self.stack[-1]
        if type(target) is np.ndarray:
            _check_array_state(state)
        elif isinstance(target, np.dtype):
            _check_dtype_state(target, state)
        else:
            raise Refused(f"state for a {type(target).__name__} object")
        target.__setstate__(state)

    dispatch[pickle.BUILD[0]] = load_build


def load_object_pickle(handle: BinaryIO, encoding: str) -> Any:
    """Unpickle one object from ``handle`` with the restrictions above; :class:`Refused` says what was refused.

    Args:
        handle: a binary file positioned at the pickle (after a ``.npy`` header).
        encoding: how Python 2 ``str`` are read (``"ASCII"``, ``"latin1"`` or ``"bytes"``).

    Returns:
        The unpickled object.
    """
    return _RestrictedUnpickler(handle, encoding=encoding).load()
