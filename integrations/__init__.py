"""Runnable clean-room WSAL baselines (ACM-Net, CoLA, W-TALC, STPN) with FTCL added; not installed.

One folder per baseline holds everything about it (``model.py``, ``configs/``, ``upstream.py``, ``train.py``); each
``train.py`` calls :func:`integrations.common.runner.main`, and ``common/`` holds what the four share
(``docs/architecture.md``). Integrations import only the public API of ``ftcl_plugin``.
"""
