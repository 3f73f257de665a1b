"""The trainable ConvCRF's forward and backward on every SIMD path this CPU has (base, AVX2,
AVX-512): each held to the float64 reference, and the paths to each other (issue 26 part 5:
whichever path is the default, the outputs are the same within float32 rounding)."""
from __future__ import annotations

import numpy as np
import pytest

from segkit.ops import convcrf_grad as og
from segkit.ops.convcrf import convcrf_params
from segkit.synthetic import crf_scene

from .test_convcrf_grad import check_gradients


@pytest.mark.parametrize("c,h,w,k,blur,extra", [
    (4, 23, 18, 7, 1, dict(compat=True, mask=True)),
    (21, 26, 37, 11, 4, {}),
    (9, 22, 19, 7, 2, dict(col_sdims=5.0)),
    (5, 31, 45, 5, 6, dict(mask=True)),  # blur 6: the horizontal adjoint's general block width
    # wide rows: a vector's worth of regular pooled columns (16 on AVX-512), so the horizontal
    # adjoint's vectorised block sums run, with a last block that overlaps the one before it
    (3, 9, 150, 5, 2, {}),
    (3, 13, 151, 5, 4, dict(mask=True)),
    (2, 17, 301, 3, 8, {}),
])
def test_gradients_on_every_isa(simd_isa, c, h, w, k, blur, extra):
    check_gradients(1, c, h, w, dict(filter_size=k, blur=blur, num_iter=3), **extra)


def _run(c, k, blur):
    image, _, logits = crf_scene(1, 29, 47, c, seed=7)
    img = np.ascontiguousarray(image.transpose(0, 3, 1, 2), np.float32)
    p = convcrf_params(None, filter_size=k, blur=blur, num_iter=3)
    w = np.linspace(0.1, 0.4, c).astype(np.float32)
    out, saved = og.forward(logits, img, None, p, w, None)
    g = np.random.default_rng(c).standard_normal(logits.shape).astype(np.float32)
    du, dw, dp, _ = og.backward(g, logits, img, None, p, w, None, saved)
    return out, du, dw, np.array([dp[k] for k in og.PARAMS])


@pytest.mark.parametrize("c,k,blur", [(21, 11, 4), (6, 7, 1)])
def test_isa_paths_agree_with_each_other(c, k, blur):
    from segkit import _C

    from .conftest import _simd_isas, require_backend

    require_backend("cpp")
    best = _C.simd_isa()
    try:
        runs = {}
        for isa in _simd_isas():  # every path this CPU has
            _C.set_simd_isa(isa)
            assert _C.simd_isa() == isa
            runs[isa] = _run(c, k, blur)
    finally:
        _C.set_simd_isa(best)
    first = runs[next(iter(runs))]
    for isa, got in runs.items():
        for a, b in zip(got, first):
            scale = float(np.abs(b).max())
            assert float(np.abs(a - b).max()) <= 1e-5 * scale, isa


def test_backward_leaves_the_denormal_mode_as_it_found_it():
    """The backward flushes denormals to zero on its threads (they cost an assist per FMA) and
    must restore the caller's mode: afterwards this thread still computes denormals."""
    from .conftest import require_backend

    require_backend("cpp")
    tiny = np.float32(1e-41)  # denormal in float32
    assert tiny * np.float32(2) != 0
    _run(5, 7, 2)
    assert tiny * np.float32(2) != 0
    assert np.float32(2e-41) / np.float32(2) == np.float32(1e-41)


@pytest.mark.parametrize("blur,k,final_softmax,kind,h,width", [
    (4, 11, False, "logits", 37, 45), (1, 7, False, "logits", 37, 45),
    (2, 5, True, "probs", 37, 45), (4, 5, True, "logits", 37, 45),
    (1, 5, True, "probs", 37, 45),
    # rows of two column tiles (256 each) with a tail past dw's last whole 16-lane block
    (4, 5, False, "logits", 9, 520), (1, 3, False, "logits", 5, 301)])
def test_fused_rows_equal_the_general_path_bit_for_bit(simd_isa, blur, k, final_softmax, kind,
                                                       h, width):
    """Without a compat matrix the backward runs its fused row sweeps; a zero compat matrix
    takes the general path (one helper per step, M' = M + 0 M = M exactly), whose arithmetic per
    value is the same: the gradients must be equal bit for bit, with and without a mask."""
    c = 5
    image, _, logits = crf_scene(2, h, width, c, seed=3)
    u = logits.astype(np.float32)
    if kind == "probs":
        e = np.exp(u - u.max(1, keepdims=True))
        u = (e / e.sum(1, keepdims=True)).astype(np.float32)
    img = np.ascontiguousarray(image.transpose(0, 3, 1, 2), np.float32)
    p = convcrf_params(None, filter_size=k, blur=blur, num_iter=3, final_softmax=final_softmax,
                       unary_kind=kind)
    w = np.linspace(0.1, 0.5, c).astype(np.float32)
    g = np.random.default_rng(1).standard_normal(u.shape).astype(np.float32)
    zero = np.zeros((c, c), np.float32)
    for mask in (None, (np.random.default_rng(0).random((2, h, width)) > 0.2).astype(np.uint8)):
        out, saved = og.forward(u, img, mask, p, w, None)
        fused = og.backward(g, u, img, mask, p, w, None, saved)
        out0, saved0 = og.forward(u, img, mask, p, w, zero)
        general = og.backward(g, u, img, mask, p, w, zero, saved0)
        np.testing.assert_array_equal(out, out0)
        np.testing.assert_array_equal(saved, saved0)
        np.testing.assert_array_equal(fused[0], general[0])
        np.testing.assert_array_equal(fused[1], general[1])
        assert fused[2] == general[2]
