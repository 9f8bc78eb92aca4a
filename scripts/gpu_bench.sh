#!/usr/bin/env bash
# The bench on the SD 2.1 base geometry (random weights, no download) on one CUDA GPU, one
# command, sized for under 10 minutes (stopped at 9.5): time per evaluation of the published
# batching (float32), of DiffusionITM's batching (float32) and of the engine in float32 and
# bfloat16, interleaved in one process; then the score-by-score study (i^o, i^s, DiffusionITM's
# denoising loss; each scheme against its own score's reference and converged answer, 2000
# draws) on 2 items of that model. Not run yet: no GPU was available when it was written.
# Writes $OUT/bench/bench.json (+ study_sd21-random.csv) and $OUT/bench.txt.
# Usage: OUT=/tmp/gpu bash scripts/gpu_bench.sh   (after `make install`)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu}
BIN=${BIN:-.venv/bin}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
timeout 570 "$BIN/infodecomp" bench model=sd21-random run.device=cuda \
  "engine_dtypes=[float32,bfloat16]" n_items=10 estimator.n_samples=10 repeats=3 \
  precision_items=10 "study_models=[sd21-random]" study_items=2 study_pilot_items=1 \
  study_repeats=2 run.out_dir="$OUT/bench" 2>&1 | tee "$OUT/bench.txt"
