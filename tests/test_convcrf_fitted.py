"""A fitted ConvCRF setting (per-class weights, C x C compatibility) through ``segkit.convcrf``
on every backend, against the torch reference; the one record (ConvCrfParams) and its
round trip; and the jobs' CRF application (``jobs.settings.EnsembleSetting.scores``)
bit-identical to the trainable forward it ran before issue 26."""
from __future__ import annotations

import numpy as np
import pytest

import segkit
from segkit.errors import InputError
from segkit.jobs import settings
from segkit.ops import convcrf_grad
from segkit.ops.convcrf import convcrf_params

from .conftest import require_backend
from .test_convcrf import assert_scores_match, scene, torch_reference

C = 5
WEIGHT = [0.1, 0.35, 0.2, 0.05, 0.3]


def _compat(c=C):
    return (0.1 * np.sin(np.arange(c * c, dtype=np.float64) * 1.3).reshape(c, c)).tolist()


CASES = {
    "weight-blur4": dict(filter_size=7, blur=4, num_iter=3, weight=WEIGHT),
    "weight-compat-blur1": dict(filter_size=5, blur=1, num_iter=3, weight=WEIGHT,
                                compat=_compat()),
    "compat-probs-blur2": dict(filter_size=5, blur=2, num_iter=2, unary_kind="probs",
                               compat=_compat()),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("backend", ["numpy", "numba", "cpp", "cuda"])
def test_fitted_setting_every_backend(backend, case):
    require_backend(backend)
    kw = CASES[case]
    unary, image = scene(2, C, 29, 34, seed=3, kind=kw.get("unary_kind", "logits"))
    out = segkit.convcrf(unary, image, backend=backend, **kw)
    assert_scores_match(np.asarray(out), torch_reference(unary, image, **kw))


def test_fitted_differs_from_weight_init():
    """The per-class weights and compat reach the kernels (a test that can fail)."""
    unary, image = scene(1, C, 24, 24, seed=1)
    plain = segkit.convcrf(unary, image, filter_size=5, blur=1, num_iter=2, backend="cpp")
    fitted = segkit.convcrf(unary, image, filter_size=5, blur=1, num_iter=2, backend="cpp",
                            weight=WEIGHT, compat=_compat())
    assert float(np.abs(fitted - plain).max()) > 1e-3


def test_equal_weights_run_as_weight_init():
    unary, image = scene(1, C, 20, 23, seed=2)
    a = segkit.convcrf(unary, image, weight=[0.3] * C, backend="cpp")
    b = segkit.convcrf(unary, image, weight_init=0.3, backend="cpp")
    np.testing.assert_array_equal(a, b)


def test_record_round_trip_and_errors():
    p = convcrf_params("convcrf", weight=WEIGHT, compat=_compat())
    assert p.fitted and convcrf_params(None, **p.as_dict()) == p
    assert not convcrf_params("convcrf", weight=[0.2] * C).fitted
    with pytest.raises(InputError, match="weight must be C values"):
        convcrf_params(None, weight=[[0.1, 0.2]])
    with pytest.raises(InputError, match="compat must be a C x C"):
        convcrf_params(None, compat=np.ones((3, 2)))
    with pytest.raises(InputError, match="finite"):
        convcrf_params(None, weight=[0.1, float("nan")])
    unary, image = scene(1, C, 12, 12)
    with pytest.raises(InputError, match="weight has 3 values for 5 classes"):
        segkit.convcrf(unary, image, weight=[0.1, 0.2, 0.3])


def _old_crf_scores(mean, image, crf):
    """The jobs' scores of a fitted setting before issue 26: the kernel arguments
    packed by hand, the training forward (which kept the messages of every iteration)."""
    weight = crf["weight"]
    unary = np.maximum(np.asarray(mean, np.float32), np.float32(settings.PROB_FLOOR))
    p = convcrf_params(None, **{k: v for k, v in crf.items() if k != "weight"})
    img = np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1)[None], np.float32)
    out, _ = convcrf_grad.forward(np.ascontiguousarray(unary[None]), img, None, p,
                                  np.asarray(weight, np.float32), None, keep=False)
    return out[0]


@pytest.mark.parametrize("preset", ["convcrf", "seed"])
def test_jobs_fitted_crf_bit_identical(preset):
    logits, image = scene(1, C, 37, 41, seed=5)
    e = np.exp(logits[0] - logits[0].max(0))
    mean = (e / e.sum(0)).astype(np.float16)
    crf = settings.EnsembleSetting.preset(preset, num_iter=3).to_dict()["crf"]
    crf["weight"] = WEIGHT
    setting = settings.EnsembleSetting(crf=convcrf_params(None, **crf))
    np.testing.assert_array_equal(setting.scores(mean, image[0]),
                                  _old_crf_scores(mean, image[0], crf))


