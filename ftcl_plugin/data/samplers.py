"""Batch samplers that put same-class pairs of videos in every batch.

In-batch pair mining (:class:`ftcl_plugin.PairMiner`) needs positives. Random batches of 16 THUMOS14 videos
(20 classes) almost always contain one, but ActivityNet has 200 classes and a random batch of 16 usually has
none. :class:`ClassPairSampler` pairs videos that share a class before batching, so every batch holds one, and
every video appears once per epoch. :class:`SimilarPairSampler` builds batches as W-TALC does: a few same-class
pairs at fixed positions, then random videos, all drawn with replacement.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import torch
from torch import Tensor

from .._checks import check_choice, check_flag, check_ndim, check_number, check_tensor

__all__ = ["ClassPairSampler", "SimilarPairSampler"]


class ClassPairSampler:
    """Batch sampler (pass it as ``DataLoader(dataset, batch_sampler=...)``) with a positive pair per batch.

    Each epoch shuffles the videos, pairs each with a not yet paired video that shares a class with it
    (``positive_rule="shared_class"``) or has the identical label set (``"identical_labels"``, for
    ``FTCL(variant="official")``), shuffles the pairs and leftover videos, and deals one pair to every batch
    before filling the batches with the rest. Every video appears once per epoch, so an epoch has
    ``ceil(N / batch_size)`` batches (``floor`` with ``drop_last``). If there are fewer pairs than batches, a
    batch without a pair gets one extra video drawn from the dataset as a partner for one of its videos
    (replacing its last video when the batch is full), so a few videos may appear twice in such an epoch.

    Randomness comes from ``generator``; ``None`` means a private generator seeded with 0 (reproducible, and
    successive epochs still differ).

    Args:
        labels: Multi-hot labels of the whole dataset (e.g. ``dataset.labels``).
        batch_size: Videos per batch, ``>= 2``.
        generator: A CPU ``torch.Generator``; ``None`` means a private one seeded with 0.
        drop_last: Drop the last incomplete batch.
        positive_rule: ``"shared_class"`` or ``"identical_labels"``, as in :class:`ftcl_plugin.PairMiner`.

    Shape:
        - labels: (N, C), any real or bool dtype.

    Returns:
        Iterating yields one list of dataset indices per batch.

    Raises:
        TypeError: If ``labels`` is not a tensor or an option has the wrong type.
        ValueError: If ``labels`` is not 2-D, ``batch_size < 2``, or no two videos can form a pair.

    Example:
        >>> import torch
        >>> labels = torch.eye(4).repeat_interleave(2, dim=0)      # 4 classes, 2 videos each
        >>> sampler = ClassPairSampler(labels, batch_size=3, generator=torch.Generator().manual_seed(0))
        >>> batches = list(sampler)
        >>> len(batches) == len(sampler) == 3, sorted(i for b in batches for i in b) == list(range(8))
        (True, True)
        >>> all(any((labels[i] * labels[j]).sum() > 0 for i in b for j in b if i < j) for b in batches)
        True
    """

    def __init__(self, labels: Tensor, batch_size: int, *, generator: torch.Generator | None = None,
                 drop_last: bool = False,
                 positive_rule: Literal["shared_class", "identical_labels"] = "shared_class") -> None:
        check_tensor(labels, "labels")
        check_ndim(labels, "labels", 2, "(N, C)")
        check_number(batch_size, "batch_size", minimum=2, integer=True)
        check_flag(drop_last, "drop_last")
        check_choice(positive_rule, "positive_rule", ("shared_class", "identical_labels"))
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"`generator` must be a torch.Generator or None, but got {type(generator).__name__}.")
        present = (labels.detach().cpu() != 0)
        if positive_rule == "shared_class":
            groups_of = [row.nonzero().flatten().tolist() for row in present]
        else:
            keys: dict[tuple[int, ...], int] = {}
            groups_of = [[keys.setdefault(tuple(row.nonzero().flatten().tolist()), len(keys))]
                         if bool(row.any()) else [] for row in present]
        members: dict[int, list[int]] = {}
        for video, groups in enumerate(groups_of):
            for group in groups:
                members.setdefault(group, []).append(video)
        self._groups_of = groups_of
        self._members = {group: videos for group, videos in members.items() if len(videos) > 1}
        if not self._members:
            raise ValueError("`labels` must let at least two videos form a pair (share a class"
                             + (")" if positive_rule == "shared_class" else " set)") + ", but none do.")
        self.num_videos = labels.shape[0]
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.positive_rule = positive_rule
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_videos // self.batch_size
        return -(-self.num_videos // self.batch_size)

    def _permutation(self, items: list) -> list:
        return [items[i] for i in torch.randperm(len(items), generator=self.generator).tolist()]

    def _pairs(self) -> tuple[list[list[int]], list[int]]:
        pools = {group: self._permutation(videos) for group, videos in self._members.items()}
        cursor = dict.fromkeys(pools, 0)
        paired = [False] * self.num_videos
        pairs, singles = [], []
        for video in torch.randperm(self.num_videos, generator=self.generator).tolist():
            if paired[video]:
                continue
            partner = None
            for group in self._permutation([g for g in self._groups_of[video] if g in pools]):
                pool = pools[group]
                while cursor[group] < len(pool) and (paired[pool[cursor[group]]] or pool[cursor[group]] == video):
                    cursor[group] += 1
                if cursor[group] < len(pool):
                    partner = pool[cursor[group]]
                    break
            if partner is None:
                singles.append(video)
            else:
                paired[video] = paired[partner] = True
                pairs.append([video, partner])
        return pairs, singles

    def _random_partner(self, video: int) -> int | None:
        groups = [g for g in self._groups_of[video] if g in self._members]
        if not groups:
            return None
        group = groups[int(torch.randint(len(groups), (1,), generator=self.generator))]
        others = [v for v in self._members[group] if v != video]
        return others[int(torch.randint(len(others), (1,), generator=self.generator))]

    def _has_pair(self, batch: list[int]) -> bool:
        seen: set[int] = set()
        for video in batch:
            for group in self._groups_of[video]:
                if group in seen:
                    return True
                seen.add(group)
        return False

    def _ensure_pair(self, batch: list[int]) -> None:
        """Give a batch without a pair a partner for one of its videos (or a whole random pair)."""
        for index, video in enumerate(batch):
            partner = self._random_partner(video)
            if partner is None:
                continue
            if len(batch) < self.batch_size:
                batch.append(partner)
            else:
                batch[len(batch) - 1 if index != len(batch) - 1 else len(batch) - 2] = partner
            return
        groups = list(self._members)
        group = groups[int(torch.randint(len(groups), (1,), generator=self.generator))]
        batch[:] = batch[:self.batch_size - 2] + self._permutation(self._members[group])[:2]

    def __iter__(self) -> Iterator[list[int]]:
        pairs, singles = self._pairs()
        count = len(self)
        sizes = [self.batch_size] * count
        if not self.drop_last and count:
            sizes[-1] = self.num_videos - (count - 1) * self.batch_size
        batches: list[list[int]] = [[] for _ in sizes]
        dealt = 0
        for batch, size in zip(batches, sizes):
            if size >= 2 and dealt < len(pairs):
                batch.extend(pairs[dealt])
                dealt += 1
        rest = [video for unit in self._permutation(pairs[dealt:] + [[v] for v in singles]) for video in unit]
        position = 0
        for batch, size in zip(batches, sizes):
            room = size - len(batch)
            batch.extend(rest[position:position + room])
            position += room
        for batch in batches:
            if not self._has_pair(batch):
                self._ensure_pair(batch)
            yield batch


class SimilarPairSampler:
    """W-TALC's batch construction (sujoyp/wtalc-pytorch ``video_dataset.py``, ``load_data``), as a batch sampler.

    Each batch is drawn independently: ``num_pairs`` classes uniformly **with replacement** among the classes that
    have a video, for each class two videos uniformly with replacement among that class's videos (so a pair can be
    one video twice), placed at positions (0, 1), (2, 3), ...; then ``batch_size - 2 * num_pairs`` videos drawn
    uniformly with replacement from the whole dataset. A pair is guaranteed to share a class, not to have identical
    labels. W-TALC draws from every class and fails on a class without videos; here such classes are skipped.

    W-TALC counts iterations, not epochs; one pass of this sampler yields ``num_batches`` batches (default
    ``ceil(N / batch_size)``, so a pass draws about N videos, like an epoch).

    Args:
        labels: Multi-hot labels of the whole dataset (e.g. ``dataset.labels``).
        batch_size: Videos per batch (W-TALC: 10).
        num_pairs: Same-class pairs at the front of each batch (W-TALC: 3), ``2 * num_pairs <= batch_size``.
        num_batches: Batches per pass (``None``: ``ceil(N / batch_size)``).
        generator: A CPU ``torch.Generator``; ``None`` means a private one seeded with 0.

    Shape:
        - labels: (N, C), any real or bool dtype.

    Returns:
        Iterating yields one list of dataset indices per batch.

    Raises:
        TypeError: If ``labels`` is not a tensor or ``generator`` is not a ``torch.Generator``.
        ValueError: If ``labels`` is not 2-D or has no labelled video, or the sizes are out of range.

    Example:
        >>> import torch
        >>> labels = torch.eye(4).repeat_interleave(2, dim=0)      # 4 classes, 2 videos each
        >>> sampler = SimilarPairSampler(labels, batch_size=5, num_pairs=2, generator=torch.Generator().manual_seed(0))
        >>> batches = list(sampler)
        >>> len(batches) == len(sampler) == 2, all(len(b) == 5 for b in batches)
        (True, True)
        >>> all(bool((labels[b[0]] * labels[b[1]]).sum() > 0) and bool((labels[b[2]] * labels[b[3]]).sum() > 0)
        ...     for b in batches)
        True
    """

    def __init__(self, labels: Tensor, batch_size: int, *, num_pairs: int = 3, num_batches: int | None = None,
                 generator: torch.Generator | None = None) -> None:
        check_tensor(labels, "labels")
        check_ndim(labels, "labels", 2, "(N, C)")
        check_number(batch_size, "batch_size", minimum=1, integer=True)
        check_number(num_pairs, "num_pairs", minimum=0, maximum=batch_size // 2, integer=True)
        if num_batches is not None:
            check_number(num_batches, "num_batches", minimum=1, integer=True)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"`generator` must be a torch.Generator or None, but got {type(generator).__name__}.")
        present = labels.detach().cpu() != 0
        self._members = [column.nonzero().flatten() for column in present.T if bool(column.any())]
        if num_pairs and not self._members:
            raise ValueError("`labels` must give at least one class a video to draw pairs from, but no video has a "
                             "label.")
        self.num_videos = labels.shape[0]
        self.batch_size = batch_size
        self.num_pairs = num_pairs
        self.num_batches = num_batches if num_batches is not None else -(-self.num_videos // batch_size)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def __len__(self) -> int:
        return self.num_batches

    def _draw(self, high: int, count: int) -> list[int]:
        return torch.randint(high, (count,), generator=self.generator).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.num_batches):
            batch: list[int] = []
            for group in self._draw(len(self._members), self.num_pairs):
                videos = self._members[group]
                batch.extend(int(videos[i]) for i in self._draw(len(videos), 2))
            batch.extend(self._draw(self.num_videos, self.batch_size - 2 * self.num_pairs))
            yield batch
