"""Shared machinery of the upstream patches: checkout checks, one-upstream-per-process sessions, compatibility
shims for today's numpy/torch, and the FTCL attachment (hooks, optimizer parameter group, loss wrapper).

Nothing here runs at import time: every change to the process (``sys.path``, ``sys.modules``, numpy and torch
attributes) is made by :class:`UpstreamSession` on entry and undone on exit.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import os
import subprocess
import sys
import types
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ._stand_ins import STAND_INS, usable

__all__ = [
    "ALLOW_UNSUPPORTED_ENV",
    "FTCLAttachment",
    "UpstreamError",
    "UpstreamSession",
    "UpstreamSpec",
    "check_checkout",
    "check_signature",
    "git_head",
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
    """

    name: str
    repository: str
    commit: str
    files: Mapping[str, str]
    modules: tuple[str, ...]
    optional: tuple[str, ...] = ()

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


# ---------------------------------------------------------------------------------------------------------------


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


_ACTIVE: list[UpstreamSession] = []


def _is_under(path: str | None, root: Path) -> bool:
    if not isinstance(path, str) or not path:
        return False
    try:
        return Path(path).resolve().is_relative_to(root)
    except (OSError, ValueError):
        return False


def session_factory(spec: UpstreamSpec) -> Callable[..., UpstreamSession]:
    """The ``session`` function of the patch for ``spec``: every patch module exposes the same one.

    Args:
        spec: the upstream the sessions check for.

    Returns:
        ``session(root, *, device="cpu", allow_unsupported=False)``, which builds the (not yet entered)
        :class:`UpstreamSession` for a checkout of that upstream; enter it with ``with``.
    """

    def session(root: str | os.PathLike[str], *, device: str | torch.device = "cpu",
                allow_unsupported: bool = False) -> UpstreamSession:
        return UpstreamSession(root, spec, device=device, allow_unsupported=allow_unsupported)

    session.__doc__ = (f"An :class:`~patches._common.UpstreamSession` for a {spec.short} checkout (enter it with "
                       "``with``); ``device`` is where the upstream's ``.cuda()`` calls put tensors, "
                       "``allow_unsupported`` warns instead of raising on another commit.")
    return session


