"""Every input check of the public API and its message, in one place.

Checks run at public entry points only. Messages follow one pattern: name the argument, say what was
expected, say what was received, e.g. "`features_a` must have shape (P, L, D), but got (4, 16)."

When each kind of check runs:

- **Metadata checks** (type, shape, dtype, device) and checks of plain Python numbers always run.
- **Value checks** read tensor values: labels are multi-hot 0/1, ``is_positive`` is bool or 0/1, lengths lie
  in [1, L], features are finite, attention holds no NaN. On a CPU tensor reading values costs nothing
  extra, so they **always run on CPU tensors**; on any other device (CUDA, ...) a read forces a host-device
  synchronisation, so they run there only when the caller passes ``validate_args=True``
  (:func:`reads_values` is that rule). Without them a bad value on a GPU is not caught, but the kernels still
  never index out of bounds (they clamp lengths into [0, L]).

Sections below are grouped by the layer that uses them; a check used by two layers lives in the common
section so copies never drift.
"""

from __future__ import annotations

import importlib
import math
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
                 strict_minimum: bool = False, integer: bool = False, allow_infinite: bool = False) -> None:
    """Raise ``TypeError`` for a non-number (bools are refused) and ``ValueError`` outside the range.

    NaN is always refused; ``inf`` and ``-inf`` too unless ``allow_infinite`` (a weight, temperature or
    threshold of inf only ever turns into NaN or inf further on).
    """
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "an int" if integer else "a number"
        raise TypeError(f"`{name}` must be {kind}, but got {type(value).__name__}.")
    if value != value:  # NaN
        raise ValueError(f"`{name}` must not be NaN.")
    if not allow_infinite and value in (math.inf, -math.inf):
        raise ValueError(f"`{name}` must be finite, but got {value}.")
    if minimum is not None and (value < minimum or (strict_minimum and value == minimum)):
        relation = ">" if strict_minimum else ">="
        raise ValueError(f"`{name}` must be {relation} {minimum}, but got {value}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"`{name}` must be <= {maximum}, but got {value}.")


def check_choice(value: Any, name: str, choices: Sequence[str]) -> None:
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"`{name}` must be one of {options}, but got {value!r}.")


def reads_values(value: torch.Tensor, validate_args: bool) -> bool:
    """Whether the value checks of ``value`` run: always on CPU (free there), elsewhere only if asked."""
    return validate_args or value.device.type == "cpu"


def _first_value(value: torch.Tensor, bad: torch.Tensor) -> str:
    """The first offending entry of ``value`` (where ``bad``), as the message shows it."""
    entry = value[bad].reshape(-1)[0].item()
    return f"{entry:g}" if isinstance(entry, float) else str(entry)


def check_length_values(lengths: torch.Tensor, name: str, maximum: int) -> None:
    """Value check: every length lies in [1, ``maximum``] (0 would leave an empty sequence, more overflows)."""
    if not lengths.numel():
        return
    if maximum < 1:
        raise ValueError(f"`{name}` must lie in [1, L], but the padded size L is 0; pass None instead.")
    if bool((lengths < 1).any()) or bool((lengths > maximum).any()):
        raise ValueError(f"`{name}` must lie in [1, {maximum}], but got values in "
                         f"[{int(lengths.min())}, {int(lengths.max())}].")


def check_lengths(lengths: Any, name: str, count: int, maximum: int, reference: torch.Tensor,
                  validate_args: bool) -> torch.Tensor:
    """Check a (P,) integer tensor of true lengths inside padded matrices of size ``maximum``."""
    check_tensor(lengths, name)
    if lengths.dim() != 1 or lengths.shape[0] != count:
        raise ValueError(f"`{name}` must have shape ({count},), but got {_fmt_shape(lengths.shape)}.")
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool or lengths.dtype.is_complex:
        raise TypeError(f"`{name}` must be an integer tensor, but got dtype {str(lengths.dtype).replace('torch.', '')}.")
    check_same_device(lengths, name, reference, "the score matrices")
    if reads_values(lengths, validate_args):
        check_length_values(lengths, name, maximum)
    return lengths


def _finite_rows(value: torch.Tensor) -> torch.Tensor:
    """``value.shape[:-1]`` bool: rows without NaN or inf, from a max and a min over the last dim.

    NaN propagates through both and only a non-finite entry makes either non-finite. On CPU this takes about
    an eighth of the time of ``isfinite(value).all(-1)`` and a sixth of ``aminmax(value, dim=-1)`` (measured on
    (16, 30, 2048) and (16, 750, 2048) float32 batches, one thread).
    """
    return torch.isfinite(value.amax(dim=-1)) & torch.isfinite(value.amin(dim=-1))


def _raise_not_finite(value: torch.Tensor, name: str, where: tuple[int, ...]) -> None:
    row = value[where]
    bad = ~torch.isfinite(row)
    raise ValueError(f"`{name}` must be finite, but holds {row[bad][0].item()} at index "
                     f"{where + (int(bad.nonzero()[0]),)}.")


def check_finite(value: torch.Tensor, name: str, valid: torch.Tensor | None = None) -> None:
    """Value check: raise ``ValueError`` on NaN or inf, only where ``valid`` (a mask of ``value.shape[:-1]``)."""
    if not value.numel() or not value.shape[-1]:
        return
    if valid is None:
        # one global min/max pass (NaN and inf show in it) is the fast path; rows are searched only to word
        # the error
        low, high = torch.aminmax(value)
        if bool(torch.isfinite(low) & torch.isfinite(high)):
            return
        bad = ~torch.isfinite(value).all(dim=-1)
    else:
        bad = ~_finite_rows(value) & valid
        if not bool(bad.any()):
            return
    _raise_not_finite(value, name, tuple(int(i) for i in bad.nonzero()[0]))


