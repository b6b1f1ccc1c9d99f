"""Reading ``.npy`` files without ever running code stored in them.

``numpy.load(..., allow_pickle=True)`` unpickles object arrays with the full :mod:`pickle` machinery, which calls
whatever global a file names (``os.system`` included). W-TALC's real files are object arrays, of strings, lists of
numbers and per-video float arrays, so they need *some* unpickling. :func:`load_npy` reads plain arrays with
``allow_pickle=False`` and object arrays, only when asked, through an unpickler that resolves exactly the globals
numpy's own array pickles use (under numpy 1.x and 2.x module paths) and a few plain builtin types. Any other
global is refused before it is looked up, so it is never imported or called.

The file is opened without blocking and must be a regular file: a FIFO or a device named like a ``.npy`` file is
reported, not read.
"""

from __future__ import annotations

import codecs
import io
import os
import pickle
import stat
from typing import Any

import numpy as np

__all__ = ["ADMITTED_GLOBALS", "load_npy", "npy_header"]

#: The encodings ``numpy.load`` accepts for Python 2 pickles (others can corrupt numeric data).
ENCODINGS = ("ASCII", "latin1", "bytes")


def _numpy_reconstructors() -> dict[str, Any]:
    # Taken from numpy's own pickles, so they are the functions of the installed numpy whatever its module layout.
    plain = np.zeros(1)
    return {
        "_reconstruct": np.empty(1, dtype=object).__reduce__()[0],
        "scalar": np.float64(0.0).__reduce__()[0],
        "_frombuffer": plain.__reduce_ex__(5)[0],
    }


def _encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 protocol-2 pickles use it for ``bytes``, limited to byte-preserving codecs."""
    if not isinstance(text, str) or codecs.lookup(encoding).name not in ("latin-1", "iso8859-1", "ascii", "utf-8"):
        raise pickle.UnpicklingError(f"_codecs.encode is admitted for text with latin1/ascii/utf-8 only, but got "
                                     f"{type(text).__name__} with {encoding!r}")
    return text.encode(encoding)


def _admitted() -> dict[tuple[str, str], Any]:
    numpy_functions = _numpy_reconstructors()
    table: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):  # numpy 1.x writes numpy.core, numpy 2.x numpy._core
        table[(f"{core}.multiarray", "_reconstruct")] = numpy_functions["_reconstruct"]
        table[(f"{core}.multiarray", "scalar")] = numpy_functions["scalar"]
        table[(f"{core}.numeric", "_frombuffer")] = numpy_functions["_frombuffer"]
    for builtins in ("builtins", "__builtin__"):  # Python 3 and Python 2 pickles
        for kind in (set, frozenset, complex, bytearray):
            table[(builtins, kind.__name__)] = kind
    table[("_codecs", "encode")] = _encode
    return table


_ADMITTED = _admitted()

#: ``(module, name)`` of every global an object-array pickle may name; everything else is refused.
ADMITTED_GLOBALS = tuple(sorted(_ADMITTED))


class _Refused(pickle.UnpicklingError):
    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose only reachable globals are :data:`ADMITTED_GLOBALS` (no import happens for others)."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ADMITTED[(module, name)]
        except KeyError:
            raise _Refused(f"the global `{module}.{name}`") from None

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused(f"a persistent id {repr(pid)[:60]}")


def open_regular(path: os.PathLike | str, kind: str) -> io.BufferedReader:
    """Open ``path`` for binary reading without blocking on a FIFO; ``ValueError`` naming ``kind`` and the path
    unless it is a regular file (used for every data file: ``.npy``, gt.json, split files)."""
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise ValueError(f"{kind} {path} does not exist.") from None
    except OSError as error:
        raise ValueError(f"{kind} {path} cannot be opened: {error.strerror or error}.") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        what = ("a directory" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "not a regular file")
        raise ValueError(f"{kind} {path} is {what}, not a regular file; it is not read.")
    return os.fdopen(fd, "rb")


def _read_header(handle: io.BufferedReader, path: Any, kind: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(handle)
        if version == (1, 0):
            return fmt.read_array_header_1_0(handle)
        if version == (2, 0):
            return fmt.read_array_header_2_0(handle)
    except (ValueError, OSError, EOFError, SyntaxError) as error:
        raise ValueError(f"{kind} {path} is not a readable .npy array: {error}") from None
    raise ValueError(f"{kind} {path} is not a readable .npy array: format version {version[0]}.{version[1]} (versions "
                     f"1.0 and 2.0 are read).")


def _object_array_refused(kind: str, path: Any, dtype: np.dtype) -> ValueError:
    return ValueError(f"{kind} {path} holds a pickled object array, which is not read here: features and other "
                      f"numeric files must be plain arrays (dtype {dtype} found).")


def npy_header(path: str | os.PathLike, *, allow_objects: bool = False,
               kind: str = "File") -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a ``.npy`` file, read from its header only (no data, nothing unpickled).

    Args:
        path: the file.
        allow_objects: accept the header of an object array (else refused as :func:`load_npy` refuses it).
        kind: how messages name the file (``"Feature file"``, ...).

    Returns:
        ``(shape, dtype)``.

    Raises:
        ValueError: naming the file when it is missing, not a regular file, not a ``.npy`` file, or an object array
            while ``allow_objects`` is False.

    Example:
        >>> import tempfile, numpy as np
        >>> path = tempfile.mkdtemp() + "/a.npy"
        >>> np.save(path, np.zeros((3, 4), np.float32))
        >>> npy_header(path)
        ((3, 4), dtype('float32'))
    """
    with open_regular(path, kind) as handle:
        shape, _, dtype = _read_header(handle, path, kind)
    if dtype.hasobject and not allow_objects:
        raise _object_array_refused(kind, path, dtype)
    return tuple(shape), dtype


