"""The machine-figure helpers of benchmarks/bench_machine.py (csrc/cpu/machine.cpp): each one
computes what it says, on every SIMD path and thread count, so that the rates it times are
rates of real work; and its binding refuses bad arrays."""
from __future__ import annotations

import numpy as np
import pytest

import segkit
from tests.conftest import require_backend


@pytest.fixture(scope="module")
def C():
    require_backend("cpp")
    from segkit import _C
    return _C


@pytest.fixture(params=[1, 2], ids=["1t", "2t"])
def threads(request):
    segkit.set_num_threads(request.param)
    yield request.param
    segkit.set_num_threads(0)


# sizes around the 16384-float work item: empty, short, one item, items plus a ragged tail
SIZES = [0, 5, 16384, 3 * 16384 + 77]


@pytest.mark.parametrize("n", SIZES)
def test_read_sums_every_element(C, simd_isa, threads, n):
    x = np.random.default_rng(n).integers(-8, 9, n).astype(np.float32)  # exact sums
    assert C.machine_read(x, 3) == float(x.astype(np.float64).sum())


@pytest.mark.parametrize("n", SIZES)
def test_update_applies_x_times_a_plus_b_per_pass(C, simd_isa, threads, n):
    x = np.random.default_rng(n).integers(-8, 9, n).astype(np.float32)
    want = (x * 2 + 1) * 2 + 1  # small integers: exact in float32 with or without FMA
    C.machine_update(x, 2, 2.0, 1.0)
    np.testing.assert_array_equal(x, want)


def test_fma_runs_every_chain_lane_and_round(C, simd_isa, threads):
    lanes = C.machine_lanes()
    assert lanes == {"base": 4, "avx2": 8, "avx512": 16}[simd_isa]
    # chain c starts at 1 + c; three rounds of acc * 2 + 1 give 8 (1 + c) + 7
    want = threads * lanes * sum(8 * (1 + c) + 7 for c in range(12))
    assert C.machine_fma(3, 1.0, 2.0, 1.0) == want
    assert C.machine_fma(0, 1.0, 2.0, 1.0) == threads * lanes * sum(1 + c for c in range(12))


def test_exp_is_the_kernels_exp(C, simd_isa, threads):
    x = np.concatenate([np.linspace(-87, 0, 16384 * 2 - 32, dtype=np.float32),
                        np.float32([0, -1e-30, 1, 10, 88, -88, -200, -np.inf] * 4)])
    out = np.full_like(x, np.nan)
    C.machine_exp(x, out, 2)
    want = np.exp(np.maximum(x.astype(np.float64), -87))  # exp_poly clamps at -87
    np.testing.assert_allclose(out, want, rtol=3e-7)


def test_bindings_refuse_bad_arrays(C):
    x = np.zeros(32, np.float32)
    with pytest.raises(TypeError, match="x must be float32"):
        C.machine_read(x.astype(np.float64))
    with pytest.raises(ValueError, match="reps must be >= 1, got 0"):
        C.machine_read(x, 0)
    with pytest.raises(ValueError, match="x"):
        C.machine_update(x[::2])  # not contiguous
    ro = x.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="x"):
        C.machine_update(ro)
    with pytest.raises(ValueError, match="multiple of 16 values, got 20"):
        C.machine_exp(x[:20], np.zeros(20, np.float32))
    with pytest.raises(ValueError, match="out"):
        C.machine_exp(x, np.zeros(16, np.float32))
    with pytest.raises(ValueError, match="iters must be >= 0, got -1"):
        C.machine_fma(-1)