class UpstreamSession:
    """Context manager that makes one upstream checkout importable, runnable on today's stack, and then forgets it.

    On entry: checks the checkout (:func:`check_checkout`), puts it first on ``sys.path``, sets aside any already
    imported module whose name the upstream uses (``model``, ``utils``, ``config``, ...), restores the numpy aliases
    the upstream uses (``np.int``, ``np.float``, ...), makes ``np.load`` default to ``allow_pickle=True``, makes
    ``.cuda()`` and CUDA default tensor types follow ``device`` when it is not a CUDA device, and installs no-op
    stand-ins for missing loggers (wandb, tensorboard_logger, tensorboardX, torch.utils.tensorboard) and progress
    or table helpers. On exit everything is undone and every module imported from the checkout is removed from
    ``sys.modules``. Only one session can be active per process.

    Args:
        root: the checkout.
        spec: the upstream it must be.
        device: where the upstream's ``.cuda()`` calls should put tensors and modules.
        allow_unsupported: see :func:`check_checkout`.

    Raises:
        UpstreamError: from :func:`check_checkout`, or if another session is active.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        spec: UpstreamSpec,
        *,
        device: str | torch.device = "cpu",
        allow_unsupported: bool = False,
    ) -> None:
        self.root = Path(root).expanduser().resolve()
        self.spec = spec
        self.device = torch.device(device)
        self.allow_unsupported = allow_unsupported
        self.identified_by = ""
        self.stand_ins: list[str] = []
        self._undo = _Undo()
        self._set_aside: dict[str, types.ModuleType] = {}
        self._modules_before: set[str] = set()

    # -- entry / exit ------------------------------------------------------------------------------------------
    def __enter__(self) -> UpstreamSession:
        if _ACTIVE:
            raise UpstreamError(
                f"an upstream session for {_ACTIVE[0].spec.name} ({_ACTIVE[0].root}) is already active; the four "
                "upstreams share module names, so run one per process (or leave the first `with` block first)."
            )
        self.identified_by = check_checkout(self.root, self.spec, allow_unsupported=self.allow_unsupported)
        _ACTIVE.append(self)
        try:
            self._set_aside_colliding()
            self._modules_before = set(sys.modules)
            sys.path.insert(0, str(self.root))
            self._undo.call(self._remove_from_path)
            self._numpy_compat()
            self._torch_compat()
            self._install_stand_ins()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Undo every change (idempotent)."""
        self._undo.undo()
        self._purge_modules()
        sys.modules.update(self._set_aside)
        self._set_aside = {}
        if self in _ACTIVE:
            _ACTIVE.remove(self)

    def _remove_from_path(self) -> None:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(self.root))

    def _set_aside_colliding(self) -> None:
        for name in list(sys.modules):
            top = name.split(".", 1)[0]
            if top in self.spec.modules:
                self._set_aside[name] = sys.modules.pop(name)

    def _purge_modules(self) -> None:
        # Only modules imported during the session can come from the checkout (the colliding ones were set aside).
        for name in [n for n in sys.modules if n not in self._modules_before]:
            module = sys.modules[name]
            top = name.split(".", 1)[0]
            from_checkout = _is_under(getattr(module, "__file__", None), self.root)
            new_colliding = top in self.spec.modules and name not in self._set_aside
            if from_checkout or new_colliding or name in self.stand_ins:
                del sys.modules[name]
        self.stand_ins = []

    # -- compatibility -----------------------------------------------------------------------------------------
    def _numpy_compat(self) -> None:
        # Removed in numpy 1.24; the upstreams still use them as dtypes.
        for alias, value in (("int", int), ("float", float), ("bool", bool), ("object", object), ("long", int)):
            if alias not in vars(np):
                self._undo.setattr(np, alias, value)
        original_load = np.load

        def load(*args: Any, **kwargs: Any) -> Any:
            # The annotation arrays of W-TALC are pickled object arrays (numpy >= 1.16.3 refuses them by default).
            kwargs.setdefault("allow_pickle", True)
            return original_load(*args, **kwargs)

        self._undo.setattr(np, "load", load)

    def _torch_compat(self) -> None:
        original_set_default = torch.set_default_tensor_type
        default_type, default_dtype = torch.empty(0).type(), torch.get_default_dtype()

        def restore_default_type() -> None:
            # W-TALC sets a process-wide default tensor type at import; put back what the process had.
            if torch.empty(0).type() != default_type:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # set_default_tensor_type is deprecated since torch 2.1
                    original_set_default(default_type)
            torch.set_default_dtype(default_dtype)

        self._undo.call(restore_default_type)
        if self.device.type == "cuda":
            return  # the upstream's own CUDA calls are what the user asked for
        device = self.device

        def tensor_cuda(tensor: Tensor, *args: Any, non_blocking: bool = False, **kwargs: Any) -> Tensor:
            return tensor.to(device, non_blocking=non_blocking)

        def module_cuda(module: nn.Module, *args: Any, **kwargs: Any) -> nn.Module:
            return module.to(device)

        self._undo.setattr(torch.Tensor, "cuda", tensor_cuda)
        self._undo.setattr(nn.Module, "cuda", module_cuda)

        def set_default_tensor_type(kind: Any) -> None:
            # W-TALC sets 'torch.cuda.FloatTensor' process-wide at import; on CPU keep the CPU type of that dtype.
            name = kind if isinstance(kind, str) else f"{kind.__module__}.{kind.__name__}"
            if ".cuda." in name:
                torch.set_default_dtype(getattr(torch, name.rsplit(".", 1)[1]).dtype)
                return
            original_set_default(kind)

        self._undo.setattr(torch, "set_default_tensor_type", set_default_tensor_type)

    def _install_stand_ins(self) -> None:
        for package in self.spec.optional:
            if not usable(package):
                for name, module in STAND_INS[package]().items():
                    sys.modules[name] = module
                    self.stand_ins.append(name)

    # -- helpers for the patches -------------------------------------------------------------------------------
    def import_module(self, name: str) -> types.ModuleType:
        """Import ``name`` from the checkout, turning a failure into an :class:`UpstreamError` that says what.

        Args:
            name: dotted module name inside the checkout (``"model.ACMNet"``).

        Returns:
            The module.

        Raises:
            UpstreamError: if the import fails.
        """
        try:
            module = importlib.import_module(name)
        except Exception as error:
            raise UpstreamError(
                f"importing {name!r} from {self.root} ({self.spec.short}) failed: {type(error).__name__}: {error}"
            ) from error
        if name.split(".", 1)[0] in self.spec.modules and not _is_under(getattr(module, "__file__", None), self.root):
            raise UpstreamError(f"{name!r} resolved to {module.__file__}, not to the checkout {self.root}.")
        return module

    @contextlib.contextmanager
    def argv(self, arguments: Sequence[str]) -> Iterator[None]:
        """Temporarily replace ``sys.argv[1:]`` for upstream code that parses the command line as it runs."""
        saved = sys.argv
        sys.argv = [str(self.root / "upstream"), *arguments]
        try:
            yield
        finally:
            sys.argv = saved

    @contextlib.contextmanager
    def cwd(self, path: str | os.PathLike[str]) -> Iterator[None]:
        """Temporarily change the working directory for upstream code that uses relative paths."""
        saved = os.getcwd()
        os.chdir(path)
        try:
            yield
        finally:
            os.chdir(saved)


