"""Runtime patches that add FTCL to a user's own checkout of ACM-Net, CoLA, W-TALC or STPN.

Importing this package changes nothing. A script asks for a patch explicitly::

    from patches import acmnet
    with acmnet.session("/path/to/ACM-Net", device="cpu") as up:   # checks the commit, shims numpy/torch
        pieces = acmnet.load(up)                                    # the upstream's own classes and functions
        ...build model, optimizer, criterion as the upstream does...
        acmnet.attach(model, optimizer, criterion, FTCL(feature_dim=2048).to(device))
        pieces.train(args, model, loader, criterion, optimizer)     # the upstream's loop, FTCL inside
    # leaving the block restores sys.path, sys.modules, numpy and torch

``integrations/<name>/train.py --upstream PATH`` does all of this for you (``integrations/<name>/upstream.py``).
See ``docs/upstream.md``.
"""

from __future__ import annotations

import importlib
import types

__all__ = ["SUPPORTED", "get"]

#: The patch modules, by the name ``integrations/<name>/`` uses.
SUPPORTED = ("acmnet", "cola", "wtalc", "stpn")


def get(name: str) -> types.ModuleType:
    """The patch module for one upstream (imported on demand; importing it patches nothing).

    Args:
        name: ``"acmnet"``, ``"cola"``, ``"wtalc"`` or ``"stpn"``.

    Returns:
        ``patches.<name>``.

    Raises:
        ValueError: for another name.
    """
    if name not in SUPPORTED:
        raise ValueError(f"`name` must be one of {', '.join(SUPPORTED)}, but got {name!r}.")
    return importlib.import_module(f"{__name__}.{name}")
