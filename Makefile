# The two commands the README promises. `make install` installs into the active Python
# environment (use a venv); `make test` runs the linters, then the whole suite on CPU, and
# fails when either fails. `make lint` and `make test-fast` (no Ray, no subprocesses, no demo)
# are the inner loop.
PYTHON ?= python3
DAC_PKGS = descript-audio-codec==1.0.0 descript-audiotools==0.7.2
LINT_PATHS = trimodal tests bench

.PHONY: install test lint test-fast demo bench-install gpu-check

install:
	$(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install --no-deps $(DAC_PKGS)
	$(PYTHON) -m pip install -e '.[test]'

test: lint
	$(PYTHON) -m pytest -q

# ruff (lint + format check) and the import-linter layer contracts in pyproject.toml
lint:
	$(PYTHON) -m ruff check $(LINT_PATHS)
	$(PYTHON) -m ruff format --check $(LINT_PATHS)
	lint-imports --no-logo

test-fast: lint
	$(PYTHON) -m pytest -q -m "not slow"

demo:
	trimodal demo

# The benchmark peers (MosaicML streaming, litdata). Installed without their declared
# dependencies: resolving those would replace the CPU torch with a multi-GB CUDA build.
BENCH_PKGS = mosaicml-streaming litdata
BENCH_DEPS = lightning-utilities brotli python-snappy cramjam zstd xxhash catalogue

bench-install:
	$(PYTHON) -m pip install --no-deps $(BENCH_PKGS)
	$(PYTHON) -m pip install $(BENCH_DEPS)

# The GPU acceptance command (bench/bench_gpu.py): every GPU-only path once, one table; exit 1 when
# a path fails, 6 when there is no GPU (docs/training.md, "GPU-only branches").
gpu-check:
	$(PYTHON) bench/bench_gpu.py
