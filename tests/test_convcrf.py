"""ConvCRF: every backend against the torch unfold reference (ConvCRF's own method), the NumPy
reference against torch, hand-computed tiny cases, the presets, and bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import segkit
from segkit.ops.convcrf import convcrf_params
from segkit.reference.convcrf import convcrf_torch, pool_geometry
from segkit.synthetic import crf_scene

from .conftest import require_backend

RTOL = 1e-4


def scene(n, c, h, w, *, seed=0, kind="logits", layout="nhwc", dtype=np.float32):
    """Blobby unaries over images with sharp edges; probabilities for kind="probs"."""
    image, _, logits = crf_scene(max(n, 1), h, w, c, scale=max(4, min(h, w) // 2),
                                 coarse=4, seed=seed)
    image, logits = image[:n], logits[:n]
    if kind == "probs":
        e = np.exp(logits - logits.max(1, keepdims=True))
        logits = e / e.sum(1, keepdims=True)
    if layout == "nchw":
        image = np.ascontiguousarray(image.transpose(0, 3, 1, 2))
    return logits.astype(dtype), image


def torch_reference(unary, image, **kw):
    """The torch reference on canonical layouts (NCHW image, float32 unary)."""
    params = convcrf_params(kw.pop("preset", None), **kw).reference_kwargs()
    u = np.asarray(unary, np.float32)
    img = np.asarray(image, np.float32)
    if img.shape[1] != 3:
        img = img.transpose(0, 3, 1, 2)
    if u.shape[0] == 0:
        return u.copy()
    return convcrf_torch(u, np.ascontiguousarray(img), **params)


def assert_scores_match(out, ref, rtol=RTOL):
    """Scores within rtol (relative to the largest finite score) and identical argmax except
    where the reference's two best classes are closer than that tolerance."""
    assert out.shape == ref.shape and out.dtype == np.float32
    if ref.size == 0:
        return
    finite = np.isfinite(ref)
    scale = float(np.abs(ref[finite]).max()) if finite.any() else 1.0
    np.testing.assert_allclose(out, ref, rtol=rtol, atol=rtol * scale)
    la, lb = out.argmax(-3), ref.argmax(-3)
    if (la != lb).any():
        top = np.sort(np.moveaxis(ref, -3, -1), axis=-1)
        margin = (top[..., -1] - top[..., -2])[la != lb]
        assert margin.max() <= 2 * rtol * scale, f"argmax differs at {int((la != lb).sum())} " \
            f"pixels with margins up to {margin.max():.3g}"


# (n, c, h, w, filter_size, blur, more settings)
CASES = [
    pytest.param(1, 11, 37, 53, 11, 4, {}, id="default-37x53-blur4"),
    pytest.param(3, 2, 37, 53, 5, 4, {}, id="batch3-C2-k5-blur4"),
    pytest.param(1, 11, 37, 53, 7, 1, {}, id="k7-blur1"),
    pytest.param(1, 2, 30, 41, 3, 2, {}, id="k3-blur2"),
    pytest.param(3, 11, 23, 19, 11, 2, {}, id="batch3-k11-blur2"),
    pytest.param(1, 11, 40, 36, 3, 1, {"unary_kind": "probs"}, id="probs-k3-blur1"),
    pytest.param(1, 5, 37, 53, 5, 4, {"init": "softmax"}, id="init-softmax"),
    pytest.param(2, 4, 33, 29, 5, 2, {"unary_kind": "probs", "init": "softmax",
                                      "final_softmax": True}, id="probs-softmax-final"),
    pytest.param(1, 3, 25, 31, 5, 1, {"col_sdims": 5.0, "pos_sdims": 2.0, "col_schan": 20.0,
                                      "pos_compat": 2.0, "col_compat": 5.0, "weight_init": 0.3,
                                      "unary_weight": 1.5, "num_iter": 3}, id="all-settings"),
    pytest.param(1, 19, 20, 22, 3, 4, {"col_sdims": 80.0}, id="C19-colour-position"),
    pytest.param(0, 3, 10, 12, 11, 4, {}, id="empty-batch"),
    pytest.param(1, 2, 1, 1, 3, 1, {}, id="one-pixel"),
    pytest.param(1, 3, 1, 9, 5, 4, {}, id="one-row-blur4"),
    pytest.param(1, 3, 3, 3, 11, 4, {}, id="smaller-than-cell"),
    pytest.param(1, 13, 17, 40, 1, 2, {}, id="k1"),
]


