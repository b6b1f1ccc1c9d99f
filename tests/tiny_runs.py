"""What the runner tests share: a tiny synthetic dataset and the flags that size a run to it."""

from __future__ import annotations

from pathlib import Path

from ftcl_plugin.data.synthetic import generate

__all__ = ["TINY", "tiny_dataset"]

#: 32-snippet clips, 64-snippet test videos, batch 4 (3 steps per epoch on 12 videos), a two-step FTCL warm-up, no
#: plot. Each test file adds the learning rate that moves its tiny models within a few steps.
TINY = ["--set", "data.train_segments=32", "--set", "data.test_segments=64", "--set", "optim.batch_size=4",
        "--set", "ftcl.warmup_steps=2", "--no-plot"]


def tiny_dataset(folder: Path) -> Path:
    """12 training and 6 test videos of at most 60 snippets, D = 32, in ``folder / "data"``.

    Four classes, so batches of four hold same-class pairs and FTCL has work to do.
    """
    return Path(generate(folder / "data", num_train=12, num_test=6, feature_dim=32, max_length=60, num_classes=4))
