"""The label-issues CUDA kernels' logic on the host (tests/cuda_emu.py) against the NumPy
reference, and a check that every kernel name segkit launches is in the source."""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

from segkit import _cuda
from segkit.ops import _label_issues_backends as backends
from segkit.ops import label_issues_cutoff as cutoffs
from segkit.reference import label_issues as ref

from . import cuda_emu
from .test_label_issues import noisy


class _Kernels(cuda_emu.HostKernels):
    """The harness as it is, with <cmath> for exp() and float64/uint32 scalar arguments."""

    def __init__(self, workdir):
        prelude = cuda_emu.PRELUDE
        cuda_emu.PRELUDE = "#include <cmath>\nusing std::exp;\n" + prelude
        try:
            super().__init__("label_issues", workdir)
        finally:
            cuda_emu.PRELUDE = prelude

    @staticmethod
    def _arg(a):
        if isinstance(a, np.float64):
            return ctypes.c_double(float(a))
        if isinstance(a, np.uint32):
            return ctypes.c_uint(int(a))
        return cuda_emu.HostKernels._arg(a)


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    try:
        return _Kernels(tmp_path_factory.mktemp("cuda_emu_li"))
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def test_every_kernel_is_defined(kernels):
    """The names segkit launches exist (extern "C") in the compiled source."""
    names = [f"label_issues_{stage}_{p}_{lab}" for stage in ("sums", "scores")
             for p in ("f16", "f32") for lab in ("u8", "u16", "i32", "i64")]
    for name in names + ["label_issues_softmin_f32", "label_issues_flags_f32"]:
        assert hasattr(kernels.lib, name), name


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64])
@pytest.mark.parametrize("pdtype", [np.float32, np.float16])
def test_sums_and_scores_kernels(kernels, dtype, pdtype):
    lab, p = noisy(2, 5, 9, 11, seed=int(np.dtype(dtype).itemsize), dtype=dtype, pdtype=pdtype)
    lab[0, 0, :2] = 9  # ignored
    lab[1, 3, 3] = 7   # out of range
    c = 5
    s, k, bad = ref.sums(lab, p, c, 9)
    gs, gk, gb = np.zeros(c), np.zeros(c, np.int64), np.zeros(1, np.int64)
    pv = p  # the host sees raw half bits through the pointer
    name, _, args = backends.cuda_sums_launch(lab, pv, c, 9, gs, gk, gb)
    assert name.endswith(f"{backends.PROB_SUFFIX[np.dtype(pdtype)]}_{_cuda.DTYPE_SUFFIX[np.dtype(dtype)]}")
    kernels.launch(name, args, grid=3, block=1)  # shared memory: one thread per block
    np.testing.assert_allclose(gs, s, rtol=1e-12)
    np.testing.assert_array_equal(gk, k)
    assert gb[0] == bad == 1
    thr = cutoffs.thresholds_from_sums(s, k) - 1e-6
    sc, cand, hist, counted = ref.scores(lab, p, c, thr, 9)
    gsc = np.empty(lab.shape, np.float32)
    gcand = np.empty(lab.shape, np.uint8)
    ghist = np.zeros(1 << 16, np.int64)
    gcount = np.zeros(1, np.int64)
    name, _, args = backends.cuda_scores_launch(lab, pv, c, 9, thr, gsc, gcand, ghist, gcount)
    kernels.launch(name, args, grid=3, block=4)
    dummy = np.zeros(1, np.int64)  # without the histogram: a 1-element buffer, untouched
    _, _, args2 = backends.cuda_scores_launch(lab, pv, c, 9, thr, gsc, gcand, dummy,
                                         np.zeros(1, np.int64), want_hist=False)
    kernels.launch(name, args2, grid=2, block=3)
    assert dummy[0] == 0
    np.testing.assert_array_equal(gsc, sc)
    np.testing.assert_array_equal(gcand.astype(bool), cand)
    np.testing.assert_array_equal(ghist, hist)
    assert gcount[0] == counted


def test_softmin_and_flags_kernels(kernels):
    lab, p = noisy(3, 4, 7, 6, seed=3)
    sc, cand, _, _ = ref.scores(lab, p, 4, np.zeros(4), None)
    sc[1, 0, 0] = np.nan
    sc[2] = np.nan
    out = np.zeros(3)
    kernels.launch("label_issues_softmin_f32",
                   (sc, np.int64(3), np.int64(42), np.float64(0.1), out), grid=2, block=2)
    np.testing.assert_allclose(out, ref.softmin(sc, 0.1), rtol=1e-12)
    key = int(np.median(ref.order_keys(sc[:2][np.isfinite(sc[:2])])))
    flags = np.zeros(sc.size, np.uint8)
    kernels.launch("label_issues_flags_f32", (sc.ravel(), cand.astype(np.uint8).ravel(),
                                              np.int64(sc.size), np.uint32(key), flags))
    np.testing.assert_array_equal(flags.astype(bool), ref.flags(sc, cand, key).ravel())
