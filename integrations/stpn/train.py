"""Train and evaluate STPN with FTCL: ``python integrations/stpn/train.py --help``.

With no arguments this trains STPN + FTCL on the built-in thumos14-like synthetic dataset, evaluates it and prints
the mAP table; ``--no-ftcl`` trains the plain baseline and ``--compare`` runs the paired protocol.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from integrations.common.runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("stpn", sys.argv[1:]))
