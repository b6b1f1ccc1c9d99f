"""The labels of the step benchmarks (``bench_ftcl_step.py``, ``bench_train_step.py``)."""

from __future__ import annotations

import torch

# Videos draw their one class from this many, so a batch always holds same-class pairs for FTCL.
CLASS_POOL = 12


def one_class_labels(batch: int, classes: int, generator: torch.Generator) -> torch.Tensor:
    """(B, C) one-hot labels, each video one of the first ``min(C, 12)`` classes drawn uniformly.

    A batch of 16 then holds about 120 / 12 = 10 same-class pairs, against about 5.2 identical-label pairs in a
    random batch of THUMOS14 training videos (docs/losses.md, "Speed").

    Args:
        batch: B.
        classes: C.
        generator: source of the draws.

    Returns:
        Float labels.
    """
    picks = torch.randint(0, min(classes, CLASS_POOL), (batch,), generator=generator)
    return torch.nn.functional.one_hot(picks, classes).float()