@pytest.mark.parametrize("n, c, h, w, k, blur, more", CASES)
def test_fast_backends_match_torch_reference(fast_backend, n, c, h, w, k, blur, more):
    kind = more.get("unary_kind", "logits")
    unary, image = scene(n, c, h, w, seed=n + c + h, kind=kind)
    kw = dict(filter_size=k, blur=blur, **more)
    ref = torch_reference(unary, image, **kw)
    out = segkit.convcrf(unary, image, backend=fast_backend, **kw)
    assert_scores_match(out, ref)


@pytest.mark.parametrize("n, c, h, w, k, blur, more", [
    CASES[0], CASES[2], CASES[3], CASES[7], CASES[8], CASES[12]])
def test_numpy_reference_matches_torch_reference(n, c, h, w, k, blur, more):
    unary, image = scene(n, c, h, w, seed=1, kind=more.get("unary_kind", "logits"))
    kw = dict(filter_size=k, blur=blur, **more)
    assert_scores_match(segkit.convcrf(unary, image, backend="numpy", **kw),
                        torch_reference(unary, image, **kw))


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_layouts_and_float16(fast_backend, layout, dtype):
    unary, image = scene(2, 6, 29, 35, seed=4, layout=layout, dtype=dtype)
    ref = torch_reference(unary.astype(np.float32), image, blur=2, filter_size=5)
    out = segkit.convcrf(unary, image, blur=2, filter_size=5, backend=fast_backend)
    assert out.dtype == np.float32
    assert_scores_match(out, ref)


def test_single_image_layouts_and_float_image(fast_backend):
    unary, image = scene(1, 4, 21, 26, seed=5)
    ref = torch_reference(unary, image, blur=2)
    for img in (image[0], np.ascontiguousarray(image[0].transpose(2, 0, 1)),
                image[0].astype(np.float32), image[0].astype(np.float64)):
        out = segkit.convcrf(unary[0], img, blur=2, backend=fast_backend)
        assert out.shape == unary.shape[1:]
        assert_scores_match(out, ref[0])


def test_strided_and_reversed_views(fast_backend):
    unary, image = scene(2, 5, 30, 40, seed=6)
    big_u = np.zeros((2, 5, 60, 40), np.float32)
    big_u[:, :, ::2] = unary
    flipped = image[:, :, ::-1].copy()
    ref = torch_reference(unary, flipped, filter_size=7, blur=2)
    out = segkit.convcrf(big_u[:, :, ::2], flipped[:, :, ::-1][:, :, ::-1], filter_size=7, blur=2,
                         backend=fast_backend)
    assert_scores_match(out, ref)


@pytest.mark.parametrize("preset", ["convcrf", "seed"])
def test_presets(fast_backend, preset):
    """The seed preset (200 iterations, probabilities passed as logits) on a tiny image."""
    unary, image = scene(1, 3, 12, 15, seed=7, kind="probs")
    kind = "logits" if preset == "seed" else "probs"
    ref = torch_reference(unary, image, preset=preset, unary_kind=kind)
    out = segkit.convcrf(unary, image, preset=preset, unary_kind=kind, backend=fast_backend)
    assert_scores_match(out, ref)


def test_preset_contents():
    assert set(segkit.CRF_PRESETS) == {"convcrf", "seed"}
    conv = segkit.CRF_PRESETS["convcrf"]
    assert (conv["filter_size"], conv["blur"], conv["num_iter"]) == (11, 4, 5)
    assert (conv["pos_sdims"], conv["pos_compat"], conv["col_schan"], conv["col_compat"]) == \
        (3.0, 3.0, 13.0, 10.0)
    assert (conv["weight_init"], conv["unary_weight"], conv["col_sdims"]) == (0.2, 1.0, None)
    seed = segkit.CRF_PRESETS["seed"]
    assert (seed["filter_size"], seed["blur"], seed["num_iter"], seed["unary_kind"]) == \
        (5, 1, 200, "logits")
    # explicit arguments win over the preset; None means "the preset's value"
    p = convcrf_params("seed", num_iter=3, blur=None)
    assert (p.num_iter, p.blur, p.filter_size) == (3, 1, 5)


