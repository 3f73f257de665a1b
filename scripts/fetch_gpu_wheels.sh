#!/usr/bin/env bash
# Download, here (where PyPI is reachable), the wheels that the GPU machine lacks for the mmseg
# stack and segkit's base dependencies, so that scripts/gpu_check.sh can install segkit offline
# (make install TORCH=keep PIP_ARGS="--no-index --find-links .whl"). The GPU image
# already has torch, numpy, scipy, matplotlib, opencv-python-headless, pyyaml, regex, rich,
# pillow (its image as of 2026-11); this fetches the rest, at the versions in constraints.txt, for
# CPython 3.12 on manylinux x86-64. Most are pure Python (py3-none-any); pydantic-core, wcwidth,
# stringzilla and simsimd are compiled. The wheels go to .whl/ (git-ignored; never commit them)
# and travel with the device call (carry: [".whl"]), about 30 MB (scikit-learn is 13 MB).
#
#   bash scripts/fetch_gpu_wheels.sh            # then, on the GPU machine: bash scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEST=${DEST:-.whl}
# The build tools and the base dependencies that image may lack, then the mmseg stack.
# `make install TORCH=keep` keeps whatever the image has, so extra wheels here are harmless.
NAMES=(setuptools wheel tqdm click pycocotools iterative-stratification scikit-learn joblib
       threadpoolctl
       mmengine mmcv-lite mmsegmentation albumentations albucore ftfy wcwidth addict yapf
       platformdirs termcolor prettytable pydantic pydantic_core annotated-types
       typing-inspection typing_extensions stringzilla simsimd)
norm() { echo "$1" | tr 'A-Z_' 'a-z-'; }
mkdir -p "$DEST"
for name in "${NAMES[@]}"; do
  pin=$(grep -i -E "^$(norm "$name" | sed 's/-/[-_]/g')==" constraints.txt | head -1 || true)
  [ -n "$pin" ] || { echo "no pin for $name in constraints.txt" >&2; exit 1; }
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d "$DEST" "$pin"
done
ls -la "$DEST"
du -sh "$DEST"
