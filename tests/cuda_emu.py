"""Run segkit's CUDA kernels on the host, without a GPU: the exact source string CuPy compiles
(`segkit._cuda.load_source`), compiled by g++ with CUDA's built-ins emulated, launched block
by block and thread by thread in sequence. Kernels that stage data in shared memory and meet
at `__syncthreads()` are run with one thread per block (then the sequential order is a valid
schedule); atomics become plain read-modify-writes. This checks a kernel's logic (indexing,
grid-stride loops, tie rules, argument order); a GPU run is still needed for the rest."""
from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from segkit import _cuda

PRELUDE = r"""
#include <cstddef>
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static
struct SegkitDim3 { unsigned x = 0, y = 0, z = 0; };
static SegkitDim3 blockIdx, blockDim, gridDim, threadIdx;
static inline void __syncthreads() {}
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
static inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
// the IEEE single operations CUDA never contracts (built with -ffp-contract=off here)
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
template <typename T> static inline T atomicAdd(T* p, T v) { T old = *p; *p = old + v; return old; }
static inline int atomicOr(int* p, int v) { int old = *p; *p = old | v; return old; }
static inline int atomicMax(int* p, int v) { int old = *p; if (v > old) *p = v; return old; }
extern "C" void emu_set(unsigned grid, unsigned block, unsigned bid, unsigned tid) {
  gridDim.x = grid; blockDim.x = block; blockIdx.x = bid; threadIdx.x = tid;
}
"""
# dynamic shared memory (`extern __shared__ T name[];`) becomes a static array
_EXTERN_SHARED = re.compile(r"extern\s+__shared__\s+([\w\s]+?)\s+(\w+)\s*\[\s*\]\s*;")


class HostKernels:
    """Kernels of csrc/cuda/<op>.cu compiled for the host."""

    def __init__(self, op: str, workdir: Path):
        cxx = shutil.which("g++") or shutil.which("c++")
        if cxx is None:
            raise FileNotFoundError("no C++ compiler for the host emulation of the CUDA kernels")
        src = _EXTERN_SHARED.sub(r"static \1 \2[1 << 14];", _cuda.load_source(op))
        path = Path(workdir) / f"{op}_emu.cpp"
        path.write_text(PRELUDE + src)
        lib = path.with_suffix(".so")
        result = subprocess.run([cxx, "-O1", "-std=c++17", "-ffp-contract=off", "-shared",
                                 "-fPIC", str(path), "-o", str(lib)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"host build of {op}.cu failed:\n{result.stderr[-3000:]}")
        self.lib = ctypes.CDLL(str(lib))

    @staticmethod
    def _arg(a):
        if isinstance(a, np.ndarray):
            return ctypes.c_void_p(a.ctypes.data)
        if a is None:
            return ctypes.c_void_p(0)
        conv = {np.int64: ctypes.c_longlong, np.int32: ctypes.c_int, np.uint64: ctypes.c_ulonglong,
                np.float32: ctypes.c_float}
        return conv[type(a)](a.item())

    def launch(self, name: str, args: tuple, *, grid: int = 3, block: int = 4) -> None:
        """Run kernel `name` on a grid of `grid` blocks of `block` threads, in sequence."""
        kernel = getattr(self.lib, name)
        cargs = [self._arg(a) for a in args]
        for b in range(grid):
            for t in range(block):
                self.lib.emu_set(grid, block, b, t)
                kernel(*cargs)
