"""The record every loader returns, the padded batch, and the collate function that builds it."""

from __future__ import annotations

from typing import NamedTuple

import torch


class VideoRecord(NamedTuple):
    """One video as a dataset returns it.

    Attributes:
        features: (T, D) float32 snippet features after temporal sampling (RGB half first, flow half second).
        label: (C,) float32 multi-hot video label, class ids from the sorted ground-truth class names.
        video: the video name (the key in ``gt.json``).
        num_snippets: the true snippet count L of the stored features, before sampling.
        duration: the video duration in seconds from the ground truth.

    Example:
        >>> import torch
        >>> record = VideoRecord(torch.zeros(4, 8), torch.tensor([0.0, 1.0]), "v1", 4, 2.56)
        >>> record.features.shape, record.num_snippets
        (torch.Size([4, 8]), 4)
    """

    features: torch.Tensor
    label: torch.Tensor
    video: str
    num_snippets: int
    duration: float


class VideoBatch(NamedTuple):
    """A zero-padded batch of :class:`VideoRecord` s built by :func:`collate_videos`.

    Attributes:
        features: (B, T, D) float32, zero beyond each video's length.
        labels: (B, C) float32 multi-hot.
        lengths: (B,) int64 number of valid rows of ``features`` per video (the sampled length).
        videos: the B video names.
        num_snippets: (B,) int64 true snippet counts before sampling (for time scaling at inference).
        durations: (B,) float64 durations in seconds.

    Example:
        >>> import torch
        >>> batch = collate_videos([VideoRecord(torch.ones(3, 2), torch.tensor([1.0]), "a", 3, 1.9)])
        >>> batch.lengths.tolist(), batch.videos
        ([3], ['a'])
    """

    features: torch.Tensor
    labels: torch.Tensor
    lengths: torch.Tensor
    videos: list[str]
    num_snippets: torch.Tensor
    durations: torch.Tensor


def collate_videos(records: list[VideoRecord]) -> VideoBatch:
    """Stack records of different lengths into one zero-padded batch with their lengths.

    Nothing is truncated: the batch is as long as its longest record. Use it as
    ``DataLoader(dataset, collate_fn=collate_videos)``.

    Args:
        records: a non-empty list of :class:`VideoRecord` with the same feature dim D and class count C.

    Shape:
        - output ``features``: (B, max_i T_i, D); ``labels``: (B, C); ``lengths``, ``num_snippets``,
          ``durations``: (B,).

    Returns:
        The :class:`VideoBatch`.

    Raises:
        ValueError: for an empty list, or records whose D or C differ.

    Example:
        >>> import torch
        >>> a = VideoRecord(torch.ones(2, 3), torch.tensor([1.0, 0.0]), "a", 2, 1.3)
        >>> b = VideoRecord(torch.ones(4, 3), torch.tensor([0.0, 1.0]), "b", 9, 5.9)
        >>> batch = collate_videos([a, b])
        >>> tuple(batch.features.shape), batch.lengths.tolist(), batch.num_snippets.tolist()
        ((2, 4, 3), [2, 4], [2, 9])
        >>> float(batch.features[0, 2:].abs().sum())
        0.0
    """
    if len(records) == 0:
        raise ValueError("`records` must contain at least one VideoRecord, but got an empty list.")
    dims = {int(r.features.shape[1]) for r in records}
    if len(dims) != 1:
        raise ValueError(f"All records must have the same feature dim D, but got {sorted(dims)}.")
    classes = {int(r.label.shape[0]) for r in records}
    if len(classes) != 1:
        raise ValueError(f"All records must have the same number of classes C, but got {sorted(classes)}.")
    lengths = torch.tensor([int(r.features.shape[0]) for r in records], dtype=torch.int64)
    features = torch.zeros(len(records), int(lengths.max()), dims.pop(), dtype=torch.float32)
    for i, record in enumerate(records):
        features[i, : record.features.shape[0]] = record.features
    return VideoBatch(
        features=features,
        labels=torch.stack([r.label.to(torch.float32) for r in records]),
        lengths=lengths,
        videos=[r.video for r in records],
        num_snippets=torch.tensor([int(r.num_snippets) for r in records], dtype=torch.int64),
        durations=torch.tensor([float(r.duration) for r in records], dtype=torch.float64),
    )
