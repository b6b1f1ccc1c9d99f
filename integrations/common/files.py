"""Every file the runners write or read back: atomic writes, and checkpoints read without running their code.

A file is written to a temporary name in its own folder, flushed to disk, then renamed over the target with
``os.replace``, so a reader (or a run killed mid-write) sees the old file or the new one, never a truncated one.
Checkpoints are read with ``torch.load(..., weights_only=True)``; a file that is not one is reported by name with
what is wrong, as a :class:`CheckpointError`.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import torch

__all__ = ["CheckpointError", "RunError", "atomic_file", "read_checkpoint", "save_checkpoint", "write_json",
           "write_text"]


class RunError(ValueError):
    """A user-facing problem with a run (its folder, checkpoint or data); the command line prints the message
    alone and exits with status 2."""


class CheckpointError(RunError):
    """A checkpoint that cannot be used: missing, truncated, corrupted, or not written by these scripts."""


def _file_mode() -> int:
    # mkstemp creates 0600 files; outputs get the permissions a plain open() would give them.
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


@contextlib.contextmanager
def atomic_file(path: Path, *, binary: bool = False, newline: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` in one step.

    The temporary file is named ``.<name>.<random>.tmp`` in the same folder (so the rename stays on one file
    system), flushed and fsynced before ``os.replace``; the folder is fsynced after, so the rename itself survives
    a crash. On any exception, ``KeyboardInterrupt`` included, the temporary file is removed and ``path`` is left
    as it was.

    Args:
        path: the file to write (its folder must exist).
        binary: open in binary mode.
        newline: passed to ``open`` in text mode (``""`` for the csv module).

    Yields:
        The open file.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     target = Path(folder) / "a.txt"
        ...     with atomic_file(target) as handle:
        ...         _ = handle.write("done\\n")
        ...     print(target.read_text(), sorted(p.name for p in Path(folder).iterdir()))
        done
         ['a.txt']
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)
        mode = "wb" if binary else "w"
        with os.fdopen(fd, mode, **({} if binary else {"newline": newline, "encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems do not fsync folders; the rename is still atomic
    finally:
        os.close(fd)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_file`).

    Args:
        path: the file.
        text: its new content.
    """
    with atomic_file(path) as handle:
        handle.write(text)


def write_json(path: Path, value: Any, *, indent: int | None = 2, sort_keys: bool = False,
               default: Any = float) -> None:
    """Write ``value`` as JSON (plus a final newline) to ``path`` atomically.

    Args:
        path: the file.
        value: what to write.
        indent: JSON indentation (``None``: one line).
        sort_keys: sort object keys.
        default: ``json.dumps``'s fallback for other types (default ``float``, for numpy scalars).
    """
    write_text(path, json.dumps(value, indent=indent, sort_keys=sort_keys, default=default) + "\n")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save(state)`` to ``path`` atomically.

    Args:
        path: the checkpoint file.
        state: tensors, plain containers and numbers (loadable with ``weights_only=True``).
    """
    with atomic_file(path, binary=True) as handle:
        torch.save(state, handle)


def read_checkpoint(path: Path, role: str, *, require: Sequence[str] = ()) -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(..., weights_only=True)`` and name the file in every failure.

    Torch's own messages for a bad file are long and may advise ``weights_only=False`` (which would run code from
    the file); they are replaced by one sentence saying what is wrong.

    Args:
        path: the checkpoint.
        role: how the user passed it, for the message (``"--init-from"``, ``"--resume"``).
        require: keys the checkpoint must hold (a run checkpoint's ``"optimizer"``, ``"step"``, ...).

    Returns:
        The loaded dict (a bare ``state_dict`` is a dict too).

    Raises:
        CheckpointError: if the file is missing, a folder, truncated, corrupted, holds Python objects besides
            tensors and plain containers, is not a dict, or lacks a required key.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{role}: {path} is a folder, not a checkpoint file.")
    if not path.is_file():
        raise CheckpointError(f"{role}: {path} does not exist.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols of foreign files
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "unsupported global" in str(error).lower():
            raise CheckpointError(
                f"{role}: {path} holds Python objects besides tensors and plain containers, so it is not loaded "
                "(loading it could run code from the file; only weights are read).") from None
        raise CheckpointError(f"{role}: {path} is not a readable checkpoint (truncated, corrupted, or not "
                              "written by torch.save).") from None
    except Exception:  # torch raises RuntimeError, KeyError, EOFError, ... for a damaged file
        raise CheckpointError(f"{role}: {path} is not a readable checkpoint (truncated, corrupted, or not written "
                              "by torch.save).") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{role}: {path} holds a {type(state).__name__}, not a checkpoint dict.")
    missing = [key for key in require if key not in state]
    if missing:
        raise CheckpointError(f"{role}: {path} is not a run checkpoint of these scripts (it has no "
                              f"{', '.join(map(repr, missing))}).")
    return state

