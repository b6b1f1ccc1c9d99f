"""What an upstream written for numpy < 1.24, torch 1.x and CUDA needs to run here, installed for one session.

Each function records its changes in an :class:`~patches._undo._Undo`, so the session puts everything back on exit:

- :func:`numpy_compat`: the removed dtype aliases (``np.int``, ``np.float``, ...) and an ``np.load`` that unpickles
  only the files the upstream's loader is known to read as pickles, through the restricted unpickler of
  :func:`ftcl_plugin.data.load_npy`; every other call keeps ``allow_pickle=False``.
- :func:`joblib_in_process`: joblib's sequential backend, so work the upstream hands to ``joblib.Parallel`` runs in
  this process, where the aliases exist (worker processes would start without them).
- :func:`torch_compat`: ``.cuda()`` and CUDA default tensor types that follow the session's device.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import warnings
from pathlib import PurePath
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ftcl_plugin.data import load_npy

from ._checkout import UpstreamSpec
from ._stand_ins import usable
from ._undo import _Undo

__all__ = ["joblib_in_process", "numpy_compat", "torch_compat"]

#: Removed in numpy 1.24; the upstreams still use them as dtypes.
NUMPY_ALIASES = (("int", int), ("float", float), ("bool", bool), ("object", object), ("long", int))

# numpy's messages when allow_pickle=False meets a pickle (an object array, or a bare pickle file).
_PICKLE_REFUSALS = ("allow_pickle=False",)


def _matches(file: Any, patterns: tuple[str, ...]) -> bool:
    if not isinstance(file, (str, os.PathLike)) or not patterns:
        return False
    parts = PurePath(os.fspath(file)).parts
    for pattern in patterns:
        depth = pattern.count("/") + 1
        if len(parts) >= depth and fnmatch.fnmatchcase("/".join(parts[-depth:]), pattern):
            return True
    return False


def numpy_compat(undo: _Undo, spec: UpstreamSpec) -> None:
    """Restore numpy's removed aliases and install the session's ``np.load``.

    The ``np.load`` of the session reads a file matching ``spec.pickled`` (or any path whose caller passes
    ``allow_pickle=True``) with :func:`ftcl_plugin.data.load_npy` and ``allow_objects=True``: numpy's array
    reconstruction and plain builtin types only, so no file can run code. Every other call goes to numpy's own
    ``np.load`` with ``allow_pickle=False`` (numpy's default), and a pickle found there is refused with a
    ``ValueError`` that names the file.

    Args:
        undo: where the changes are recorded.
        spec: the upstream (its ``name`` and ``pickled`` patterns).
    """
    for alias, value in NUMPY_ALIASES:
        if alias not in vars(np):
            undo.setattr(np, alias, value)
    original_load = np.load
    if spec.pickled:
        why = (f"it unpickles only the files the upstream's own loader reads as pickles ({', '.join(spec.pickled)}), "
               f"through a restricted unpickler that cannot run code")
    else:
        why = f"the {spec.name} upstream reads no pickled file"

    def load(file: Any, mmap_mode: Any = None, allow_pickle: bool = False, fix_imports: bool = True,
             encoding: str = "ASCII", **kwargs: Any) -> Any:
        if _matches(file, spec.pickled) or (allow_pickle and isinstance(file, (str, os.PathLike))):
            # the absolute path, so a message about a file the upstream named relative to its cwd is usable
            return load_npy(os.path.abspath(file), allow_objects=True, encoding=encoding,
                            kind=f"The {spec.name} upstream's file")
        try:
            return original_load(file, mmap_mode, False, fix_imports, encoding, **kwargs)
        except ValueError as error:
            if not any(text in str(error) for text in _PICKLE_REFUSALS):
                raise
            where = os.path.abspath(file) if isinstance(file, (str, os.PathLike)) else repr(file)
            raise ValueError(f"{where} holds pickled data, which the {spec.name} session does not unpickle ({why}). "
                             f"A feature file must be a plain numeric array.") from None

    undo.setattr(np, "load", load)


def joblib_in_process(undo: _Undo) -> None:
    """Make ``joblib.Parallel`` (with no explicit backend) run its tasks sequentially in this process.

    ACM-Net's and CoLA's evaluators call ``Parallel(n_jobs=...)``; joblib's default backend starts worker processes,
    which import the upstream's modules afresh, without the session's numpy aliases, and fail with
    ``module 'numpy' has no attribute 'float'``. Nothing is done when joblib is not installed (the session's
    stand-in is sequential already).

    Args:
        undo: where the change is recorded (the previous joblib configuration comes back on undo).
    """
    if not usable("joblib"):
        return
    import joblib

    # parallel_config is joblib >= 1.3; parallel_backend is what older releases (ACM-Net pins 0.17) have.
    configure = getattr(joblib, "parallel_config", None) or joblib.parallel_backend
    stack = contextlib.ExitStack()
    stack.enter_context(configure(backend="sequential"))
    undo.call(stack.close)


def torch_compat(undo: _Undo, device: torch.device) -> None:
    """Put back the process's default tensor type on undo, and on a non-CUDA ``device`` redirect ``.cuda()``.

    Args:
        undo: where the changes are recorded.
        device: where the upstream's ``.cuda()`` calls should put tensors and modules.
    """
    original_set_default = torch.set_default_tensor_type
    default_type, default_dtype = torch.empty(0).type(), torch.get_default_dtype()

    def restore_default_type() -> None:
        # W-TALC sets a process-wide default tensor type at import; put back what the process had.
        if torch.empty(0).type() != default_type:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # set_default_tensor_type is deprecated since torch 2.1
                original_set_default(default_type)
        torch.set_default_dtype(default_dtype)

    undo.call(restore_default_type)
    if device.type == "cuda":
        return  # the upstream's own CUDA calls are what the user asked for

    def tensor_cuda(tensor: Tensor, *args: Any, non_blocking: bool = False, **kwargs: Any) -> Tensor:
        return tensor.to(device, non_blocking=non_blocking)

    def module_cuda(module: nn.Module, *args: Any, **kwargs: Any) -> nn.Module:
        return module.to(device)

    undo.setattr(torch.Tensor, "cuda", tensor_cuda)
    undo.setattr(nn.Module, "cuda", module_cuda)

    def set_default_tensor_type(kind: Any) -> None:
        # W-TALC sets 'torch.cuda.FloatTensor' process-wide at import; on CPU keep the CPU type of that dtype.
        name = kind if isinstance(kind, str) else f"{kind.__module__}.{kind.__name__}"
        if ".cuda." in name:
            torch.set_default_dtype(getattr(torch, name.rsplit(".", 1)[1]).dtype)
            return
        original_set_default(kind)

    undo.setattr(torch, "set_default_tensor_type", set_default_tensor_type)
