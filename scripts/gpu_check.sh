#!/usr/bin/env bash
# Validate and time segkit's CUDA paths on a lent GPU machine (see README "GPU").
# Runs offline: torch, CuPy, Numba, pybind11 and nvcc are installed there (Python 3.12); segkit
# is installed the way a user with a CUDA torch installs it, `make install TORCH=keep`: a venv on
# top of that interpreter (--system-site-packages) that keeps its torch and everything else it
# has, with the missing wheels taken from .whl/ (no index). Fetch those here first with
# `bash scripts/fetch_gpu_wheels.sh` (into .whl/, git-ignored) and carry ".whl".
# The `train` section of gpu_bench.py (UperNet + Swin-B, 20 iterations at batch 8, crop 512,
# with and without AMP) needs the mmseg stack, which comes from those wheels.
# Prints a short table; writes $OUT/gpu_results.json and $OUT/gpu_tests.log when OUT is set.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/segkit_gpu}
mkdir -p "$OUT"
BASE_PY=${PYTHON:-python3}
VENV=${GPU_VENV:-/tmp/segkit-venv}
export PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1

echo "== machine"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$BASE_PY -c "import torch, cupy, numba; print('torch', torch.__version__, 'cupy', cupy.__version__, 'numba', numba.__version__)"

echo "== install (make install TORCH=keep, offline)"
command -v make >/dev/null || { echo "gpu_check: make is not installed here"; exit 1; }
t0=$(date +%s)
find_links="--no-index"
compgen -G ".whl/*.whl" >/dev/null && find_links="--no-index --find-links $PWD/.whl"
make install TORCH=keep PYTHON="$BASE_PY" VENV="$VENV" EXTRAS="${GPU_EXTRAS:-mmseg}" \
  PIP_ARGS="$find_links" >"$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
grep -E "^TORCH=keep|^  (torch|mmseg line|extension|CUDA sources)|^  (cpp|cuda) " "$OUT/build.log"
PY=$VENV/bin/python
echo "   installed in $(( $(date +%s) - t0 )) s"

echo "== CUDA tests (equality with the reference; trainable op; fitted CRF via segkit.convcrf)"
$PY -m pytest -q -p no:cacheprovider -x tests/test_mode_filter_cuda.py tests/test_mode_filter.py \
  tests/test_soft_vote_cuda.py tests/test_soft_vote.py \
  tests/test_convcrf_cuda.py tests/test_convcrf.py \
  tests/test_convcrf_grad_cuda.py tests/test_convcrf_fitted.py \
  -k "cuda" ${GPU_TEST_ARGS:-} 2>&1 | tee "$OUT/gpu_tests.log" | tail -15
tests_rc=${PIPESTATUS[0]}

echo "== CUDA stream rule (ops on torch tensors under torch.cuda.stream(side) run on side)"
$PY scripts/gpu_stream_check.py 2>&1 | tee "$OUT/gpu_stream_check.log"
stream_rc=${PIPESTATUS[0]}
tests_rc=$(( tests_rc != 0 || stream_rc != 0 ))

echo "== GPU benchmarks"
$PY scripts/gpu_bench.py ${GPU_BENCH_SECTIONS:-}
bench_rc=$?
echo "tests rc=$tests_rc bench rc=$bench_rc"
exit $(( tests_rc != 0 || bench_rc != 0 ))