def test_simd_paths_agree(simd_isa):
    for blur, k in ((1, 5), (4, 11)):
        unary, image = scene(1, 11, 45, 70, seed=8)
        ref = torch_reference(unary, image, filter_size=k, blur=blur)
        assert_scores_match(segkit.convcrf(unary, image, filter_size=k, blur=blur,
                                           backend="cpp"), ref)


# Every class block of the C++ kernels: the message runs blocks of 1-12 classes (C > 12 split
# into near-equal blocks), the update keeps up to 4, 8, 12 or 16 classes in registers and
# switches to row buffers beyond 16; blur 1 fuses message and update per row, blur > 1 pools.
CLASS_COUNTS = list(range(1, 21)) + [23, 25, 29, 33]


@pytest.mark.parametrize("blur", [1, 2, 4])
@pytest.mark.parametrize("c", CLASS_COUNTS)
def test_every_isa_and_class_block(simd_isa, c, blur):
    """The compiled kernels of this CPU's every instruction set against the torch reference,
    called through the parameter record (C = 1 is below the public API's minimum of 2 but
    inside the kernels' contract). 13 x 37 pixels: whole vectors plus a tail at every width."""
    from segkit import _C
    from segkit.ops.convcrf_backends import _run_cpp

    rng = np.random.default_rng(100 * c + blur)
    unary = (3 * rng.standard_normal((1, c, 13, 37))).astype(np.float32)
    image = rng.integers(0, 256, (1, 3, 13, 37)).astype(np.uint8)
    for kw in ({}, dict(filter_size=5, unary_kind="probs", final_softmax=True),
               dict(filter_size=7, init="softmax", col_sdims=40.0)):
        params = convcrf_params(blur=blur, num_iter=3, **kw)
        u = unary
        if params.unary_kind == "probs":
            e = np.exp(unary - unary.max(1, keepdims=True))
            u = (e / e.sum(1, keepdims=True)).astype(np.float32)
        assert _C.simd_isa() == simd_isa
        out = _run_cpp(u.copy(), image, params)
        ref = convcrf_torch(u, image.astype(np.float32), **params.reference_kwargs())
        assert_scores_match(out, ref)


def test_parameter_record():
    """One record per setting, bound from C++: the fields are the kernel constants, the codes
    are names, and a bad name is refused with the names it takes."""
    require_backend("cpp")
    from segkit import _C

    p = convcrf_params("seed", unary_kind="probs", col_sdims=50.0)
    record = p.kernel_params
    assert isinstance(record, _C.ConvCrfParams) and p.kernel_params is record
    for name, value in p.kernel_constants().items():
        got = getattr(record, name)
        assert got == (value if not isinstance(value, float) else pytest.approx(value)), name
    assert (record.unary_kind, record.init, record.filter_size) == ("probs", "convcrf", 5)
    with pytest.raises(ValueError, match="unary_kind must be one of 'logits', 'probs'"):
        record.unary_kind = "scores"
    record2 = _C.ConvCrfParams()
    record2.colpos_inv = None
    assert record2.colpos_inv is None


def test_threads_do_not_change_results():
    require_backend("cpp")
    unary, image = scene(2, 7, 50, 33, seed=9)
    full = segkit.convcrf(unary, image, filter_size=5, blur=1, backend="cpp")
    segkit.set_num_threads(1)
    try:
        one = segkit.convcrf(unary, image, filter_size=5, blur=1, backend="cpp")
    finally:
        segkit.set_num_threads(0)
    np.testing.assert_array_equal(one, full)


# ---- hand-computed cases --------------------------------------------------------------------

