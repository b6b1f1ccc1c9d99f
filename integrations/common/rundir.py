"""Run folders: one run per folder, locked while a run writes into it.

A run folder holds the files of exactly one run, described by its ``config.json`` (the resolved config plus a
``run`` table: FTCL on or off, epochs, ``--init-from``, ``--best-on-test``). :func:`claim` is the only way in:

* it takes the folder's lock (``.lock``, an ``fcntl.flock`` on a file holding the owner's pid, host, start time and
  command). The kernel drops the lock when its process dies, even by SIGKILL, so a lock file left by a dead run is
  recognised (its lock is free), reported and reused: never a guess from a pid;
* it compares the folder's ``config.json`` with the new run's, key by key, on the keys that change what the run
  computes (:func:`fingerprint`). A different run is refused with the differing keys listed, unless
  ``overwrite`` (then the old run's files are deleted first); the same run starts over, or continues with
  ``resume``, which refuses any difference;
* it writes the new ``config.json`` before any other file, so whatever a killed run leaves behind belongs to the
  run its ``config.json`` names.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePath
from typing import Any, Literal

from .files import RunError, write_json

__all__ = ["LOCK_NAME", "RUN_FILES", "RunFolderError", "claim", "clear_run", "differences", "fingerprint",
           "folder_lock", "read_record"]

LOCK_NAME = ".lock"
#: Every name a run writes at the top of its folder (training, ``--compare`` and ``--upstream`` runs); ``--overwrite``
#: deletes these, the checkpoints a run writes, and run sub-folders (``--compare`` arms), nothing else.
RUN_FILES = ("metrics.csv", "predictions.json", "table.md", "table.json", "plot.png", "checkpoints", "compare.md",
             "compare.json", "upstream.json", "upstream.log", "upstream", "stpn_data", "config.json")
CHECKPOINT_FILES = ("last.pt", "best.pt", "last.tmp")
#: Keys that never count: the row label and the data path as typed (``meta.data_root`` identifies the data).
IGNORED_KEYS = ("run.label", "meta.data")
#: Keys a resumed run may change: the step cap of this invocation.
RESUMABLE_KEYS = ("train.iterations",)

State = Literal["new", "same", "replaced", "resumed"]


class RunFolderError(RunError):
    """An output folder that cannot take this run: in use, holding another run, or not a folder."""


# ---------------------------------------------------------------------------------------------------------------
# the lock


_HELD: dict[Path, list[int]] = {}  # resolved folder -> [fd, depth]: nested claims in one process share the lock


def _describe(holder: Mapping[str, Any]) -> str:
    parts = [f"pid {holder.get('pid', '?')}"]
    if holder.get("host") and holder.get("host") != socket.gethostname():
        parts.append(f"on {holder['host']}")
    if holder.get("started"):
        parts.append(f"started {holder['started']}")
    if holder.get("command"):
        parts.append(f"`{holder['command']}`")
    return ", ".join(parts)


def _read_holder(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 65536)
    try:
        holder = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        holder = {"pid": "unknown"}
    return holder if isinstance(holder, dict) else {"pid": "unknown"}


def _make_folder(folder: Path) -> None:
    for path in (folder, *folder.parents):
        if path.exists() or path.is_symlink():
            if not path.is_dir():
                raise RunFolderError(f"{path} is a file, not a folder; choose another output folder.")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunFolderError(f"cannot create the output folder {folder}: {error.strerror or error}.") from None


def _acquire(folder: Path, wait: bool) -> int:
    _make_folder(folder)
    path = folder / LOCK_NAME
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise RunFolderError(f"cannot write into {folder}: {error.strerror or error}.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            if not wait:
                os.close(fd)
                raise RunFolderError(f"{folder} is in use by another run ({_describe(holder)}); wait for it to end "
                                     "or choose another output folder.") from None
            print(f"waiting for {folder}: in use by {_describe(holder)}", file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
        # The owner deletes the lock file before letting go, so a lock won on a file no longer at `path` is a
        # lock on nothing: start again with the file now there.
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    previous = _read_holder(fd)
    if previous:
        # Its lock was free, so the process that wrote this is gone (a kill, a crash, a power cut).
        print(f"note: {folder} was locked by a run that is no longer running ({_describe(previous)}); its lock is "
              "cleared and its files are checked before this run writes.", file=sys.stderr)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": " ".join(sys.argv)}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))
    os.fsync(fd)
    return fd


@contextlib.contextmanager
def folder_lock(folder: Path, *, wait: bool = False) -> Iterator[None]:
    """Hold ``folder``'s lock (creating the folder) for the ``with`` block; re-entrant within one process.

    Args:
        folder: the run folder.
        wait: block until a running owner ends instead of refusing (runs shared between experiment tables).

    Raises:
        RunFolderError: if another live process holds it (without ``wait``), or the folder cannot be created.
    """
    folder = Path(folder)
    key = folder.resolve()
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    fd = _acquire(folder, wait)
    _HELD[key] = [fd, 1]
    try:
        yield
    finally:
        del _HELD[key]
        path = folder / LOCK_NAME
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                os.unlink(path)  # while still locked: a waiter then retries on a fresh file
        os.close(fd)


# ---------------------------------------------------------------------------------------------------------------
# what a folder holds


def read_record(folder: Path) -> dict[str, Any] | None:
    """The ``config.json`` of the run in ``folder``, or ``None`` when absent, unreadable or not a run's.

    A run's ``config.json`` has a ``run`` and a ``meta`` table; a ``config.json`` of something else is not
    taken for one (and so never deleted by ``--overwrite``).
    """
    try:
        record = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    if isinstance(record, dict) and isinstance(record.get("run"), dict) and isinstance(record.get("meta"), dict):
        return record
    return None


def _flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, Mapping):
            flat.update(_flatten(item, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = item
    return flat


def fingerprint(record: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of a run's ``config.json`` that change what it computes, flattened to ``"section.key"``.

    Everything counts except: ``run.label`` (a row name), ``meta.data`` (the data path as typed; the data is
    identified by the name of ``meta.data_root``, the resolved folder, so the same data on another machine or
    mount matches; for the built-in dataset that name holds preset, size, difficulty, layout and generator
    version), the ``[plot]`` table, and, when the record has ``run.epochs``, ``train.epochs`` and the
    ``[compare]`` table (the epochs the run trains are ``run.epochs``). A run without FTCL (``run.ftcl`` false)
    ignores the ``[ftcl]`` table.

    Args:
        record: a ``config.json`` as a dict.

    Returns:
        ``{"section.key": value}`` with values as JSON stores them.

    Example:
        >>> fingerprint({"optim": {"lr": 0.1}, "run": {"label": "x", "ftcl": False}, "ftcl": {"variant": "paper"}})
        {'optim.lr': 0.1, 'run.ftcl': False}
    """
    flat = _flatten(json.loads(json.dumps(record, default=str)))
    dropped = set(IGNORED_KEYS)
    prefixes: tuple[str, ...] = ("plot.",)
    if "run.epochs" in flat:
        dropped.add("train.epochs")
        flat.setdefault("run.best_on_test", False)  # runs recorded before the key existed did not use it
        prefixes += ("compare.",)
    if flat.get("run.ftcl") is False:
        prefixes += ("ftcl.",)
    kept = {k: v for k, v in flat.items() if k not in dropped and not k.startswith(prefixes)}
    if isinstance(kept.get("meta.data_root"), str):
        kept["meta.data_root"] = PurePath(kept["meta.data_root"]).name
    return kept


