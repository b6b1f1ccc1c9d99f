"""STPN (clean room) with FTCL: ``model.py``, ``configs/``, ``train.py``, and ``upstream.py``, which
drives a user's own checkout with ``patches/stpn.py`` (``--upstream``)."""
