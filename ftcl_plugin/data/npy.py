"""Reading ``.npy`` files without ever running code stored in them.

``numpy.load(..., allow_pickle=True)`` unpickles object arrays with the full :mod:`pickle` machinery, which calls
whatever global a file names (``os.system`` included). W-TALC's real files are object arrays, of strings, lists of
numbers and per-video float arrays, so they need *some* unpickling. :func:`load_npy` reads plain arrays with
``allow_pickle=False`` and object arrays, only when asked, through the restricted unpickler of :mod:`._unpickle`: it resolves only the
names numpy's own array pickles use (under numpy 1.x and 2.x module paths), each checking its arguments, and a
few plain builtin types, and checks every state numpy would apply. Any other global is refused before it is
looked up, so it is never imported or called.

The file is opened without blocking and must be a regular file: a FIFO or a device named like a ``.npy`` file is
reported, not read.
"""

from __future__ import annotations

import io
import os
import stat
from typing import Any

import numpy as np

from ._unpickle import ADMITTED_GLOBALS, Refused, load_object_pickle

__all__ = ["ADMITTED_GLOBALS", "load_npy", "npy_header"]

#: The encodings ``numpy.load`` accepts for Python 2 pickles (others can corrupt numeric data).
ENCODINGS = ("ASCII", "latin1", "bytes")


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
    scalar reconstruction (``numpy.core``/``numpy._core`` paths, each checking its arguments) and the builtin types
    ``set``, ``frozenset``, ``complex``, ``bytearray`` (lists, tuples, dicts, strings, bytes, numbers and None need
    no global), with plain dtypes only and every array and dtype state checked against what numpy writes. That is
    enough for W-TALC's annotation and feature files; a pickle asking for any other global is refused before the
    global is imported, so nothing in the file runs, and numpy is never handed raw bytes as object pointers.

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
            while ``allow_objects`` is False, or a pickle that asks for anything the restricted unpickler refuses
            (the message names it: a global, a non-plain dtype, a state numpy would not write).

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
            array = load_object_pickle(handle, encoding)
        except Refused as refused:
            raise ValueError(
                f"{kind} {path} holds a pickle that asks for {refused.what}; it was refused "
                f"without being imported or called, because unpickling any global other than numpy's array "
                f"reconstruction and plain builtin types can run code stored in the file.") from None
        except Exception as error:  # a corrupt pickle can raise nearly anything
            raise ValueError(f"{kind} {path} is not a readable .npy object array: {type(error).__name__}: "
                             f"{error}") from None
    if not isinstance(array, np.ndarray) or array.shape != tuple(shape):
        got = f"shape {array.shape}" if isinstance(array, np.ndarray) else type(array).__name__
        raise ValueError(f"{kind} {path} declares shape {tuple(shape)} in its header but its pickle holds {got}.")
    return array
