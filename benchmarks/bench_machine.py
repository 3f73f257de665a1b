"""What the cores of this machine can do, for the floors in RESULTS.md (issue 26 part 6).

Measured with the C++ build itself (`segkit._C.machine_*`, csrc/cpu/machine.cpp: the same
compiler flags, OpenMP threads and per-instruction-set compilation as the kernels), on the
kernels' thread count (2) and each SIMD path:

- streaming bandwidth: read (a vector sum) and read+write (x = x * a + b in place) over one
  float32 buffer split between the threads, at sizes that sit in the L2 caches (1 MiB), in the
  last-level cache (the ConvCRF working sets at 512x512, 11 classes: about 21 MiB at k=11
  blur 4 and 62 MiB at k=7 blur 1) and far beyond it (1 GiB; the L3 this VM reports is
  480 MiB);
- FMA throughput: 12 independent vector FMA chains per thread;
- the throughput of the kernels' own exp (common/math.h `exp_poly`, on vectors of the path)
  over 64 KiB per thread (in L2), per value.

Each benchmark stores its work (`bytes`, `flops` or `values`) in extra_info, so the report
prints a rate; it also stores the rate per CPU second (`process_time` of the 2 threads, best of
5 calls): on a loaded machine the wall-clock rate is what we got of the cores, the CPU-second
rate what the cores do while they run this.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

import segkit

from .conftest import require, simd

THREADS = 2
MIB = 1 << 20
SIZES = {"L2 1 MiB": 1 * MIB, "k11-blur4 set 21 MiB": 21 * MIB,
         "k7-blur1 set 62 MiB": 62 * MIB, "DRAM 1 GiB": 1024 * MIB}
ISAS = ["avx2", "avx512"]
_BUFFERS: dict[int, np.ndarray] = {}


def _machine():
    require("cpp")
    from segkit import _C

    if not hasattr(_C, "machine_read"):
        pytest.skip("this build of segkit._C has no machine helpers (csrc/cpu/machine.cpp)")
    return _C


def _buffer(nbytes: int) -> np.ndarray:
    if nbytes not in _BUFFERS:
        _BUFFERS.clear()  # one large buffer at a time
        _BUFFERS[nbytes] = np.ones(nbytes // 4, np.float32)
    return _BUFFERS[nbytes]


def _run(benchmark, group: str, impl: str, call, work: dict) -> None:
    """Times `call` on 2 threads, labels it and records its work and its rate per CPU
    second."""
    benchmark.group = group
    benchmark.extra_info["impl"] = impl
    benchmark.extra_info.update(work)
    segkit.set_num_threads(THREADS)
    try:
        call()  # first touch, thread pool
        benchmark(call)
        cpu = []
        for _ in range(5):
            t = time.process_time()
            call()
            cpu.append(time.process_time() - t)
    finally:
        segkit.set_num_threads(0)
    unit, amount = next(iter(work.items()))
    scale = {"bytes": 1e9, "flops": 1e9, "values": 1e9}[unit]
    # 2 threads busy for the whole call: wall time = CPU time / 2
    benchmark.extra_info[f"{unit} G/s per CPU s"] = amount / (min(cpu) / THREADS) / scale


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("size", list(SIZES), ids=[s.split()[0] for s in SIZES])
def test_read(benchmark, size, isa):
    _C = _machine()
    x = _buffer(SIZES[size])
    reps = max(1, (256 * MIB) // SIZES[size])  # about 256 MiB read per call
    with simd(isa):
        _run(benchmark, f"machine: streaming read, {THREADS} threads",
             f"read {size} ({isa})", lambda: _C.machine_read(x, reps),
             {"bytes": x.nbytes * reps})
    assert _C.machine_read(x, 1) == x.size  # every element read once (all ones)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("size", list(SIZES), ids=[s.split()[0] for s in SIZES])
def test_read_write(benchmark, size, isa):
    _C = _machine()
    x = _buffer(SIZES[size])
    reps = max(1, (128 * MIB) // SIZES[size])
    with simd(isa):
        _run(benchmark, f"machine: streaming read + write in place, {THREADS} threads",
             f"x = x * 1 + 0, {size} ({isa})", lambda: _C.machine_update(x, reps, 1.0, 0.0),
             {"bytes": 2 * x.nbytes * reps})
    assert np.all(x == 1)


@pytest.mark.parametrize("isa", ISAS)
def test_fma(benchmark, isa):
    _C = _machine()
    iters = 2_000_000
    with simd(isa):
        lanes = _C.machine_lanes()
        _run(benchmark, f"machine: FMA throughput, {THREADS} threads",
             f"12 vector FMA chains per thread ({isa}, {lanes} lanes)",
             lambda: _C.machine_fma(iters, 0.0, 1.0, 0.0),
             {"flops": 2 * 12 * lanes * iters * THREADS})


@pytest.mark.parametrize("isa", ISAS)
def test_exp(benchmark, isa):
    _C = _machine()
    x = np.random.default_rng(0).uniform(-30, 0, 16384 * THREADS).astype(np.float32)
    out = np.empty_like(x)
    reps = 500
    with simd(isa):
        _run(benchmark, f"machine: the kernels' exp (exp_poly), {THREADS} threads",
             f"exp_poly over 64 KiB per thread ({isa})", lambda: _C.machine_exp(x, out, reps),
             {"values": x.size * reps})
    np.testing.assert_allclose(out, np.exp(x.astype(np.float64)), rtol=1e-6)
