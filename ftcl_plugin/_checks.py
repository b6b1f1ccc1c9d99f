"""Every input check of the public API and its message, in one place.

Checks run at public entry points only. Cheap metadata checks (type, shape, dtype, device) always run;
checks that read tensor values (and so force a device sync) run only when the caller asks for them with
``validate_args=True``. Messages follow one pattern: name the argument, say what was expected, say what
was received, e.g. "`features_a` must have shape (P, L, D), but got (4, 16)."

Sections below are grouped by the layer that uses them; a check used by two layers lives in the common
section so copies never drift.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
else:
    class _Torch:
        """torch, imported on first use.

        The evaluator and the data tools use only the torch-free checks here (numbers, choices); importing
        torch for them would add seconds to every `ftcl-eval` and `ftcl-data` start.
        """

        def __getattr__(self, name: str) -> Any:
            return getattr(importlib.import_module("torch"), name)

    torch = _Torch()

# --------------------------------------------------------------------------------------------------
# common
# --------------------------------------------------------------------------------------------------

# dtype names as `str(tensor.dtype)` spells them without the "torch." prefix
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


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


def check_floating(value: torch.Tensor, name: str, dtypes: Sequence[str] = FLOAT_DTYPES) -> None:
    """Raise ``TypeError`` unless ``value`` has one of the floating ``dtypes`` (names such as "float32")."""
    got = str(value.dtype).replace("torch.", "")
    if got not in dtypes:
        raise TypeError(f"`{name}` must be a floating tensor ({', '.join(dtypes)}), but got dtype {got}.")


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

# ---- kernels (functional: DP score matrices) ----

DP_DTYPES = ("float32", "float64")


def check_score_matrix(value: Any, name: str, reference: torch.Tensor | None = None,
                       reference_name: str = "") -> torch.Tensor:
    """Check a (P, M, N) float32/float64 DP input; with ``reference``, also its shape, device and dtype."""
    check_tensor(value, name)
    check_ndim(value, name, 3, "(P, M, N)")
    check_floating(value, name, DP_DTYPES)
    if reference is not None:
        check_same_shape(value, name, reference, reference_name)
        check_same_device(value, name, reference, reference_name)
        check_same_dtype(value, name, reference, reference_name)
    return value


def check_sequence_features(features_a: Any, features_b: Any) -> None:
    """Check (P, M, D) and (P, N, D) float features that agree on P, D, dtype and device."""
    for name, value in (("features_a", features_a), ("features_b", features_b)):
        check_tensor(value, name)
        check_ndim(value, name, 3, "(P, L, D)")
        check_floating(value, name, DP_DTYPES)
    if features_b.shape[0] != features_a.shape[0] or features_b.shape[2] != features_a.shape[2]:
        raise ValueError(
            f"`features_b` must have shape ({features_a.shape[0]}, N, {features_a.shape[2]}) to match "
            f"`features_a` {_fmt_shape(features_a.shape)}, but got {_fmt_shape(features_b.shape)}."
        )
    check_same_device(features_b, "features_b", features_a, "features_a")
    check_same_dtype(features_b, "features_b", features_a, "features_a")


def check_scalar_tensor(value: torch.Tensor, name: str, reference: torch.Tensor, reference_name: str) -> None:
    """Check a 0-dim floating tensor on ``reference``'s device (e.g. a threshold computed from a batch)."""
    if value.dim() != 0:
        raise ValueError(f"`{name}` must be a number or a 0-dim tensor, but got shape {_fmt_shape(value.shape)}.")
    check_floating(value, name)
    check_same_device(value, name, reference, reference_name)


def check_flag(value: Any, name: str) -> None:
    """Raise ``TypeError`` unless ``value`` is a bool."""
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be a bool, but got {type(value).__name__}.")

# ---- roles and facade (selectors, miners, losses, FTCL) ----


def check_integer_tensor(value: Any, name: str, shape: tuple[int, ...], layout: str,
                         reference: torch.Tensor, reference_name: str) -> torch.Tensor:
    """Check an integer tensor of a fixed ``shape`` on ``reference``'s device (``layout`` reads like "(B,)")."""
    check_tensor(value, name)
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"`{name}` must have shape {layout} = {_fmt_shape(shape)}, but got {_fmt_shape(value.shape)}.")
    if value.dtype.is_floating_point or value.dtype == torch.bool or value.dtype.is_complex:
        raise TypeError(f"`{name}` must be an integer tensor, but got dtype {str(value.dtype).replace('torch.', '')}.")
    check_same_device(value, name, reference, reference_name)
    return value


