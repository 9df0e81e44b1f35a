#!/usr/bin/env bash
# Wheels a CUDA machine without package access needs besides its own PyTorch image (PyAV, OmegaConf and
# its parser runtime; such images carry transformers, safetensors, numpy, tqdm, Pillow, matplotlib and
# pytest already, and gpu_check.sh says which import is missing if not), for Python 3.12 on x86-64
# Linux, into .whl/ (git-ignored). scripts/gpu_check.sh installs them from there.
# Usage: bash scripts/gpu_wheels.sh [PYTHON_VERSION]
set -euo pipefail
cd "$(dirname "$0")/.."
PYV=${1:-3.12}
mkdir -p .whl
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
    platforms+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
    "${platforms[@]}" -d .whl "av>=12" "omegaconf>=2.3"
# OmegaConf's grammar runtime is published as a source archive only: build its (pure-Python) wheel here
python3 -m pip wheel -q --no-deps -w .whl "antlr4-python3-runtime==4.9.3"
ls -1 .whl
