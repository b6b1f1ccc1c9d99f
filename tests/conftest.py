"""Shared fixtures: devices and dtypes (CUDA cases skip cleanly), one tolerance table, the tiny dataset."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from ftcl_plugin.data import generate
from tests.tiny_dataset import TINY

# One tolerance table for the whole suite: (rtol, atol) per dtype.
TOLERANCES = {
    torch.float64: (1e-9, 1e-9),
    torch.float32: (1e-5, 1e-5),
}

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request) -> torch.dtype:
    return request.param


@pytest.fixture
def tol(dtype):
    rtol, atol = TOLERANCES[dtype]
    return {"rtol": rtol, "atol": atol}


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny synthetic dataset in the ACM-Net layout (read-only for the tests that share it)."""
    return generate(tmp_path_factory.mktemp("tiny") / "acmnet", **TINY)


@pytest.fixture
def tiny_copy(tiny, tmp_path) -> Path:
    """A private copy of ``tiny`` that a test may damage."""
    return Path(shutil.copytree(tiny, tmp_path / "copy"))