def test_one_pixel_by_hand(fast_backend):
    """One pixel: only d = 0, K = 3 + 10 = 13. ConvCRF's start Q_0 = U gives after one
    iteration pred = 0.8 U + 0.2 * 13 U = 3.4 U, then softmax, then 0.8 U + 2.6 Q_1."""
    x = np.array([0.5, -1.0, 2.0], np.float32).reshape(3, 1, 1)
    img = np.array([[[10, 20, 30]]], np.uint8)
    u = x - x.max() - np.log(np.exp(x - x.max()).sum())
    one = segkit.convcrf(x, img, num_iter=1, backend=fast_backend)
    np.testing.assert_allclose(one, 3.4 * u, rtol=1e-5)
    q1 = np.exp(3.4 * u) / np.exp(3.4 * u).sum()
    two = segkit.convcrf(x, img, num_iter=2, backend=fast_backend)
    np.testing.assert_allclose(two, 0.8 * u + 2.6 * q1, rtol=1e-5)


def test_two_pixels_by_hand(fast_backend):
    """Two pixels of one colour side by side, blur 1: the neighbour's weight is
    3 exp(-(1/3)^2 / 2) + 10. Textbook start Q_0 = softmax(U), one iteration."""
    x = np.array([[[1.0, -0.5]], [[0.0, 0.7]]], np.float32)  # (C=2, H=1, W=2)
    img = np.full((1, 2, 3), 128, np.uint8)
    u = x - np.log(np.exp(x).sum(0, keepdims=True))
    q = np.exp(u)
    kn = 3 * math.exp(-0.5 * (1 / 3) ** 2) + 10
    msg = 13 * q + kn * q[:, :, ::-1]
    out = segkit.convcrf(x, img, filter_size=3, blur=1, num_iter=1, init="softmax",
                         backend=fast_backend)
    np.testing.assert_allclose(out, 0.8 * u + 0.2 * msg, rtol=1e-5)


@pytest.mark.parametrize("n, blur, pooled, pad", [
    (37, 4, 10, 2), (36, 4, 9, 0), (5, 4, 2, 2), (1, 4, 1, 2), (7, 2, 4, 1), (8, 2, 4, 0),
    (9, 1, 9, 0), (13, 6, 3, 3)])
def test_pool_geometry(n, blur, pooled, pad):
    assert pool_geometry(n, blur) == (pooled, pad)
    x = torch.zeros(1, 1, n, n)
    got = torch.nn.functional.avg_pool2d(x, blur, padding=pad, count_include_pad=False)
    assert got.shape[-1] == pooled


def test_zero_and_subnormal_probabilities_like_convcrf(fast_backend):
    """Zeros give -inf scores for their class, as in ConvCRF; subnormal probabilities are read
    as they are (log(1e-40) = -92.1), though the kernels flush subnormal intermediates."""
    unary, image = scene(1, 4, 20, 24, seed=10, kind="probs")
    unary = unary.astype(np.float16).astype(np.float32)
    unary[0, 2, :5, :5] = 0
    unary[0, 1, 10:, 10:] = 1e-40
    ref = torch_reference(unary, image, unary_kind="probs", blur=2, filter_size=5)
    out = segkit.convcrf(unary, image, unary_kind="probs", blur=2, filter_size=5,
                         backend=fast_backend)
    assert np.isneginf(out[0, 2, :5, :5]).all()
    assert_scores_match(out, ref)


# ---- labels, torch, memory ------------------------------------------------------------------

def test_convcrf_labels():
    unary, image = scene(2, 3, 16, 18, seed=11)
    labels = segkit.convcrf_labels(unary, image, blur=2, filter_size=5)
    assert labels.dtype == np.uint8 and labels.shape == (2, 16, 18)
    np.testing.assert_array_equal(
        labels, segkit.convcrf(unary, image, blur=2, filter_size=5).argmax(1))
    many = np.random.default_rng(0).standard_normal((257, 4, 5)).astype(np.float32)
    big = segkit.convcrf_labels(many, image[0, :4, :5], filter_size=3, blur=1)
    assert big.dtype == np.int32 and big.shape == (4, 5)
    with pytest.raises(TypeError, match="unexpected keyword argument 'filtersize'"):
        segkit.convcrf_labels(unary, image, filtersize=3)


