"""Is this the supported upstream? Commit or content fingerprint, file presence, class and function signatures.

What a patch expects of a checkout is an :class:`UpstreamSpec`; every mismatch is an :class:`UpstreamError` that
names what was expected.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ALLOW_UNSUPPORTED_ENV",
    "UpstreamError",
    "UpstreamSpec",
    "check_checkout",
    "check_signature",
    "git_head",
    "require_attribute",
]

#: Setting this environment variable to ``1`` turns the commit/fingerprint check into a warning on stderr.
ALLOW_UNSUPPORTED_ENV = "FTCL_ALLOW_UNSUPPORTED_UPSTREAM"


class UpstreamError(ValueError):
    """A checkout that is not the supported upstream: wrong commit, missing file, changed class or signature."""


@dataclass(frozen=True)
class UpstreamSpec:
    """What a patch expects of a checkout.

    Attributes:
        name: short name (``"acmnet"``, ``"cola"``, ``"wtalc"``, ``"stpn"``).
        repository: ``owner/name`` on GitHub.
        commit: the supported commit (40 hex digits).
        files: relative path -> sha256 of the file's bytes (CRLF folded to LF) at ``commit``; every file must exist,
            and without ``.git`` the hashes are the content fingerprint.
        modules: top-level module names the checkout's code imports from itself; they collide across the four
            repositories, so a session removes them from ``sys.modules`` on exit.
        optional: third-party packages the upstream imports but does not need on the patched paths (loggers,
            progress bars, table printers); a no-op stand-in replaces each one that is not installed.
        pickled: shell patterns (``fnmatch``) of the files the upstream's own loader reads as pickled object arrays,
            matched against a path's last two components (``"*-Annotations/*.npy"``); inside a session only these
            are unpickled, and only by :func:`ftcl_plugin.data.load_npy`'s restricted unpickler.
    """

    name: str
    repository: str
    commit: str
    files: Mapping[str, str]
    modules: tuple[str, ...]
    optional: tuple[str, ...] = ()
    pickled: tuple[str, ...] = ()

    @property
    def short(self) -> str:
        """``owner/name@abcdef0`` for messages."""
        return f"{self.repository}@{self.commit[:7]}"


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes().replace(b"\r\n", b"\n")).hexdigest()


def _resolve_ref(git_dir: Path, ref: str) -> str | None:
    loose = git_dir / ref
    if loose.is_file():
        return loose.read_text().strip()
    packed = git_dir / "packed-refs"
    if packed.is_file():
        for line in packed.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1] == ref:
                return parts[0]
    return None


def git_head(root: Path) -> str | None:
    """The commit checked out in ``root``, or ``None`` when ``root`` has no ``.git``.

    Reads ``.git/HEAD`` (and the ref it names) directly, falling back to ``git rev-parse`` for layouts this does not
    understand (worktrees, ``.git`` files of submodules).

    Args:
        root: the checkout's directory.

    Returns:
        40 hex digits, or ``None``.
    """
    dot_git = root / ".git"
    if not dot_git.exists():
        return None
    if dot_git.is_dir():
        head = (dot_git / "HEAD").read_text().strip() if (dot_git / "HEAD").is_file() else ""
        if head.startswith("ref:"):
            sha = _resolve_ref(dot_git, head.split(":", 1)[1].strip())
            if sha:
                return sha
        elif len(head) == 40:
            return head
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
        if done.returncode == 0:
            return done.stdout.strip()
    return None


def check_checkout(root: str | os.PathLike[str], spec: UpstreamSpec, *, allow_unsupported: bool = False) -> str:
    """Check that ``root`` is a checkout of ``spec`` at the supported commit.

    With a ``.git`` directory the checked-out commit must equal ``spec.commit`` (local edits are allowed; the class
    signatures are checked separately when the patch attaches). Without one (an archive, a copy), every file of
    ``spec.files`` must hash to its value at ``spec.commit``.

    Args:
        root: the checkout's directory.
        spec: what is expected.
        allow_unsupported: report a commit or fingerprint mismatch on stderr instead of raising (missing files
            still raise). Also enabled by the environment variable ``FTCL_ALLOW_UNSUPPORTED_UPSTREAM=1``.

    Returns:
        How the checkout was identified, e.g. ``"git HEAD 4d38dc6"`` or ``"content fingerprint of 6 files"``.

    Raises:
        UpstreamError: if the directory or a file is missing, or the commit/fingerprint differs.
    """
    path = Path(root).expanduser().resolve()
    allow_unsupported = allow_unsupported or os.environ.get(ALLOW_UNSUPPORTED_ENV, "") == "1"
    if not path.is_dir():
        raise UpstreamError(f"--upstream for {spec.name} expects a checkout of {spec.short}, but {path} is not a directory.")
    missing = [name for name in spec.files if not (path / name).is_file()]
    if missing:
        raise UpstreamError(
            f"{path} is not a checkout of {spec.short}: expected the file(s) {', '.join(missing)} "
            f"(the patch for {spec.name} reads {', '.join(spec.files)})."
        )
    head = git_head(path)
    if head is not None:
        if head == spec.commit:
            return f"git HEAD {head[:7]}"
        problem = f"{path} is checked out at {head[:12]}, but the {spec.name} patch supports only {spec.short} ({spec.commit})"
    else:
        changed = [name for name, digest in spec.files.items() if _file_sha256(path / name) != digest]
        if not changed:
            return f"content fingerprint of {len(spec.files)} files"
        problem = (
            f"{path} has no .git, and these files differ from {spec.short}: {', '.join(changed)} "
            "(their sha256 is compared with the pinned commit's)"
        )
    if allow_unsupported:
        sys.stderr.write(f"warning: {problem}; continuing because {ALLOW_UNSUPPORTED_ENV}=1.\n")
        return f"unsupported ({problem})"
    remedy = (f"Check out that commit (git -C {path} checkout {spec.commit})" if head is not None
              else f"Use the files of {spec.short}")
    raise UpstreamError(f"{problem}. {remedy} or set {ALLOW_UNSUPPORTED_ENV}=1 to try anyway.")


def check_signature(obj: Callable[..., Any], expected: Sequence[str], what: str, spec: UpstreamSpec) -> None:
    """Raise unless the leading parameter names of ``obj`` are ``expected`` (``self`` excluded).

    Args:
        obj: a function, method or class (its ``__init__``).
        expected: the parameter names, in order, that the pinned commit has.
        what: how to name ``obj`` in the message, e.g. ``"model/ACMNet.py: ACMNet.forward"``.
        spec: the upstream, for the message.

    Raises:
        UpstreamError: if the names differ.
    """
    target = obj.__init__ if isinstance(obj, type) else obj
    try:
        params = [p for p in inspect.signature(target).parameters if p != "self"]
    except (TypeError, ValueError) as error:
        raise UpstreamError(f"cannot read the signature of {what} ({error}); expected ({', '.join(expected)}).") from None
    if params[: len(expected)] != list(expected):
        raise UpstreamError(
            f"{what} has parameters ({', '.join(params)}), but the {spec.name} patch expects "
            f"({', '.join(expected)}) as at {spec.short}."
        )


def require_attribute(obj: object, name: str, what: str, spec: UpstreamSpec) -> Any:
    """``getattr(obj, name)``, or a clear :class:`UpstreamError` naming what the pinned commit has."""
    if not hasattr(obj, name):
        raise UpstreamError(f"{what} has no attribute {name!r}, which it has at {spec.short}.")
    return getattr(obj, name)
