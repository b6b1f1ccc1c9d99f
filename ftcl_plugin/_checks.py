"""Every input check of the public API and its message, in one place.

Checks run at public entry points only. Cheap metadata checks (type, shape, dtype, device) always run;
checks that read tensor values (and so force a device sync) run only when the caller asks for them with
``validate_args=True``. Messages follow one pattern: name the argument, say what was expected, say what
was received, e.g. "`features_a` must have shape (P, L, D), but got (4, 16)."

Sections below are grouped by the layer that uses them; a check used by two layers lives in the common
section so copies never drift.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

# --------------------------------------------------------------------------------------------------
# common
# --------------------------------------------------------------------------------------------------

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _fmt_shape(shape: Iterable[int]) -> str:
    dims = tuple(int(d) for d in shape)
    return "(" + ", ".join(str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"


def check_tensor(value: Any, name: str) -> torch.Tensor:
    """Raise ``TypeError`` unless ``value`` is a tensor; return it."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, but got {type(value).__name__}.")
    return value


def check_ndim(value: torch.Tensor, name: str, ndim: int, layout: str) -> None:
    """Raise ``ValueError`` unless ``value`` has ``ndim`` dims; ``layout`` reads like "(P, M, N)"."""
    if value.dim() != ndim:
        raise ValueError(f"`{name}` must have shape {layout}, but got {_fmt_shape(value.shape)}.")


def check_floating(value: torch.Tensor, name: str, dtypes: Sequence[torch.dtype] = FLOAT_DTYPES) -> None:
    """Raise ``TypeError`` unless ``value`` has one of the floating ``dtypes``."""
    if value.dtype not in dtypes:
        allowed = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(
            f"`{name}` must be a floating tensor ({allowed}), but got dtype {str(value.dtype).replace('torch.', '')}."
        )


def check_same_shape(value: torch.Tensor, name: str, reference: torch.Tensor, reference_name: str) -> None:
    if value.shape != reference.shape:
        raise ValueError(
            f"`{name}` must have the same shape as `{reference_name}` {_fmt_shape(reference.shape)}, "
            f"but got {_fmt_shape(value.shape)}."
        )


def check_same_device(value: torch.Tensor, name: str, reference: torch.Tensor, reference_name: str) -> None:
    if value.device != reference.device:
        raise ValueError(
            f"`{name}` must be on the same device as `{reference_name}` ({reference.device}), "
            f"but got {value.device}."
        )


def check_same_dtype(value: torch.Tensor, name: str, reference: torch.Tensor, reference_name: str) -> None:
    if value.dtype != reference.dtype:
        raise TypeError(
            f"`{name}` must have the same dtype as `{reference_name}` ({str(reference.dtype).replace('torch.', '')}), "
            f"but got {str(value.dtype).replace('torch.', '')}."
        )


def check_number(value: Any, name: str, *, minimum: float | None = None, maximum: float | None = None,
                 strict_minimum: bool = False, integer: bool = False) -> None:
    """Raise ``TypeError`` for a non-number (bools are refused) and ``ValueError`` outside the range."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "an int" if integer else "a number"
        raise TypeError(f"`{name}` must be {kind}, but got {type(value).__name__}.")
    if value != value:  # NaN
        raise ValueError(f"`{name}` must not be NaN.")
    if minimum is not None and (value < minimum or (strict_minimum and value == minimum)):
        relation = ">" if strict_minimum else ">="
        raise ValueError(f"`{name}` must be {relation} {minimum}, but got {value}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"`{name}` must be <= {maximum}, but got {value}.")


def check_choice(value: Any, name: str, choices: Sequence[str]) -> None:
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"`{name}` must be one of {options}, but got {value!r}.")


def check_lengths(lengths: Any, name: str, count: int, maximum: int, reference: torch.Tensor,
                  validate_args: bool) -> torch.Tensor:
    """Check a (P,) integer tensor of true lengths inside padded matrices of size ``maximum``."""
    check_tensor(lengths, name)
    if lengths.dim() != 1 or lengths.shape[0] != count:
        raise ValueError(f"`{name}` must have shape ({count},), but got {_fmt_shape(lengths.shape)}.")
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool or lengths.dtype.is_complex:
        raise TypeError(f"`{name}` must be an integer tensor, but got dtype {str(lengths.dtype).replace('torch.', '')}.")
    check_same_device(lengths, name, reference, "the score matrices")
    if validate_args and lengths.numel() and (bool((lengths < 1).any()) or bool((lengths > maximum).any())):
        raise ValueError(f"`{name}` must lie in [1, {maximum}], but got values in "
                         f"[{int(lengths.min())}, {int(lengths.max())}].")
    return lengths


def check_finite(value: torch.Tensor, name: str) -> None:
    """Value check (syncs the device): raise ``ValueError`` on NaN or inf."""
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"`{name}` must be finite, but contains NaN or inf.")


def check_multi_hot(labels: torch.Tensor, name: str = "labels") -> None:
    """Value check (syncs the device): every entry is 0 or 1."""
    if labels.numel() and not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError(f"`{name}` must be multi-hot (every entry 0 or 1), but got other values.")