def test_module_gives_the_record():
    """ConvCRF(trainable=True).fitted_params() applied by segkit.convcrf equals the module."""
    import torch

    from segkit.torch import ConvCRF

    crf = ConvCRF(preset="convcrf", trainable=True, num_classes=C, convcomp=True,
                  filter_size=5, blur=2, num_iter=2)
    with torch.no_grad():
        crf.weight.copy_(torch.tensor(WEIGHT))
    unary, image = scene(1, C, 21, 26, seed=4)
    img = np.ascontiguousarray(image.transpose(0, 3, 1, 2), np.float32)
    ref = crf(torch.from_numpy(unary).requires_grad_(True), torch.from_numpy(img))
    p = crf.fitted_params()
    assert p.fitted and p.compat is not None
    out = segkit.convcrf(unary, image, backend="cpp", **p.as_dict())
    assert_scores_match(out, ref.detach().numpy())


def test_check_crf_takes_compat():
    crf = {**settings.EnsembleSetting.preset("convcrf").to_dict()["crf"], "weight": WEIGHT,
           "compat": _compat()}
    out = settings.check_crf(crf, num_classes=C)
    assert np.allclose(out["compat"], _compat(), atol=1e-7)
    with pytest.raises(InputError, match="compat is 5 x 5 for 4 classes"):
        settings.check_crf({k: v for k, v in crf.items() if k != "weight"}, num_classes=4)
    with pytest.raises(InputError, match="compat must be a C x C"):
        settings.check_crf({**crf, "compat": [[1.0, 2.0]]})


def test_module_takes_the_record():
    """ConvCRF(trainable=True) built from a fitted record starts from its weight and compat;
    without training it applies the same CRF as segkit.convcrf."""
    import torch

    from segkit.torch import ConvCRF

    p = convcrf_params("convcrf", filter_size=5, blur=2, num_iter=2, weight=WEIGHT,
                       compat=_compat())
    crf = ConvCRF(trainable=True, num_classes=C, **p.as_dict())
    assert crf.compat is not None
    np.testing.assert_allclose(crf.weight.detach().numpy(), WEIGHT, rtol=1e-7)
    unary, image = scene(1, C, 18, 22, seed=6)
    img = np.ascontiguousarray(image.transpose(0, 3, 1, 2), np.float32)
    out = crf(torch.from_numpy(unary).requires_grad_(True), torch.from_numpy(img))
    assert_scores_match(out.detach().numpy(),
                        np.asarray(segkit.convcrf(unary, image, backend="cpp", **p.as_dict())))
    with pytest.raises(InputError, match="weight has 5 values for 4 classes"):
        ConvCRF(trainable=True, num_classes=4, **p.as_dict())


# ---- issue 26 part 2: one kernel family (the inference kernel runs the trainable forward) ----

def _fitted_reference(unary, image, p, weight, compat, mask):
    """The float64 trainable reference (per-class weights, compat, validity mask)."""
    import torch

    from segkit.reference.convcrf_grad import conv_crf_torch

    t = lambda x: None if x is None else torch.as_tensor(np.asarray(x, np.float64))  # noqa: E731
    f = lambda v: torch.tensor(float(v), dtype=torch.float64)  # noqa: E731
    k = p.kernel_constants()
    out = conv_crf_torch(
        t(unary), t(image), weight=t(weight), pos_compat=f(k["pos_compat"]),
        col_compat=f(k["col_compat"]), pos_inv=f(k["pos_inv"]), col_inv=f(k["col_inv"]),
        colpos_inv=None if k["colpos_inv"] is None else f(k["colpos_inv"]), compat=t(compat),
        mask=None if mask is None else torch.as_tensor(mask.astype(bool)),
        filter_size=p.filter_size, blur=p.blur, num_iter=p.num_iter,
        unary_kind=p.unary_kind, init=p.init)
    return out.numpy()


KERNEL_CASES = {  # (classes, h, w, setting): the register path (C <= 16) and the row path
    "regs-blur1": (5, 23, 29, dict(filter_size=5, blur=1, num_iter=3)),
    "regs-blur4": (7, 30, 37, dict(filter_size=7, blur=4, num_iter=3, col_sdims=6.0)),
    "rows-blur2": (18, 21, 26, dict(filter_size=5, blur=2, num_iter=2, unary_kind="probs")),
    "rows-blur1": (17, 17, 19, dict(filter_size=3, blur=1, num_iter=3, init="softmax")),
}


