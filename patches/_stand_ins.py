"""No-op stand-ins for packages the upstreams import only to log, print or show progress.

Each is installed in ``sys.modules`` by :class:`patches._session.UpstreamSession` only when the real package cannot be
imported, and removed when the session ends.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["STAND_INS", "usable"]


class _NoOp:
    """Accepts any call and attribute access and does nothing (a logger that logs nowhere)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _NoOp:
        return self

    def __getattr__(self, name: str) -> _NoOp:
        return self

    def __enter__(self) -> _NoOp:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _noop_function(*args: Any, **kwargs: Any) -> None:
    return None


def _module(name: str, *, package: bool = False, **attributes: Any) -> types.ModuleType:
    """A module named ``name`` holding ``attributes``."""
    # A real __spec__ keeps importlib.util.find_spec (which torch._dynamo calls on many names) working.
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=package)
    if package:
        module.__path__ = []  # type: ignore[attr-defined]
    for key, value in attributes.items():
        setattr(module, key, value)
    return module


def _tqdm(iterable: Any = None, *args: Any, **kwargs: Any) -> Any:
    return iterable if iterable is not None else _NoOp()


class _EasyDict(dict):
    """The attribute-access dict the ``easydict`` package provides."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


class _AsciiTable:
    """Plain ``|``-separated rendering for what ``terminaltables.AsciiTable`` draws."""

    def __init__(self, rows: Sequence[Sequence[object]], title: str | None = None) -> None:
        self.rows = [[str(cell) for cell in row] for row in rows]
        self.title = title
        self.justify_columns: dict[int, str] = {}

    @property
    def table(self) -> str:
        width = max((len(row) for row in self.rows), default=0)
        sizes = [max((len(row[i]) for row in self.rows if i < len(row)), default=0) for i in range(width)]
        lines = [] if self.title is None else [self.title]
        for row in self.rows:
            lines.append("| " + " | ".join(cell.center(sizes[i]) for i, cell in enumerate(row)) + " |")
        return "\n".join(lines)


def _delayed(function: Callable[..., Any]) -> Callable[..., tuple[Callable[..., Any], tuple, dict]]:
    def capture(*args: Any, **kwargs: Any) -> tuple[Callable[..., Any], tuple, dict]:
        return function, args, kwargs

    return capture


class _Parallel:
    """Sequential stand-in for ``joblib.Parallel``: same results, one process."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, tasks: Any) -> list[Any]:
        return [function(*args, **kwargs) for function, args, kwargs in tasks]


def _unavailable(package: str) -> Callable[..., Any]:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise ImportError(f"{package} is not installed; the upstream code path that needs it cannot run.")

    return fail


def _sklearn() -> dict[str, types.ModuleType]:
    metrics = _module("sklearn.metrics", average_precision_score=_unavailable("scikit-learn"))
    return {"sklearn": _module("sklearn", package=True, metrics=metrics), "sklearn.metrics": metrics}


def _placeholder(name: str) -> dict[str, types.ModuleType]:
    # Imported at the top of an upstream file but never used on the paths the patch drives.
    return {name: _module(name, package=True, __getattr__=_placeholder_attribute)}


def _placeholder_attribute(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    return _NoOp()


def _one(name: str, **attributes: Any) -> Callable[[], dict[str, types.ModuleType]]:
    return lambda: {name: _module(name, **attributes)}


#: Missing-package stand-ins: import name -> factory of the module(s) to install.
STAND_INS: dict[str, Callable[[], dict[str, types.ModuleType]]] = {
    "wandb": _one("wandb", init=_NoOp, log=_noop_function, watch=_noop_function, finish=_noop_function,
                  config=_NoOp()),
    "tensorboard_logger": _one("tensorboard_logger", Logger=_NoOp, configure=_noop_function,
                               log_value=_noop_function),
    "tensorboardX": _one("tensorboardX", SummaryWriter=_NoOp),
    "tqdm": _one("tqdm", tqdm=_tqdm, trange=lambda *args, **kwargs: range(*args)),
    "easydict": _one("easydict", EasyDict=_EasyDict),
    "terminaltables": _one("terminaltables", AsciiTable=_AsciiTable),
    "joblib": _one("joblib", Parallel=_Parallel, delayed=_delayed),
    "sklearn": _sklearn,
    "h5py": lambda: _placeholder("h5py"),
    "torchvision": lambda: _placeholder("torchvision"),
    "torch.utils.tensorboard": _one("torch.utils.tensorboard", SummaryWriter=_NoOp),
}


def _importable(name: str) -> bool:
    if name in sys.modules:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def usable(package: str) -> bool:
    """Whether ``package`` is installed *and* imports (``torch.utils.tensorboard`` needs ``tensorboard``).

    An installed package that fails to import counts as missing, so its stand-in is used: W-TALC's
    ``tensorboard_logger`` 0.1.0, for one, raises ``TypeError`` on import with protobuf >= 4.
    """
    # torch.utils.tensorboard exists in every torch but raises on import without the tensorboard package.
    if not _importable("tensorboard" if package == "torch.utils.tensorboard" else package):
        return False
    try:
        importlib.import_module(package)
    except Exception:  # a broken install can raise anything at import
        return False
    return True
