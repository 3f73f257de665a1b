#!/usr/bin/env bash
# The sdist and the wheel that `python -m build` makes (the wheel is built from the sdist, in an
# isolated build from PyPI alone, this machine's pip configuration ignored), the wheel installed
# into a fresh virtual environment; then `segkit info` run outside the checkout must find the
# compiled extension and the CUDA sources, and the cpp backend must agree with the reference.
#
# The extension is compiled once. `pip install .` runs the same PEP 517 build_wheel hook on the
# tree that `python -m build` runs on the sdist (a subset of the tree), so it is checked on its
# own only with CHECK_WHEEL_PIP_INSTALL=1 (a second compile, about 1-2 minutes on 2 cores).
#
#   bash scripts/check_wheel.sh            # PYTHON=python3.12 bash scripts/check_wheel.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/segkit-check-wheel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# A user's pip: no config files, no find-links, no extra index, no global constraint.
for v in $(env | sed -n 's/^\(PIP_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_INDEX_URL=https://pypi.org/simple
unset PYTHONPATH
pin() { grep -i -E "^$1==" "$ROOT/constraints.txt" | head -1; }

check_info() {  # $1: venv, $2: what was installed
  local out
  out=$(cd "$WORK" && "$1/bin/segkit" info --fast) || { echo "check-wheel: $2: segkit info failed"; return 1; }
  echo "$out" | sed -n '1,5p'
  echo "$out" | grep -q "extension .*site-packages/segkit/_C" \
    || { echo "check-wheel: $2: segkit info does not find the extension in site-packages"; return 1; }
  # as many kernels as the checkout has (csrc/cuda/*.cu), all shipped in the package
  local kernels
  kernels=$(ls "$ROOT"/csrc/cuda/*.cu | wc -l)
  echo "$out" | grep -q "CUDA sources .*site-packages/segkit/_csrc ($kernels kernels)" \
    || { echo "check-wheel: $2: segkit info does not find the CUDA sources in the package"; return 1; }
  echo "$out" | grep -q "cpp    yes" || { echo "check-wheel: $2: the cpp backend is not available"; return 1; }
  (cd "$WORK" && "$1/bin/python" -c "
import numpy as np, segkit
x = np.random.default_rng(0).integers(0, 5, (17, 23), dtype=np.uint8)
assert (segkit.mode_filter(x, backend='cpp') == segkit.mode_filter(x, backend='numpy')).all()
print('   mode_filter: cpp == numpy')")
}

t0=$(date +%s)
echo "== python -m build (sdist, then the wheel from the sdist; isolated builds)"
# from a copy of the tree (tracked and untracked-not-ignored files), so that the build writes
# nothing into the checkout, where other venvs may be installing at the same time (CI)
mkdir "$WORK/tree" && (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
  | xargs -0 cp --parents -t "$WORK/tree" 2>/dev/null || true)
$PY -m venv "$WORK/tools"
"$WORK/tools/bin/python" -m pip install -q "$(pin pip)" "$(pin build)"
rm -rf "$WORK/dist"
"$WORK/tools/bin/python" -m build --outdir "$WORK/dist" "$WORK/tree" >"$WORK/build.log" 2>&1 \
  || { tail -30 "$WORK/build.log"; echo "check-wheel: python -m build failed"; exit 1; }
ls -la "$WORK/dist"
unzip -l "$WORK"/dist/*.whl | grep -E "_C\.|_csrc/cuda/.*\.cu$" | awk '{print "   " $4}'
t1=$(date +%s); echo "   built in $((t1 - t0)) s"

echo "== the wheel into a fresh venv"
$PY -m venv "$WORK/wheel"
"$WORK/wheel/bin/python" -m pip install -q -c "$ROOT/constraints.txt" "$WORK"/dist/segkit-*.whl
check_info "$WORK/wheel" "the wheel"
t2=$(date +%s); echo "   installed and checked in $((t2 - t1)) s"

if [ "${CHECK_WHEEL_PIP_INSTALL:-0}" != 1 ]; then
  echo "check-wheel: ok ($((t2 - t0)) s; CHECK_WHEEL_PIP_INSTALL=1 also checks pip install .)"
  exit 0
fi

echo "== pip install . into a fresh venv"
$PY -m venv "$WORK/src"
"$WORK/src/bin/python" -m pip install -q -c "$ROOT/constraints.txt" "$WORK/tree"
check_info "$WORK/src" "pip install ."
t3=$(date +%s); echo "   installed and checked in $((t3 - t2)) s"
echo "check-wheel: ok ($((t3 - t0)) s)"
