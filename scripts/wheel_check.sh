#!/usr/bin/env bash
# A new user's install, checked in CI: build a wheel, install it with pip into a fresh virtual
# environment (torch first, then the wheel; no Makefile, no source tree on the path), and run
# `infodecomp validate`, `infodecomp aro model=tiny-sd run.limit=2` and every README command
# (tests/test_readme.py, with INFODECOMP_BIN pointing at the installed console script).
# Exits non-zero when the build, the install or any command fails.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
work="$(mktemp -d "${TMPDIR:-/tmp}/infodecomp-wheel.XXXXXX")"
trap 'rm -rf "$work"' EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1
unset PYTHONPATH  # the installed wheel, not a source tree, must answer
export INFODECOMP_CACHE="$work/cache"  # tiny-sd is built afresh, from the wheel's files

echo "== build the wheel from the working tree's files (no stale build/ folder)"
mkdir -p "$work/src"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard \
    | xargs -0 cp --parents -t "$work/src")
"$PYTHON" -m venv "$work/build-env"
"$work/build-env/bin/pip" wheel --quiet --no-deps --wheel-dir "$work/dist" "$work/src"
wheel="$(ls "$work"/dist/infodecomp-*.whl)"
"$work/build-env/bin/python" - "$wheel" <<'PY'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
need = [
    "infodecomp/configs/aro.yaml",
    "infodecomp/configs/data/aro-vg-relation.yaml",
    "infodecomp/models/resources/bpe_simple_vocab_16e6.txt.gz",
    "infodecomp/models/resources/shapes-learned/unet/diffusion_pytorch_model.safetensors",
    "infodecomp/models/resources/shapes-learned/text_encoder/model.safetensors",
    "infodecomp/models/resources/LICENSE-bpe_simple_vocab_16e6.txt",
]
missing = [n for n in need if n not in names]
sys.exit(f"the wheel lacks {missing}" if missing else 0)
PY

echo "== fresh virtual environment: $TORCH_SPEC, then the wheel"
"$PYTHON" -m venv "$work/venv"
bin="$work/venv/bin"
"$bin/pip" install --quiet "$TORCH_SPEC"
"$bin/pip" install --quiet "$wheel"
"$bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('open_clip') is not None and 'open_clip is installed: the check would not show that tiny-sd needs none')"

echo "== the first commands, outside the source tree"
mkdir -p "$work/run"
cd "$work/run"
"$bin/infodecomp" validate run.out_dir=validate
"$bin/infodecomp" aro model=tiny-sd run.limit=2 run.out_dir=aro-tiny-sd
test -f aro-tiny-sd/summary.json

echo "== every README command, through the installed console script"
"$bin/pip" install --quiet "pytest>=8"
INFODECOMP_BIN="$bin/infodecomp" "$bin/python" -m pytest -q -p no:cacheprovider \
    --rootdir "$repo" -c "$repo/pyproject.toml" "$repo/tests/test_readme.py"
echo "== wheel check passed"
