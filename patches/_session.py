"""One upstream checkout at a time: importable, runnable on today's stack, and forgotten afterwards."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

from ._checkout import UpstreamError, UpstreamSpec, check_checkout
from ._compat import joblib_in_process, numpy_compat, torch_compat
from ._stand_ins import STAND_INS, usable
from ._undo import _Undo

__all__ = ["UpstreamSession", "session_factory"]

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

    session.__doc__ = (f"An :class:`~patches._session.UpstreamSession` for a {spec.short} checkout (enter it with "
                       "``with``); ``device`` is where the upstream's ``.cuda()`` calls put tensors, "
                       "``allow_unsupported`` warns instead of raising on another commit.")
    return session


class UpstreamSession:
    """Context manager that makes one upstream checkout importable, runnable on today's stack, and then forgets it.

    On entry: checks the checkout (:func:`check_checkout`), puts it first on ``sys.path``, sets aside any already
    imported module whose name the upstream uses (``model``, ``utils``, ``config``, ...), restores the numpy aliases
    the upstream uses (``np.int``, ``np.float``, ...), installs an ``np.load`` that unpickles only the files of
    ``spec.pickled`` and only through :func:`ftcl_plugin.data.load_npy`'s restricted unpickler (``allow_pickle``
    stays False for everything else), runs ``joblib.Parallel`` work in this process (sequential backend) for
    upstreams that use joblib, makes ``.cuda()`` and CUDA default tensor types follow ``device`` when it is not a
    CUDA device, and installs no-op stand-ins for missing loggers (wandb, tensorboard_logger, tensorboardX,
    torch.utils.tensorboard) and progress or table helpers (:mod:`patches._compat`). On exit everything is undone
    and every module imported from the checkout is removed from ``sys.modules``. Only one session can be active
    per process.

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
            numpy_compat(self._undo, self.spec)
            torch_compat(self._undo, self.device)
            if "joblib" in self.spec.optional:
                joblib_in_process(self._undo)
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
