"""Pick positive and negative video pairs from the multi-hot labels of one batch.

The paper contrasts "video sequence pairs" whose ground truth ``delta`` says whether the two videos "have the
same action categories" (Eq. 7). A plugin only sees the host's batch, so pairs are mined in the batch: every
unordered pair ``(a, b)`` with ``a < b`` is a candidate, labelled positive or negative by a rule on the two
label sets, and negatives are subsampled (by default to as many as there are positives, as both code paths of
the authors' release do).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from ._checks import check_choice, check_flag, check_labels, check_number, check_tensor

__all__ = ["PairMiner", "Pairs", "PositiveRule"]

PositiveRule = Literal["shared_class", "identical_labels", "identical_single_label"]
_RULES = ("shared_class", "identical_labels", "identical_single_label")


class Pairs(NamedTuple):
    """Video pairs of one batch: ``(index_a[p], index_b[p])`` with ``index_a[p] < index_b[p]``.

    Shape:
        - index_a, index_b: (P,), int64, indices into the batch.
        - is_positive: (P,), bool; ``True`` for a positive pair, ``False`` for a negative pair.
    """

    index_a: Tensor
    index_b: Tensor
    is_positive: Tensor


class PairMiner(nn.Module):
    """Mine positive and negative pairs in a batch from its multi-hot labels.

    A pair is **negative** when the two label sets are disjoint. It is **positive** by ``positive_rule``:

    - ``"shared_class"`` (paper default): the videos share at least one class (the paper's "have the same
      action categories").
    - ``"identical_labels"``: the label sets are identical and non-empty (the release's offline pair set;
      default of ``variant="official"`` in :class:`~ftcl_plugin.FTCL`).
    - ``"identical_single_label"``: identical and exactly one class (the release's in-batch rule).

    Pairs that are neither (partial overlap under the identical rules) are dropped. A video without any label
    is never in a positive pair and is disjoint from every other video.

    Randomness (which negatives, and which positives under ``max_positive_pairs``, are kept) comes from
    ``generator``; with ``None`` the miner owns a generator seeded with 0, so runs are reproducible and
    successive batches still draw different subsets. The kept pairs are returned in batch order.

    Mining reads label values, so on a GPU it synchronises once (the number of kept pairs decides the output
    shape). The selection is not differentiable and needs none.

    Args:
        positive_rule: Which pairs are positive, see above.
        negatives_per_positive: Keep at most ``floor(negatives_per_positive * num_positive)`` negatives, a
            uniformly random subset; ``None`` keeps all negatives. The default 1.0 balances the two, as the
            release does; a batch without positives then yields no pairs at all.
        max_positive_pairs: Keep at most this many positives (a random subset); ``None`` keeps all.
        generator: Source of randomness (on any device); ``None`` means a private one seeded with 0.
        validate_args: Check that ``labels`` holds only 0 and 1 on non-CPU tensors too (forces a device sync);
            on CPU the check always runs (soft or smoothed labels such as 0.95/0.05 would count as present).

    Shape:
        - labels: (B, C), any real or bool dtype, multi-hot.
        - Output: :class:`Pairs` of (P,) tensors on the labels' device.

    Returns:
        The kept pairs, in batch order (P may be 0).

    Raises:
        TypeError: If ``labels`` is not a real tensor or an option has the wrong type.
        ValueError: If ``labels`` is not (B, C) with C >= 1, an option is out of range, or (see
            ``validate_args``) an entry of ``labels`` is not 0 or 1.

    Example:
        >>> import torch
        >>> labels = torch.tensor([[1., 0.], [1., 0.], [0., 1.]])
        >>> pairs = PairMiner(negatives_per_positive=None)(labels)   # keep every negative
        >>> pairs.index_a.tolist(), pairs.index_b.tolist(), pairs.is_positive.tolist()
        ([0, 0, 1], [1, 2, 2], [True, False, False])
    """

    def __init__(self, *, positive_rule: PositiveRule = "shared_class",
                 negatives_per_positive: float | None = 1.0, max_positive_pairs: int | None = None,
                 generator: torch.Generator | None = None, validate_args: bool = False) -> None:
        super().__init__()
        check_choice(positive_rule, "positive_rule", _RULES)
        if negatives_per_positive is not None:
            check_number(negatives_per_positive, "negatives_per_positive", minimum=0.0)
        if max_positive_pairs is not None:
            check_number(max_positive_pairs, "max_positive_pairs", minimum=1, integer=True)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"`generator` must be a torch.Generator or None, but got {type(generator).__name__}.")
        check_flag(validate_args, "validate_args")
        self.positive_rule = positive_rule
        self.negatives_per_positive = negatives_per_positive
        self.max_positive_pairs = max_positive_pairs
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.validate_args = validate_args

    def extra_repr(self) -> str:
        return (f"positive_rule={self.positive_rule!r}, negatives_per_positive={self.negatives_per_positive}, "
                f"max_positive_pairs={self.max_positive_pairs}")

    def forward(self, labels: Tensor) -> Pairs:
        """Mine the pairs of one batch; see the class docstring."""
        check_tensor(labels, "labels")
        check_labels(labels, labels.shape[0] if labels.dim() == 2 else -1, labels, self.validate_args)
        batch = labels.shape[0]
        device = labels.device
        present = labels.detach() != 0
        counts = present.sum(dim=1)
        # Number of common classes, counted exactly; a (B, B, C) boolean is small, and a tiny matmul would wake
        # the BLAS thread pool every step for nothing.
        shared = (present[:, None, :] & present[None, :, :]).sum(dim=2)
        disjoint = shared == 0
        if self.positive_rule == "shared_class":
            positive = shared > 0
        else:
            identical = (shared == counts[:, None]) & (shared == counts[None, :]) & (counts[:, None] > 0)
            positive = identical & (counts[:, None] == 1) if self.positive_rule == "identical_single_label" \
                else identical

        rows, cols = torch.triu_indices(batch, batch, offset=1, device=device)
        positive = positive[rows, cols]
        negative = disjoint[rows, cols]
        # One random key per candidate pair, drawn on the generator's device so any generator works.
        keys = torch.rand(rows.shape[0], generator=self.generator, device=self.generator.device).to(device)

        keep_positive = positive
        if self.max_positive_pairs is not None:
            keep_positive = positive & (_rank_within(keys, positive) < self.max_positive_pairs)
        keep_negative = negative
        if self.negatives_per_positive is not None:
            budget = torch.floor(keep_positive.sum().to(torch.float64) * self.negatives_per_positive)
            keep_negative = negative & (_rank_within(keys, negative) < budget)
        kept = torch.nonzero(keep_positive | keep_negative).squeeze(1)
        return Pairs(rows[kept], cols[kept], positive[kept])


def _rank_within(keys: Tensor, member: Tensor) -> Tensor:
    """Rank of each member among the members by ascending key (non-members get ranks after all members)."""
    order = torch.argsort(torch.where(member, keys, torch.full_like(keys, 2.0)))
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(order.shape[0], device=order.device)
    return ranks