@pytest.mark.parametrize("case", list(KERNEL_CASES))
@pytest.mark.parametrize("extras", ["weight", "weight-compat-mask", "mask"])
def test_inference_kernel_fitted_every_isa(simd_isa, case, extras):
    """_C.convcrf with per-class weights, compat and a mask, against the float64 trainable
    reference, on every SIMD path; `saved` receives the pooled messages (nonzero, finite)."""
    from segkit import _C

    c, h, w, kw = KERNEL_CASES[case]
    unary, image = scene(2, c, h, w, seed=11, kind=kw.get("unary_kind", "logits"),
                         layout="nchw")
    p = convcrf_params(None, **kw)
    rng = np.random.default_rng(c)
    weight = rng.uniform(0.05, 0.4, c).astype(np.float32) if "weight" in extras else None
    compat = (0.1 * rng.standard_normal((c, c))).astype(np.float32) if "compat" in extras else None
    mask = None
    if "mask" in extras:
        mask = np.ones((2, h, w), np.uint8)
        mask[0, : h // 3, :] = 0  # whole pooled cells invalid
        mask[1, :, w // 2:] = rng.integers(0, 2, (h, w - w // 2))  # scattered
    hp, wp = -(-h // p.blur), -(-w // p.blur)
    saved = np.zeros((2, p.num_iter, c, hp, wp), np.float32)
    out = np.ascontiguousarray(unary.copy())
    _C.convcrf(out, image.astype(np.float32), p.kernel_params, weight=weight, compat=compat,
               mask=mask, saved=saved)
    ref = _fitted_reference(unary, image, p, weight if weight is not None else
                            np.full(c, 0.2, np.float32), compat, mask)
    assert_scores_match(out, ref.astype(np.float32))
    assert np.isfinite(saved).all()
    assert (np.abs(saved).reshape(2 * p.num_iter, -1).max(1) > 0).all()  # every slice written


def test_inference_kernel_mask_all_valid_is_no_mask():
    """An all-valid mask gives the unmasked result (the general path against the scalar one,
    within float32 rounding; the general path softmax and pooling round differently)."""
    from segkit import _C

    require_backend("cpp")
    unary, image = scene(1, 6, 31, 33, seed=4, layout="nchw")
    p = convcrf_params(None, filter_size=7, blur=4, num_iter=3)
    a = unary.copy()
    _C.convcrf(a, image, p.kernel_params)
    b = unary.copy()
    _C.convcrf(b, image, p.kernel_params, mask=np.ones((1, 31, 33), np.uint8))
    assert_scores_match(b, a, rtol=1e-5)
    assert not np.array_equal(a, unary)


@pytest.mark.parametrize("k,blur", [(11, 4), (7, 1), (5, 2)])
def test_trainable_forward_is_the_inference_kernel(k, blur):
    """With equal weights, no mask and no compat the trainable forward (the op
    convcrf_grad_forward) returns segkit.convcrf's scores bit for bit, and its saved messages
    equal the inference kernel's."""
    from segkit import _C

    require_backend("cpp")
    unary, image = scene(2, 9, 27, 35, seed=6, layout="nchw")
    img = np.ascontiguousarray(image, np.float32)
    p = convcrf_params(None, filter_size=k, blur=blur, num_iter=3)
    out, saved = convcrf_grad.forward(unary, img, None, p, np.full(9, 0.2, np.float32), None)
    ref = segkit.convcrf(unary, image, filter_size=k, blur=blur, num_iter=3, backend="cpp")
    np.testing.assert_array_equal(out, ref)
    s2 = np.zeros_like(saved)
    a = unary.copy()
    _C.convcrf(a, img, p.kernel_params, saved=s2)
    np.testing.assert_array_equal(s2, saved)
    np.testing.assert_array_equal(a, ref)


def test_inference_kernel_rejects_bad_fitted_arrays():
    from segkit import _C

    require_backend("cpp")
    unary, image = scene(1, 4, 8, 8, layout="nchw")
    p = convcrf_params(None, filter_size=3, blur=1, num_iter=1).kernel_params
    with pytest.raises(Exception, match="weight"):
        _C.convcrf(unary.copy(), image, p, weight=np.ones(3, np.float32))
    with pytest.raises(Exception, match="mask"):
        _C.convcrf(unary.copy(), image, p, mask=np.ones((1, 8, 7), np.uint8))
    with pytest.raises(Exception, match="saved"):
        _C.convcrf(unary.copy(), image, p, saved=np.ones((1, 1, 4, 8, 9), np.float32))