def test_torch_tensors_and_module():
    from segkit.torch import ConvCRF

    unary, image = scene(2, 5, 24, 30, seed=12)
    ref = torch_reference(unary, image, blur=2)
    t_unary = torch.from_numpy(unary).requires_grad_(True)
    out = ConvCRF(blur=2)(t_unary, torch.from_numpy(image))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert_scores_match(out.numpy(), ref)
    assert torch.equal(ConvCRF(blur=2).labels(t_unary, torch.from_numpy(image)),
                       torch.from_numpy(ref.argmax(1)))
    plain = segkit.convcrf(t_unary, torch.from_numpy(image), blur=2)  # autograd history is fine
    assert isinstance(plain, np.ndarray)
    assert_scores_match(plain, ref)
    with pytest.raises(ValueError, match="blur must be 1 or even"):
        ConvCRF(blur=3)


def test_fused_memory_is_far_below_unfold():
    """At 512x512, k=11, blur 1 ConvCRF's unfold tensor alone is 1.4 GB; the fused C++
    workspace is the half-offset weights, two pooled Q and row buffers: O(C*H*W + k*k*H*W)."""
    require_backend("cpp")
    from segkit import _C

    c, h, w, k = 11, 512, 512, 11
    scores = np.zeros((1, c, h, w), np.float32)
    image = np.zeros((1, 3, h, w), np.uint8)
    unfold = c * k * k * h * w * 4
    ws = _C.convcrf_workspace_bytes(scores, image,
                                    convcrf_params(filter_size=k, blur=1).kernel_params)
    bound = 4 * ((k * k // 2) * (h + k) * (w + 2 * k + 16) + 2 * c * (h + k) * (w + 2 * k + 16)
                 + 7 * h * w + 64 * c * (w + 16))
    assert ws <= bound and ws < unfold / 9
    ws4 = _C.convcrf_workspace_bytes(scores, image,  # blur 4: 16x fewer cells
                                     convcrf_params(filter_size=k, blur=4).kernel_params)
    assert ws4 < ws / 3


def test_workspace_cache_can_be_released():
    require_backend("cpp")
    from segkit import _C

    unary, image = scene(1, 3, 40, 40, seed=13)
    segkit.convcrf(unary, image, backend="cpp")
    assert _C.convcrf_cached_workspace() > 0
    assert _C.convcrf_release_workspace() > 0
    assert _C.convcrf_cached_workspace() == 0


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 2), c=st.integers(2, 6), h=st.integers(1, 23), w=st.integers(1, 23),
       k=st.sampled_from([1, 3, 5, 7]), blur=st.sampled_from([1, 2, 4]),
       iters=st.integers(1, 4), kind=st.sampled_from(["logits", "probs"]),
       init=st.sampled_from(["convcrf", "softmax"]), seed=st.integers(0, 2 ** 16))
def test_cpp_matches_numpy_reference_on_random_inputs(n, c, h, w, k, blur, iters, kind, init,
                                                      seed):
    require_backend("cpp")
    rng = np.random.default_rng(seed)
    unary = rng.standard_normal((n, c, h, w)).astype(np.float32) * 2
    if kind == "probs":
        unary = np.exp(unary) / np.exp(unary).sum(1, keepdims=True)
    image = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    kw = dict(filter_size=k, blur=blur, num_iter=iters, unary_kind=kind, init=init)
    ref = segkit.convcrf(unary, image, backend="numpy", **kw)
    assert_scores_match(segkit.convcrf(unary, image, backend="cpp", **kw), ref)


# ---- bad input ------------------------------------------------------------------------------

