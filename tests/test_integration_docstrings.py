"""The docstring examples of ``integrations/`` and ``patches/`` run and print what they show.

``pytest --doctest-modules`` collects ``ftcl_plugin`` and ``tests`` only (setup.cfg), so the examples of the scripts'
modules are run here.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(
    ".".join(path.relative_to(ROOT).with_suffix("").parts)
    for folder in ("integrations", "patches") for path in (ROOT / folder).rglob("*.py")
    if path.name not in ("__init__.py", "train.py", "run_experiments.py")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0


def test_the_examples_are_found() -> None:
    # settings.RunSettings, config.check_override, rundir.fingerprint / differences, files.atomic_file,
    # upstream_driver.epoch_row, wtalc.model's helpers, the patches' SPEC commits, ...
    attempted = sum(doctest.testmod(importlib.import_module(name), verbose=False).attempted for name in MODULES)
    assert attempted >= 20