def differences(old: Mapping[str, Any], new: Mapping[str, Any], *, resume: bool = False) -> list[str]:
    """The keys that differ between two runs' ``config.json``, as ``"key: old -> new"`` lines.

    Args:
        old: the folder's record.
        new: the new run's record.
        resume: allow the keys a resumed run may change (``train.iterations``).

    Returns:
        The lines, sorted by key (empty when the runs are the same).

    Example:
        >>> differences({"train": {"seed": 0}}, {"train": {"seed": 1}, "optim": {"lr": 0.1}})
        ['optim.lr: (absent) -> 0.1', 'train.seed: 0 -> 1']
    """
    a, b = fingerprint(old), fingerprint(new)
    if a.get("run.ftcl") is False or b.get("run.ftcl") is False:
        # With FTCL off on one side, run.ftcl says it all; its [ftcl] settings are noise.
        a, b = ({k: v for k, v in x.items() if not k.startswith("ftcl.")} for x in (a, b))
    keys = sorted(set(a) | set(b))
    if resume:
        keys = [k for k in keys if k not in RESUMABLE_KEYS]
    missing = object()

    def show(value: Any) -> str:
        return "(absent)" if value is missing else json.dumps(value)

    return [f"{k}: {show(a.get(k, missing))} -> {show(b.get(k, missing))}" for k in keys
            if a.get(k, missing) != b.get(k, missing)]


def _run_entries(folder: Path) -> list[str]:
    """What in ``folder`` a run wrote: the names of :data:`RUN_FILES` present and run sub-folders."""
    if not folder.is_dir():
        return []
    names = []
    for name in RUN_FILES:
        path = folder / name
        if name == "checkpoints":
            # Only the checkpoints a run writes count (an empty checkpoints/ holds nothing of a run).
            if any((path / item).exists() for item in CHECKPOINT_FILES):
                names.append(name)
        elif name == "config.json":
            if path.exists() and read_record(folder) is not None:
                names.append(name)
        elif path.exists():
            names.append(name)
    for child in sorted(folder.iterdir()):
        if child.is_dir() and not child.is_symlink() and child.name not in RUN_FILES and read_record(child):
            names.append(child.name + "/")
    return names


