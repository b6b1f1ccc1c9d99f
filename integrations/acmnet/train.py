"""Train and evaluate ACM-Net with FTCL: ``python integrations/acmnet/train.py --help``.

With no arguments this trains ACM-Net + FTCL on the built-in thumos14-like synthetic dataset, evaluates it and
prints the mAP table (the project's main job, about 5 minutes on 2 CPU cores).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from integrations.common.runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("acmnet", sys.argv[1:]))