GOOD_U = np.zeros((2, 3, 8, 9), np.float32)
GOOD_I = np.zeros((2, 8, 9, 3), np.uint8)
NAN_U = GOOD_U.copy()
NAN_U[0, 1, 2, 3] = np.nan
INF_U = GOOD_U.copy()
INF_U[1, 0, 0, 0] = -np.inf
NEG_P = np.full((2, 3, 8, 9), 1 / 3, np.float32)
NEG_P[0, 0, 0, 0] = -0.1
ZERO_P = np.full((2, 3, 8, 9), 1 / 3, np.float32)
ZERO_P[1, :, 4, 4] = 0
NAN_I = GOOD_I.astype(np.float32)
NAN_I[0, 0, 0, 0] = np.nan

BAD = [
    (dict(unary=GOOD_U[0, 0]), ValueError, r"unary must be \(C, H, W\) or \(N, C, H, W\); got "
     r"shape \(8, 9\)"),
    (dict(unary=GOOD_U[:, :1]), ValueError, "at least 2 classes; got C=1"),
    (dict(image=GOOD_I[:, :7]), ValueError, r"image must be \(N, 3, H, W\) = \(2, 3, 8, 9\) or "
     r"\(N, H, W, 3\) = \(2, 8, 9, 3\).*got shape \(2, 7, 9, 3\)"),
    (dict(image=GOOD_I[:1]), ValueError, r"got shape \(1, 8, 9, 3\)"),
    (dict(image=GOOD_I[0]), ValueError, r"image must be \(N, 3, H, W\)"),
    (dict(unary=GOOD_U[0], image=GOOD_I), ValueError, r"image must be \(H, W, 3\) or \(3, H, W\)"),
    (dict(unary=NAN_U), ValueError, r"unary contains NaN or inf \(1 values\)"),
    (dict(unary=INF_U), ValueError, "unary contains NaN or inf"),
    (dict(unary=GOOD_U.astype(np.int32)), TypeError, "unary must be float32 or float16"),
    (dict(image=GOOD_I.astype(np.int32)), TypeError, "image must be uint8 or floating point"),
    (dict(image=NAN_I), ValueError, "image contains NaN or inf"),
    (dict(filter_size=4), ValueError, "filter_size must be odd; got 4"),
    (dict(filter_size=0), ValueError, "filter_size must be >= 1; got 0"),
    (dict(filter_size=3.0), TypeError, "filter_size must be an integer"),
    (dict(blur=3), ValueError, r"blur must be 1 or even \(ConvCRF's pooling\); got 3"),
    (dict(blur=0), ValueError, "blur must be >= 1; got 0"),
    (dict(num_iter=0), ValueError, "num_iter must be >= 1; got 0"),
    (dict(pos_sdims=0), ValueError, "pos_sdims must be > 0; got 0.0"),
    (dict(col_schan=-13), ValueError, "col_schan must be > 0; got -13.0"),
    (dict(col_sdims=0.0), ValueError, "col_sdims must be > 0; got 0.0"),
    (dict(pos_compat=float("inf")), ValueError, "pos_compat must be finite; got inf"),
    (dict(weight_init="0.2"), TypeError, "weight_init must be a real number"),
    (dict(preset="crf"), ValueError, "preset must be one of 'convcrf', 'seed'; got 'crf'"),
    (dict(unary_kind="logit"), ValueError,
     "unary_kind must be one of 'logits', 'probs'; got 'logit'"),
    (dict(init="random"), ValueError, "init must be one of 'convcrf', 'softmax'; got 'random'"),
    (dict(final_softmax="yes"), TypeError, "final_softmax must be True or False"),
    (dict(unary=NEG_P, unary_kind="probs"), ValueError, "needs probabilities >= 0; got a "
     "minimum of -0.1"),
    (dict(unary=ZERO_P, unary_kind="probs"), ValueError, "probability 0 for every class"),
    (dict(backend="gpu"), ValueError, "backend must be one of"),
]


@pytest.mark.parametrize("kwargs, exc, match", BAD)
def test_bad_input(kwargs, exc, match):
    kw = dict(kwargs)
    unary = kw.pop("unary", GOOD_U)
    image = kw.pop("image", GOOD_I)
    with pytest.raises(exc, match=match):
        segkit.convcrf(unary, image, **kw)


