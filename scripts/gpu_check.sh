#!/usr/bin/env bash
# The GPU-only checks, as one short script for a CUDA machine (not part of CI):
#   1. gpu-marked tests: SD 2.1 base architecture, parameter count, forward shapes; torchrun with
#      one process per GPU, each rank on its own device (tests/test_multi_gpu.py);
#   2. scripts/gpu_bench.sh: the bench on that architecture (random weights, no download),
#      written to $OUT/bench/bench.json.
# Usage: OUT=/tmp/gpu bash scripts/gpu_check.sh   (after `make install`)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu}
BIN=${BIN:-.venv/bin}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
"$BIN/pytest" -m gpu -q -rs 2>&1 | tee "$OUT/pytest-gpu.txt"
OUT="$OUT" BIN="$BIN" bash scripts/gpu_bench.sh
