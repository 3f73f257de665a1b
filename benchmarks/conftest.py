"""Shared helpers for the pytest-benchmark suites (run with `make bench`)."""
from __future__ import annotations

import contextlib

import pytest

from segkit import _backend


def require(name: str) -> None:
    info = _backend.backend_info(name)
    if not info.available:
        pytest.skip(f"{name} backend unavailable: {info.reason}")


def sync_cuda():
    """Block until queued GPU work is done (so timings cover it)."""
    import cupy

    cupy.cuda.get_current_stream().synchronize()


@contextlib.contextmanager
def simd(isa: str):
    """Run the C++ kernels on one SIMD path ('base', 'avx2', 'avx512'); skips the benchmark
    when this CPU lacks it, restores the previous path afterwards."""
    require("cpp")
    from segkit import _C

    order = ["base", "avx2", "avx512"]
    if order.index(isa) > order.index(_C.build_info()["simd_best"]):
        pytest.skip(f"this CPU has no {isa}")
    old = _C.set_simd_isa(isa)
    try:
        yield
    finally:
        _C.set_simd_isa(old)


@contextlib.contextmanager
def threads(n: int):
    """Run the CPU kernels on `n` threads, then back to all cores."""
    import segkit

    segkit.set_num_threads(n)
    try:
        yield
    finally:
        segkit.set_num_threads(0)