def check_multi_hot(labels: torch.Tensor, name: str = "labels") -> None:
    """Value check: every entry is 0 or 1 (soft or smoothed labels would count as present)."""
    if labels.dtype == torch.bool or not labels.numel():
        return
    bad = ~((labels == 0) | (labels == 1))
    if bool(bad.any()):
        raise ValueError(f"`{name}` must be multi-hot (every entry 0 or 1), but got {_first_value(labels, bad)}; "
                         f"binarise soft or smoothed labels first, e.g. `{name} > 0.5`.")

# ---- kernels (functional: DP score matrices) ----

DP_DTYPES = ("float32", "float64")
# Smoothing temperatures the DP kernels accept besides 0 (the hard max); docs/kernels.md gives the reasons:
# the tables hold S / gamma, which needs 1 / gamma and S / gamma to stay well inside float64, and outside
# this range the smooth max is either the hard max to within 1e-4 per cell or dominated by its own bias.
GAMMA_RANGE = (1e-4, 1e4)


def check_gamma(gamma: Any, name: str = "gamma") -> None:
    """Raise unless ``gamma`` is 0 (hard max) or a smoothing temperature within :data:`GAMMA_RANGE`."""
    check_number(gamma, name, minimum=0.0)
    low, high = GAMMA_RANGE
    if gamma != 0 and not low <= gamma <= high:
        raise ValueError(f"`{name}` must be 0 (the hard max) or lie in [{low:g}, {high:g}], but got {gamma!r}.")


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
    if (attention.shape[0] == features.shape[0] and attention.shape[1] == features.shape[2]
            and attention.shape[1] != features.shape[1]):
        raise ValueError(f"`features` must have shape (B, T, D) with T = {attention.shape[1]} as in `attention` "
                         f"{_fmt_shape(attention.shape)}, but got {_fmt_shape(features.shape)}, which looks "
                         "like (B, D, T); pass `features.transpose(1, 2)`.")
    if tuple(attention.shape) != tuple(features.shape[:2]):
        raise ValueError(f"`attention` must have shape (B, T) = {_fmt_shape(features.shape[:2])} to match "
                         f"`features`, but got {_fmt_shape(attention.shape)}.")
    check_same_device(attention, "attention", features, "features")
    if lengths is not None:
        check_integer_tensor(lengths, "lengths", (features.shape[0],), "(B,)", features, "features")
    if not reads_values(features, validate_args):
        return
    valid = None
    if lengths is not None:
        check_length_values(lengths, "lengths", features.shape[1])
        valid = torch.arange(features.shape[1], device=features.device)[None, :] < lengths[:, None]
    # NaN sorts above every score, so a NaN snippet would be picked as the top action without a word
    nan = torch.isnan(attention) if valid is None else torch.isnan(attention) & valid
    if bool(nan.any()):
        video, snippet = (int(i) for i in nan.nonzero()[0])
        raise ValueError(f"`attention` must not be NaN, but is NaN at video {video}, snippet {snippet}.")
    # The selectors check the snippets they read (check_read_finite) whenever values are read; asking
    # explicitly also scans every snippet, read or not.
    if validate_args:
        check_finite(features, "features", valid)


def check_read_finite(pieces: Sequence[torch.Tensor], sources: Sequence[torch.Tensor], real: torch.Tensor) -> None:
    """Value check: the (B, K, D) snippets a selector read are finite in its real slots ``real`` (B, K).

    A NaN snippet that a loss reads does not always reach the loss value (the paper's FSD loss masks the
    negative pairs out) but always poisons the gradient, so it is refused here, naming the snippet.
    """
    for piece, source in zip(pieces, sources):
        if not piece.numel():
            continue
        bad = ~_finite_rows(piece) & real
        if bool(bad.any()):
            video, slot = (int(i) for i in bad.nonzero()[0])
            row = piece[video, slot]
            raise ValueError(f"`features` must be finite where it is read, but video {video}, snippet "
                             f"{int(source[video, slot])} holds {row[~torch.isfinite(row)][0].item()}.")


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
    if reads_values(labels, validate_args):
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


def check_is_positive(is_positive: Any, count: int, reference: torch.Tensor, validate_args: bool = False) -> None:
    """Check the (P,) pair labels: bool or exactly 0/1 numbers, on ``reference``'s device."""
    check_tensor(is_positive, "is_positive")
    if is_positive.dim() != 1 or is_positive.shape[0] != count:
        raise ValueError(f"`is_positive` must have shape (P,) = ({count},), but got {_fmt_shape(is_positive.shape)}.")
    if is_positive.dtype.is_complex:
        raise TypeError("`is_positive` must be a bool or real tensor, but got a complex dtype.")
    check_same_device(is_positive, "is_positive", reference, "features_a")
    if is_positive.dtype != torch.bool and reads_values(is_positive, validate_args):
        bad = ~((is_positive == 0) | (is_positive == 1))
        if bool(bad.any()):
            raise ValueError(f"`is_positive` must be bool or hold only 0 and 1, but got "
                             f"{_first_value(is_positive, bad)}; binarise it first, e.g. `is_positive > 0.5`.")
