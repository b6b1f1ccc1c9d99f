"""``python -m ftcl_plugin.evaluation``: the same command line as ``ftcl-eval``."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
