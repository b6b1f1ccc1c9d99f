# Two commands set up a fresh machine: `make run` (the main job) and `make test` (the test suite).
# The local CPU build of torch 2.13.0 is installed first when no torch is present, so pip never
# resolves torch from the index (which would download a multi-gigabyte CUDA build).
PYTHON ?= python3
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install test run bench lint

install:
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install -e ".[dev]"

test: install
	$(PYTHON) -m pytest -q

run: install
	$(PYTHON) integrations/acmnet/train.py

bench: install
	$(PYTHON) benchmarks/bench_dp.py
	$(PYTHON) benchmarks/bench_eval.py
	$(PYTHON) benchmarks/bench_train_step.py

lint: install
	$(PYTHON) -m ruff check ftcl_plugin integrations patches benchmarks tests
