#!/usr/bin/env bash
# The GPU-only checks, as one short script for a CUDA machine (not part of CI):
#   1. gpu-marked tests: SD 2.1 base architecture, parameter count, forward shapes; torchrun with
#      one process per GPU, each rank on its own device (tests/test_multi_gpu.py);
#   2. the speed bench on that architecture (random weights, no download): published procedure
#      in float32 vs the engine in bfloat16, written to $OUT/bench/bench.json.
# Usage: OUT=/tmp/gpu bash scripts/gpu_check.sh   (after `make install`)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu}
BIN=${BIN:-.venv/bin}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
"$BIN/pytest" -m gpu -q -rs 2>&1 | tee "$OUT/pytest-gpu.txt"
"$BIN/infodecomp" bench model=sd21-random run.device=cuda run.batch_size=256 n_items=4 \
  oracle_items=30 run.out_dir="$OUT/bench" 2>&1 | tee "$OUT/bench.txt"