@pytest.mark.parametrize("backend", ["numpy", "cpp"])
def test_unary_is_read_not_written(backend):
    # the C++ runner reads the caller's float32 unary in place (no copy): it must not write it
    require_backend(backend)
    unary, image = scene(1, 5, 20, 23, seed=4)
    unary = unary[0]
    keep = unary.copy()
    unary.flags.writeable = False
    out = segkit.convcrf(unary, image[0], backend=backend)
    np.testing.assert_array_equal(unary, keep)
    assert not np.shares_memory(out, unary)
    # a float64 unary takes the copying path: the same scores
    np.testing.assert_array_equal(out, segkit.convcrf(keep.astype(np.float64), image[0],
                                                      backend=backend))


def test_finiteness_check_is_exact():
    # the fast test (a finite float32 sum of squares) must not reject large finite values,
    # whose squares overflow, nor pass a NaN or inf wherever it is
    from segkit.ops.convcrf import all_finite

    big = np.full((2, 3, 8, 9), 3e38, np.float32)
    assert all_finite(big, np) and all_finite(big[:, ::2], np)
    for bad in (np.nan, np.inf, -np.inf):
        for a in (GOOD_U.copy(), big.copy()):
            a[1, 2, 7, 8] = bad
            assert not all_finite(a, np) and not all_finite(a[:, 1:], np)
    segkit.convcrf(GOOD_U + np.float32(1e20), GOOD_I, backend="numpy")  # no error


@pytest.mark.parametrize("fitted", [False, True])
def test_cpp_kernel_finds_a_non_finite_logit_anywhere(fitted):
    """On the C++ backend the kernel's first pass checks a logits unary (no scan before it):
    NaN, inf or -inf at any class, row or column (vector tails, both images) is refused with
    the same error as the scan's; large finite logits and zero probabilities (not checked
    there) run."""
    require_backend("cpp")
    unary, image = scene(2, 5, 13, 37, seed=6)
    kw = dict(backend="cpp", filter_size=3, blur=2, num_iter=1)
    if fitted:  # per-class weights: the trainable op's forward without saved state
        kw["weight"] = [0.1, 0.2, 0.3, 0.2, 0.1]
    rng = np.random.default_rng(3)
    for value in (np.nan, np.inf, -np.inf):
        for at in (0, unary.size - 1, 36, 13 * 37, *rng.integers(0, unary.size, 6)):
            bad = unary.copy()
            bad.reshape(-1)[at] = value
            with pytest.raises(ValueError, match=r"unary contains NaN or inf \(1 values\)"):
                segkit.convcrf(bad, image, **kw)
    huge = unary.copy()
    huge[:, 0], huge[:, 1] = 3e38, -3e38  # finite, refused by no check
    assert segkit.convcrf(huge, image, **kw).shape == huge.shape
    assert np.isfinite(segkit.convcrf(unary + np.float32(1e20), image, **kw)).all()
    probs = np.exp(unary) / np.exp(unary).sum(1, keepdims=True)
    probs[0, 1, 4, 5] = 0.0
    out = segkit.convcrf(probs, image, unary_kind="probs", **kw)
    assert out[0, 1, 4, 5] == -np.inf and np.isfinite(out).sum() == out.size - 1


@pytest.mark.parametrize("backend", ["numpy", "numba", "cpp", "cuda"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("shape", [(0, 3, 6, 7), (0, 300, 4, 4)])
def test_empty_batches_keep_dtypes(backend, dtype, shape):
    """An empty batch: float32 scores of the input's shape, labels uint8 (int32 past 256
    classes), on every backend."""
    from .conftest import to_host

    require_backend(backend)
    unary = np.zeros(shape, dtype)
    image = np.zeros((0, shape[2], shape[3], 3), np.uint8)
    scores = to_host(segkit.convcrf(unary, image, backend=backend))
    assert scores.dtype == np.float32 and scores.shape == shape
    labels = to_host(segkit.convcrf_labels(unary, image, backend=backend))
    assert labels.dtype == (np.uint8 if shape[1] <= 256 else np.int32)
    assert labels.shape == (0,) + shape[2:]
