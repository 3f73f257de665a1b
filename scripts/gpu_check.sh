#!/usr/bin/env bash
# Validate and time segkit's CUDA paths on a lent GPU machine (see README "GPU").
# Runs offline: torch, CuPy, Numba, pybind11 and nvcc are expected to be installed there;
# missing pure-Python wheels may be carried in .whl/ (installed to /tmp/site).
# The `train` section of gpu_bench.py (UperNet + Swin-B, 20 iterations at batch 8, crop 512,
# with and without AMP) needs the mmseg stack, which that machine lacks: fetch its wheels here
# first with `bash scripts/fetch_gpu_wheels.sh` (into .whl/, git-ignored) and carry ".whl".
# Prints a short table; writes $OUT/gpu_results.json and $OUT/gpu_tests.log when OUT is set.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/segkit_gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1

if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

echo "== machine"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch, cupy, numba; print('torch', torch.__version__, 'cupy', cupy.__version__, 'numba', numba.__version__)"

echo "== build"
t0=$(date +%s)
$PY setup.py -q build_ext --inplace >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
$PY -c "import segkit; [print('  ', b) for b in segkit.backends().values()]"
echo "   built in $(( $(date +%s) - t0 )) s"

echo "== CUDA tests (equality with the reference)"
$PY -m pytest -q -p no:cacheprovider -x tests/test_mode_filter_cuda.py tests/test_mode_filter.py \
  tests/test_soft_vote_cuda.py tests/test_soft_vote.py \
  tests/test_convcrf_cuda.py tests/test_convcrf.py \
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
