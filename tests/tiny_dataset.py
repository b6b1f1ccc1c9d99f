"""The tiny synthetic dataset the data tests share (the ``tiny`` and ``tiny_copy`` fixtures in conftest.py)."""

TINY = {"num_train": 6, "num_test": 4, "feature_dim": 16, "max_length": 40, "min_length": 12}