# ---------------------------------------------------------------------------------------------------------------


@dataclass
class FTCLAttachment:
    """FTCL wired into an upstream model, optimizer and loss; :meth:`remove` undoes it.

    Attributes:
        ftcl: the FTCL module (``None`` when the run is the plain baseline).
        captured: the tensors the forward hooks caught in the last training forward pass: ``"embedding"``
            ``(B, T, D)`` and ``"attention"`` ``(B, T)``.
        history: the FTCL loss of every training step, as floats (for the metrics CSV), before the warm-up factor.
        calls: how many times each hook fired (for tests).
        warmup_steps: ramp the FTCL weight linearly over this many training steps, ``min(1, (n + 1) / warmup)``
            at the ``n``-th (0-based), as the clean-room runner does; 0 = full weight from the first step.
    """

    ftcl: nn.Module | None
    warmup_steps: int = 0
    captured: dict[str, Tensor] = field(default_factory=dict)
    history: list[float] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    _handles: list[Any] = field(default_factory=list)
    _undo: _Undo = field(default_factory=_Undo)

    def hook(self, module: nn.Module, key: str, transform: Callable[[Tensor], Tensor]) -> None:
        """Catch ``transform(output)`` of ``module`` under ``key`` in training forward passes.

        Args:
            module: the upstream submodule whose output is the embedding or the attention.
            key: ``"embedding"`` or ``"attention"``.
            transform: maps the module's raw output to ``(B, T, D)`` / ``(B, T)``.
        """

        def forward_hook(mod: nn.Module, inputs: Any, output: Any) -> None:
            if mod.training and torch.is_grad_enabled():
                self.captured[key] = transform(output)
                self.calls[key] = self.calls.get(key, 0) + 1

        self._handles.append(module.register_forward_hook(forward_hook))

    def add_to_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Add the FTCL parameters to ``optimizer`` as a new group with the first group's lr and weight decay.

        Args:
            optimizer: the upstream's optimizer, already built over the model's parameters.
        """
        if self.ftcl is None:
            return
        params = [p for p in self.ftcl.parameters() if p.requires_grad]
        if not params:
            return
        first = optimizer.param_groups[0]
        group = {"params": params, "name": "ftcl"}
        for key in ("lr", "weight_decay"):
            if key in first:
                group[key] = first[key]
        optimizer.add_param_group(group)

    def ftcl_loss(self, labels: Tensor, *, lengths: Tensor | None = None) -> Tensor | None:
        """FTCL on the captured embedding and attention, or ``None`` outside training / without FTCL.

        The captured tensors are consumed so that a later evaluation pass cannot reuse them.

        Args:
            labels: ``(B, C)`` multi-hot labels of the batch the hooks saw.
            lengths: ``(B,)`` true lengths for zero-padded batches.

        Returns:
            The scalar loss, or ``None``.
        """
        if self.ftcl is None or "embedding" not in self.captured or "attention" not in self.captured:
            return None
        embedding = self.captured.pop("embedding")
        attention = self.captured.pop("attention")
        labels = labels.to(device=embedding.device, dtype=embedding.dtype)
        if lengths is None:
            loss = self.ftcl(embedding, attention, labels)
        else:
            loss = self.ftcl(embedding, attention, labels, lengths=lengths.to(embedding.device))
        self.history.append(float(loss.detach()))
        if self.warmup_steps > 0:
            loss = loss * min(1.0, len(self.history) / self.warmup_steps)
        return loss

    def replace(self, obj: object, name: str, value: Any) -> None:
        """Set ``obj.name = value`` until :meth:`remove`."""
        self._undo.setattr(obj, name, value)

    def remove(self) -> None:
        """Remove the hooks and undo every replacement (the optimizer keeps its FTCL group)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._undo.undo()
        self.captured.clear()