def load_npy(path: str | os.PathLike, *, allow_objects: bool = False, encoding: str = "ASCII",
             kind: str = "File") -> np.ndarray:
    """Read one ``.npy`` array without ever running code from the file.

    Plain arrays are read with ``allow_pickle=False``. Object arrays are refused unless ``allow_objects`` is True,
    and then unpickled by a restricted unpickler that admits only :data:`ADMITTED_GLOBALS`: numpy's array, dtype and
    scalar reconstruction (``numpy.core``/``numpy._core`` paths) and the builtin types ``set``, ``frozenset``,
    ``complex``, ``bytearray`` (lists, tuples, dicts, strings, bytes, numbers and None need no global). That is
    enough for W-TALC's annotation and feature files; a pickle naming any other global is refused before the
    global is imported, so nothing in the file runs.

    Args:
        path: the ``.npy`` file (a regular file; FIFOs and devices are refused without blocking).
        allow_objects: read object arrays through the restricted unpickler.
        encoding: how Python 2 pickles' ``str`` are read: ``"ASCII"``, ``"latin1"`` or ``"bytes"`` (as in
            ``numpy.load``).
        kind: how messages name the file (``"Feature file"``, ``"W-TALC file"``, ...).

    Returns:
        The array.

    Raises:
        ValueError: naming the file when it is missing, not a regular file, not a ``.npy`` array, an object array
            while ``allow_objects`` is False, or a pickle that names a refused global (the message names the
            global).

    Example:
        >>> import tempfile, numpy as np
        >>> folder = tempfile.mkdtemp()
        >>> labels = np.empty(2, dtype=object)
        >>> labels[0], labels[1] = ["jump", "jump"], ["run"]
        >>> np.save(folder + "/labels.npy", labels, allow_pickle=True)
        >>> load_npy(folder + "/labels.npy", allow_objects=True).tolist()
        [['jump', 'jump'], ['run']]
        >>> load_npy(folder + "/labels.npy")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: File .../labels.npy holds a pickled object array, which is not read here...
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"`encoding` must be one of {', '.join(ENCODINGS)}, but got {encoding!r}.")
    with open_regular(path, kind) as handle:
        shape, _, dtype = _read_header(handle, path, kind)
        if not dtype.hasobject:
            handle.seek(0)
            try:
                return np.lib.format.read_array(handle, allow_pickle=False)
            except (ValueError, OSError, EOFError) as error:
                raise ValueError(f"{kind} {path} is not a readable .npy array: {error}") from None
        if not allow_objects:
            raise _object_array_refused(kind, path, dtype)
        try:
            array = _RestrictedUnpickler(handle, encoding=encoding).load()
        except _Refused as refused:
            raise ValueError(
                f"{kind} {path} holds a pickle that names {refused.what}; it was refused "
                f"without being imported or called, because unpickling any global other than numpy's array "
                f"reconstruction and plain builtin types can run code stored in the file.") from None
        except Exception as error:  # a corrupt pickle can raise nearly anything
            raise ValueError(f"{kind} {path} is not a readable .npy object array: {type(error).__name__}: "
                             f"{error}") from None
    if not isinstance(array, np.ndarray) or array.shape != tuple(shape):
        got = f"shape {array.shape}" if isinstance(array, np.ndarray) else type(array).__name__
        raise ValueError(f"{kind} {path} declares shape {tuple(shape)} in its header but its pickle holds {got}.")
    return array