def _remove_temporaries(folder: Path) -> None:
    """Temporary files of writes that a killed run never finished (``.<name>.<random>.tmp``)."""
    for parent, names in ((folder, RUN_FILES), (folder / "checkpoints", CHECKPOINT_FILES)):
        if parent.is_dir():
            for name in names:
                for path in parent.glob(f".{name}.*.tmp"):
                    with contextlib.suppress(OSError):
                        path.unlink()
    with contextlib.suppress(OSError):
        (folder / "checkpoints" / "last.tmp").unlink()  # the name older versions wrote last.pt through


def clear_run(folder: Path) -> None:
    """Delete the run in ``folder``: :data:`RUN_FILES` and run sub-folders, ``config.json`` last (so a kill
    midway leaves a smaller run, never files without their ``config.json``); other files are kept.

    Args:
        folder: a run folder whose lock the caller holds.

    Raises:
        RunFolderError: if a run sub-folder is in use by another process.
    """
    folder = Path(folder)
    _remove_temporaries(folder)
    for name in _run_entries(folder):
        path = folder / name.rstrip("/")
        if name == "config.json":
            continue
        if name.endswith("/"):
            with folder_lock(path):
                shutil.rmtree(path)
        elif name == "checkpoints":
            for item in CHECKPOINT_FILES:
                (path / item).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                path.rmdir()  # kept if it holds anything else
        elif path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    if read_record(folder) is not None:
        (folder / "config.json").unlink(missing_ok=True)


def _listing(lines: list[str], limit: int = 12) -> str:
    shown = [f"  {line}" for line in lines[:limit]]
    if len(lines) > limit:
        shown.append(f"  ... and {len(lines) - limit} more")
    return "\n".join(shown)


def _check(folder: Path, record: Mapping[str, Any], *, resume: bool, overwrite: bool) -> State:
    entries = _run_entries(folder)
    stored = read_record(folder)
    if stored is None and (folder / "config.json").exists():
        raise RunFolderError(f"{folder / 'config.json'} is not the config.json of a run of these scripts (or is "
                             "damaged); choose another output folder (it is not deleted, even with --overwrite).")
    if resume:
        if stored is None:
            raise RunFolderError(f"cannot --resume: {folder} holds no run with a readable config.json.")
        changed = differences(stored, record, resume=True)
        if changed:
            raise RunFolderError(
                f"cannot --resume the run in {folder} with different settings (saved -> this command):\n"
                f"{_listing(changed)}\nResume with the settings it was started with, or start a new run in another "
                "output folder (or pass --overwrite instead of --resume to replace it).")
        return "resumed"
    if not entries or (stored is None and all(name.endswith("/") for name in entries)):
        # Nothing of a run, or only sub-folders that are runs of their own (each with its own config.json).
        return "new"
    if stored is not None and not differences(stored, record):
        return "same"
    if overwrite:
        return "replaced"
    if stored is None:
        raise RunFolderError(
            f"{folder} holds files of a run without a readable config.json ({', '.join(entries[:6])}); choose "
            "another output folder, or pass --overwrite to delete them first.")
    raise RunFolderError(
        f"{folder} holds another run; its settings differ from this command's (saved -> this command):\n"
        f"{_listing(differences(stored, record))}\nChoose another output folder, or pass --overwrite to delete that "
        "run's files first.")


@contextlib.contextmanager
def claim(folder: Path, record: Mapping[str, Any], *, resume: bool = False, overwrite: bool = False,
          wait: bool = False, clear_same: bool = True) -> Iterator[State]:
    """Own ``folder`` for one run: lock it, check what it holds, make room, write ``config.json``.

    Args:
        folder: the output folder (created if needed).
        record: the run's ``config.json`` content (resolved config plus a ``run`` table).
        resume: continue the run in ``folder``; refused when any counted key differs (:func:`fingerprint`),
            except ``train.iterations``.
        overwrite: delete a different run found in ``folder`` instead of refusing.
        wait: wait for a live owner to end instead of refusing.
        clear_same: delete the files of the same run (a rerun starts clean); ``False`` keeps them (a
            ``--compare`` folder, whose arms are run folders checked on their own).

    Yields:
        ``"new"`` (no run there), ``"same"`` (the same run, started over), ``"replaced"`` (a different run,
        deleted with ``overwrite``) or ``"resumed"``.

    Raises:
        RunFolderError: with the reason and, for a different run, every differing key with both values.
    """
    folder = Path(folder)
    if resume and read_record(folder) is None:
        raise RunFolderError(f"cannot --resume: {folder} holds no run with a readable config.json.")
    with folder_lock(folder, wait=wait):
        _remove_temporaries(folder)
        state = _check(folder, record, resume=resume, overwrite=overwrite)
        if state == "same" and clear_same and (folder / "checkpoints" / "last.pt").is_file() and not (
                folder / "table.json").is_file():
            print(f"note: {folder} holds an unfinished run with these settings; starting it over (add --resume to "
                  "continue it instead).", file=sys.stderr)
        if state == "replaced" or (state == "same" and clear_same):
            clear_run(folder)
        write_json(folder / "config.json", record, sort_keys=True, default=str)
        yield state
