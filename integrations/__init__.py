"""Runnable clean-room WSAL baselines (ACM-Net, CoLA, W-TALC, STPN) with FTCL added; not installed.

Each ``integrations/<name>/train.py`` calls :func:`integrations.common.runner.main`. Integrations import only the
public API of ``ftcl_plugin``.
"""
