"""Pair plumbing shared by the FSD and LCS losses: kernel dtypes and autocast, per-video indexing, unit rows
and their cosines, the release's mean difference, and the checks of the options both losses take."""

from __future__ import annotations

import contextlib
from typing import Any, Literal, Union

import torch
from torch import Tensor
from torch.nn import functional as F

from ._checks import check_integer_tensor, check_is_positive, check_ndim, check_tensor
from .measures import FSDSimilarity, LCSSimilarity, SoftDTWSimilarity

# A measure replacing a loss's own (``similarity=``): maps (P, M, N) cosines and lengths to (P,) scores.
Measure = Union[FSDSimilarity, LCSSimilarity, SoftDTWSimilarity]
MEASURES = (FSDSimilarity, LCSSimilarity, SoftDTWSimilarity)

Variant = Literal["paper", "official"]
VARIANTS = ("paper", "official")
# The release divides each sum by (count + 1e-10), so an empty subset contributes exactly 0.
RELEASE_COUNT_EPS = 1e-10
KERNEL_DTYPES = (torch.float32, torch.float64)


def to_kernel_dtype(value: Tensor) -> Tensor:
    """The DP kernels run in float32/float64; half-precision activations (autocast) are promoted."""
    return value if value.dtype in KERNEL_DTYPES else value.float()


def autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast disabled on ``device`` (a no-op context when it is not active there).

    Under ``torch.autocast`` the cosine products would run in float16/bfloat16 and feed the DP kernels, whose
    float32/float64 accumulation is what keeps long alignments exact; so the similarity and DP stage always
    runs in float32 or higher, whatever the host's autocast does.
    """
    if autocast_enabled(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no device argument
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def release_mean_difference(values: Tensor, positive: Tensor) -> Tensor:
    """``sum(neg) / (N_neg + 1e-10) - sum(pos) / (N_pos + 1e-10)``, the release's linear pair loss."""
    zero = torch.zeros_like(values)
    num_positive = positive.sum().to(values.dtype)
    num_negative = (~positive).sum().to(values.dtype)
    negative_mean = torch.where(positive, zero, values).sum() / (num_negative + RELEASE_COUNT_EPS)
    positive_mean = torch.where(positive, values, zero).sum() / (num_positive + RELEASE_COUNT_EPS)
    return negative_mean - positive_mean


def check_pair_indices(index_a: Tensor, index_b: Tensor, is_positive: Tensor, videos: Tensor,
                        validate_args: bool) -> None:
    check_tensor(index_a, "index_a")
    check_ndim(index_a, "index_a", 1, "(P,)")
    for name, value in (("index_a", index_a), ("index_b", index_b)):
        check_integer_tensor(value, name, (index_a.shape[0],), "(P,)", videos, "the video features")
    check_is_positive(is_positive, index_a.shape[0], videos, validate_args)


def take_lengths(lengths: Tensor | None, index: Tensor) -> Tensor | None:
    return None if lengths is None else lengths[index]


def video_rows(videos: Tensor, index: Tensor) -> Tensor:
    # index_select, not videos[index]: its backward is an index_add, much faster on CPU than the accumulating
    # index_put behind advanced indexing.
    return videos.index_select(0, index)


def unit_rows(features: Tensor, eps: float) -> Tensor:
    """Rows scaled to unit norm (norms clamped below at ``eps``), as ``cosine_similarity_matrix`` does."""
    # Normalising each video once and indexing the pairs afterwards spares the normalisation (and its backward)
    # of every per-pair copy; the unit rows, hence the cosines, are the same.
    return F.normalize(features, dim=-1, eps=eps)


def pair_cosines(unit_a: Tensor, unit_b: Tensor) -> Tensor:
    """(P, M, N) cosine similarities of unit rows (P, M, D) and (P, N, D), never in reduced precision."""
    with autocast_off(unit_a.device):
        return torch.bmm(to_kernel_dtype(unit_a), to_kernel_dtype(unit_b).transpose(1, 2))


def mean_length(lengths_a: Tensor | None, lengths_b: Tensor | None, size_a: int, size_b: int,
                 pairs: int) -> Tensor | float:
    """(M_p + N_p) / 2 per pair: the true lengths where given, the padded sizes otherwise."""
    if lengths_a is None and lengths_b is None:
        return (size_a + size_b) / 2
    first = lengths_a if lengths_a is not None else torch.full((pairs,), size_a, device=lengths_b.device)
    second = lengths_b if lengths_b is not None else torch.full((pairs,), size_b, device=first.device)
    return (first + second) / 2


def stack_parts(parts: list[Tensor | None]) -> Tensor | None:
    return None if parts[0] is None else torch.cat(parts)


def check_measure(similarity: Any, variant: str) -> None:
    if similarity is None:
        return
    if not isinstance(similarity, MEASURES):
        names = ", ".join(cls.__name__ for cls in MEASURES)
        raise TypeError(f"`similarity` must be None or one of {names}, but got {type(similarity).__name__}.")
    if variant != "paper":
        raise ValueError("`similarity` must be None with variant='official' (the release has no other measure).")
