#!/usr/bin/env bash
# The GPU check in one command (docs/performance.md, "GPU check"): on a bare GPU machine, with the wheels that
# `make gpu-wheels` put in .gpu/wheels carried along, it installs them offline and runs the GPU-marked tests, the
# LoRA throughput benchmark and a one-step profile, each under its own time limit, writing summary.json and the
# logs under $OUT. `benchmarks/gpu_check.sh --device cpu --dry-run` runs the same steps, tiny, on a CPU.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-check-results}"
mkdir -p "$OUT"
export OUT PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" benchmarks/gpu_check.py run --out "$OUT" "$@"