def check_snippet_batch(features: Any, attention: Any, lengths: Any, validate_args: bool) -> None:
    """Check features (B, T, D), attention (B, T) and optional lengths (B,) of a (padded) video batch."""
    check_tensor(features, "features")
    check_ndim(features, "features", 3, "(B, T, D)")
    check_floating(features, "features")
    check_tensor(attention, "attention")
    check_ndim(attention, "attention", 2, "(B, T)")
    check_floating(attention, "attention")
    if features.shape[0] == 0:
        raise ValueError("`features` must hold at least one video, but got an empty batch (B = 0).")
    if features.shape[1] == 0:
        raise ValueError("`features` must hold at least one snippet per video, but got T = 0.")
    if tuple(attention.shape) != tuple(features.shape[:2]):
        raise ValueError(f"`attention` must have shape (B, T) = {_fmt_shape(features.shape[:2])} to match "
                         f"`features`, but got {_fmt_shape(attention.shape)}.")
    check_same_device(attention, "attention", features, "features")
    if lengths is not None:
        check_integer_tensor(lengths, "lengths", (features.shape[0],), "(B,)", features, "features")
        if validate_args and (bool((lengths < 1).any()) or bool((lengths > features.shape[1]).any())):
            raise ValueError(f"`lengths` must lie in [1, {features.shape[1]}], but got values in "
                             f"[{int(lengths.min())}, {int(lengths.max())}].")
    if validate_args:
        check_finite(features, "features")


def check_labels(labels: Any, batch: int, reference: torch.Tensor, validate_args: bool) -> None:
    """Check multi-hot labels (B, C): any real or bool dtype, ``reference``'s device; values only if asked."""
    check_tensor(labels, "labels")
    check_ndim(labels, "labels", 2, "(B, C)")
    if labels.dtype.is_complex:
        raise TypeError("`labels` must be a real or bool tensor, but got a complex dtype.")
    if labels.shape[0] != batch:
        raise ValueError(f"`labels` must have shape (B, C) with B = {batch}, but got {_fmt_shape(labels.shape)}.")
    if labels.shape[1] == 0:
        raise ValueError("`labels` must have at least one class column, but got C = 0.")
    check_same_device(labels, "labels", reference, "features")
    if validate_args:
        check_multi_hot(labels, "labels")


def check_k_fits(k: int, name: str, snippets: int) -> None:
    """Raise ``ValueError`` when a selector asks for more snippets than a video has (strict mode)."""
    if k > snippets:
        raise ValueError(f"`{name}` ({k}) must be <= the number of snippets T ({snippets}); "
                         "pass allow_short=True to take all T snippets instead.")


def check_pair_sequences(sequences: Sequence[tuple[str, Any]], feature_dim: int | None) -> None:
    """Check (P, L_i, D) float sequences that agree on P, D, dtype and device; D == ``feature_dim`` if given."""
    first_name, first = sequences[0]
    for name, value in sequences:
        check_tensor(value, name)
        check_ndim(value, name, 3, "(P, L, D)")
        check_floating(value, name)
    if feature_dim is not None and first.shape[2] != feature_dim:
        raise ValueError(f"`{first_name}` must have feature size D = {feature_dim}, but got "
                         f"{_fmt_shape(first.shape)}.")
    for name, value in sequences[1:]:
        if value.shape[0] != first.shape[0] or value.shape[2] != first.shape[2]:
            raise ValueError(f"`{name}` must have shape ({first.shape[0]}, L, {first.shape[2]}) to match "
                             f"`{first_name}` {_fmt_shape(first.shape)}, but got {_fmt_shape(value.shape)}.")
        check_same_device(value, name, first, first_name)
        check_same_dtype(value, name, first, first_name)
    for name, value in sequences:
        if value.shape[1] == 0:
            raise ValueError(f"`{name}` must hold at least one snippet per sequence, but got L = 0.")


def check_is_positive(is_positive: Any, count: int, reference: torch.Tensor) -> None:
    """Check the (P,) pair labels: bool or 0/1 numbers, on ``reference``'s device."""
    check_tensor(is_positive, "is_positive")
    if is_positive.dim() != 1 or is_positive.shape[0] != count:
        raise ValueError(f"`is_positive` must have shape (P,) = ({count},), but got {_fmt_shape(is_positive.shape)}.")
    if is_positive.dtype.is_complex:
        raise TypeError("`is_positive` must be a bool or real tensor, but got a complex dtype.")
    check_same_device(is_positive, "is_positive", reference, "features_a")
