"""W-TALC (clean room) with FTCL: ``model.py``, ``configs/``, ``train.py``."""
