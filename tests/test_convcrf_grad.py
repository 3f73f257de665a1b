"""Trainable ConvCRF: the unfold reference against today's forward and gradcheck; the fused
C++ backward's gradients against autograd through the reference; determinism; the torch op
(compile, autocast, DDP); the module; bad input; the decoupled-training example."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from segkit.errors import InputError, InputTypeError
from segkit.reference.convcrf import convcrf_torch
from segkit.reference.convcrf_grad import conv_crf_torch
from segkit.torch import ConvCRF, conv_crf

from .conftest import require_backend

F64 = torch.float64
RTOL32 = 1e-4  # fused float32 against the float64 reference, relative to the largest value


def make_case(n, c, h, w, *, seed=0, kind="logits", col_sdims=None, compat=False, mask=False):
    """Inputs in float32 (what the fused op sees) and the parameter values."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, c, h, w, generator=g) * 2
    if kind == "probs":
        u = torch.softmax(u, 1)
    # blocky images: colour edges that the colour kernel sees
    img = (torch.rand(n, 3, (h + 3) // 4, (w + 3) // 4, generator=g) * 255)
    img = img.repeat_interleave(4, 2).repeat_interleave(4, 3)[:, :, :h, :w].contiguous()
    p = dict(weight=0.2 + 0.1 * torch.randn(c, generator=g), pos_compat=3.0, col_compat=10.0,
             pos_sdims=3.0, col_schan=13.0, col_sdims=col_sdims)
    if compat:
        # ConvCRF's scale (its init is 0.1 * sqrt(2 / C)): larger ones saturate the softmax at
        # 150 classes, where even ConvCRF's own float32 autograd is off by 2e-4
        p["compat"] = 0.1 * math.sqrt(2 / c) * torch.randn(c, c, generator=g)
    if mask:
        m = torch.ones(n, h, w, dtype=torch.bool)
        m[:, h - max(1, h // 4):, :] = False  # padded crop: bottom rows and right columns
        m[:, :, w - max(1, w // 5):] = False
        p["mask"] = m
    return u, img, p


def reference(u, img, p, cfg, dtype=F64):
    """Scores and leaf tensors (for .grad) of the reference on the same float32 values: the
    op's named values (the bandwidths themselves, not their reciprocals)."""
    leaf = {"unary": u.to(dtype, copy=True).requires_grad_(True),
            "weight": p["weight"].to(dtype, copy=True).requires_grad_(True)}
    for k in ("pos_compat", "col_compat", "pos_sdims", "col_schan", "col_sdims"):
        if p.get(k) is not None:
            leaf[k] = torch.tensor(float(np.float32(p[k])), dtype=dtype, requires_grad=True)
    if p.get("compat") is not None:
        leaf["compat"] = p["compat"].to(dtype, copy=True).requires_grad_(True)
    out = conv_crf_torch(leaf["unary"], img.to(dtype), weight=leaf["weight"],
                         pos_compat=leaf["pos_compat"], col_compat=leaf["col_compat"],
                         pos_inv=1 / leaf["pos_sdims"], col_inv=1 / leaf["col_schan"],
                         colpos_inv=1 / leaf["col_sdims"] if "col_sdims" in leaf else None,
                         compat=leaf.get("compat"), mask=p.get("mask"), **cfg)
    return out, leaf


def fused(u, img, p, cfg):
    """Scores and the gradients w.r.t. the unary, weight, compat scalars, bandwidths and
    compat, through segkit.torch.conv_crf (the op's own chain rule, nothing around it)."""
    leaf = {"unary": u.clone().requires_grad_(True),
            "weight": p["weight"].clone().requires_grad_(True)}
    for k in ("pos_compat", "col_compat", "pos_sdims", "col_schan", "col_sdims"):
        if p.get(k) is not None:
            leaf[k] = torch.tensor(float(p[k]), requires_grad=True)
    if p.get("compat") is not None:
        leaf["compat"] = p["compat"].clone().requires_grad_(True)
    out = conv_crf(leaf["unary"], img, mask=p.get("mask"),
                   **{k: v for k, v in leaf.items() if k != "unary"}, **cfg)
    return out, leaf


def rel_err(a, ref):
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(a - ref).max() / max(np.abs(ref).max(), 1e-300))


def check_gradients(n, c, h, w, cfg, seed=0, **case):
    require_backend("cpp")
    u, img, p = make_case(n, c, h, w, seed=seed, **case)
    g = torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(seed + 1))
    ref, rleaf = reference(u, img, p, cfg)
    (ref * g.to(F64)).sum().backward()
    out, fleaf = fused(u, img, p, cfg)
    (out * g).sum().backward()
    assert out.dtype == torch.float32 and out.shape == u.shape
    assert rel_err(out.detach(), ref.detach()) < RTOL32
    for name, leaf in rleaf.items():
        got = fleaf[name].grad
        assert got is not None, name
        assert rel_err(got, leaf.grad) < RTOL32, (name, rel_err(got, leaf.grad))
    return fleaf


# ---- the reference ---------------------------------------------------------------------------

@pytest.mark.parametrize("blur,k,col_sdims", [(1, 5, None), (4, 3, 5.0), (2, 7, None)])
def test_reference_equals_todays_forward(blur, k, col_sdims):
    u, img, p = make_case(2, 4, 17, 22, seed=3)
    p["weight"] = torch.full((4,), 0.2)
    cfg = dict(filter_size=k, blur=blur, num_iter=3)
    ref, _ = reference(u, img, p | {"col_sdims": col_sdims}, cfg)
    today = convcrf_torch(u, img, col_sdims=col_sdims, **cfg)
    assert rel_err(ref.detach(), today) < 1e-5


@pytest.mark.parametrize("blur", [1, 2])
def test_reference_gradcheck(blur):
    u, img, p = make_case(2, 3, 6, 7, seed=4, col_sdims=4.0, compat=True, mask=True)
    m = p["mask"]
    args = [u.to(F64), p["weight"].to(F64), torch.tensor(3.0, dtype=F64),
            torch.tensor(10.0, dtype=F64), torch.tensor(1 / 3, dtype=F64),
            torch.tensor(1 / 13, dtype=F64), torch.tensor(0.25, dtype=F64),
            p["compat"].to(F64)]
    args = [a.requires_grad_(True) for a in args]

    def f(u, wt, pc, cc, pi, ci, cpi, mu):
        return conv_crf_torch(u, img.to(F64), weight=wt, pos_compat=pc, col_compat=cc,
                              pos_inv=pi, col_inv=ci, colpos_inv=cpi, compat=mu, mask=m,
                              filter_size=3, blur=blur, num_iter=2)

    # fast_mode: checks random projections of the Jacobian (seconds, not a minute, on 2 cores)
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-5, fast_mode=True)


# ---- fused gradients against the reference -----------------------------------------------------

@pytest.mark.parametrize("n,c,h,w,k,blur,extra", [
    (2, 3, 13, 17, 3, 1, {}),
    (2, 5, 21, 19, 5, 1, dict(col_sdims=6.0)),
    (1, 4, 23, 18, 7, 1, dict(compat=True, mask=True)),
    (2, 3, 9, 11, 13, 1, {}),
    (2, 4, 22, 27, 5, 2, dict(mask=True, col_sdims=5.0)),
    (1, 3, 30, 26, 9, 4, dict(compat=True)),
    (2, 6, 37, 29, 11, 4, {}),
    (1, 3, 19, 25, 13, 6, dict(mask=True)),
])
def test_gradients_match_reference(n, c, h, w, k, blur, extra):
    check_gradients(n, c, h, w, dict(filter_size=k, blur=blur, num_iter=3), **extra)


@pytest.mark.parametrize("kind,init,final_softmax", [
    ("probs", "convcrf", False), ("logits", "softmax", True), ("logits", "convcrf", True)])
def test_gradients_match_reference_start_and_end(kind, init, final_softmax):
    cfg = dict(filter_size=5, blur=2, num_iter=2, unary_kind=kind, init=init,
               final_softmax=final_softmax)
    check_gradients(2, 4, 14, 15, cfg, kind=kind, seed=7)


def test_gradients_match_reference_two_and_150_classes():
    check_gradients(2, 2, 15, 13, dict(filter_size=5, blur=1, num_iter=4), seed=8)
    check_gradients(1, 150, 7, 9, dict(filter_size=3, blur=1, num_iter=2), seed=9,
                    compat=True)


def test_gradients_are_bit_identical_on_a_rerun():
    require_backend("cpp")
    u, img, p = make_case(2, 5, 33, 31, seed=10, compat=True, mask=True, col_sdims=4.0)
    cfg = dict(filter_size=7, blur=2, num_iter=3)
    runs = []
    for _ in range(2):
        out, leaf = fused(u, img, p, cfg)
        out.pow(2).sum().backward()
        runs.append([out.detach()] + [v.grad for v in leaf.values()])
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_gradients_do_not_depend_on_the_thread_count():
    require_backend("cpp")
    import segkit

    u, img, p = make_case(2, 4, 21, 18, seed=19, mask=True, compat=True)
    runs = []
    try:
        for threads in (1, 2):
            segkit.set_num_threads(threads)
            out, leaf = fused(u, img, p, dict(filter_size=5, blur=2, num_iter=2))
            out.pow(2).sum().backward()
            runs.append([out.detach()] + [v.grad for v in leaf.values()])
    finally:
        segkit.set_num_threads(0)
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_forward_equals_the_inference_kernel():
    require_backend("cpp")
    import segkit

    u, img, _ = make_case(2, 5, 40, 37, seed=11)
    for cfg in (dict(filter_size=11, blur=4, num_iter=5), dict(filter_size=7, blur=1,
                                                               num_iter=3)):
        today = segkit.convcrf(u.numpy(), img.numpy(), backend="cpp", **cfg)
        assert rel_err(conv_crf(u, img, **cfg), today) < 1e-5


# ---- the module --------------------------------------------------------------------------------

def test_trainable_module_changes_the_unary_and_every_parameter_gets_a_gradient():
    require_backend("cpp")
    u, img, _ = make_case(2, 4, 20, 24, seed=12)
    crf = ConvCRF(trainable=True, num_classes=4, convcomp=True, col_sdims=40.0,
                  filter_size=5, blur=2, num_iter=3)
    out = crf(u, img)
    assert (out - torch.log_softmax(u, 1)).abs().max() > 0.1  # not the identity (ConvCRF #7)
    torch.nn.functional.cross_entropy(out, u.argmax(1).flip(-1)).backward()
    for name, prm in crf.named_parameters():
        assert prm.grad is not None and prm.grad.abs().sum() > 0, name
    # bandwidths are exp(log): a huge step leaves them positive
    with torch.no_grad():
        crf.log_pos_sdims -= 100 * crf.log_pos_sdims.grad.sign()
    assert crf.parameters_now()["pos_sdims"] > 0


def test_module_inference_path_without_gradients_is_the_inference_kernel():
    require_backend("cpp")
    u, img, _ = make_case(1, 3, 16, 16, seed=13)
    crf = ConvCRF(trainable=True, num_classes=3, filter_size=3, blur=1, num_iter=2)
    with torch.no_grad():
        fast = crf(u, img)
    slow = crf(u, img)
    assert slow.requires_grad and not fast.requires_grad
    assert rel_err(fast, slow.detach()) < 1e-5


def test_mean_std_are_undone_inside():
    require_backend("cpp")
    u, img, _ = make_case(1, 3, 12, 14, seed=14)
    mean, std = [117.551, 112.259, 106.825], [59.866, 58.944, 62.162]
    seen = (img - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    cfg = dict(filter_size=5, blur=1, num_iter=2)
    a = conv_crf(u, img, **cfg)
    b = conv_crf(u, seen, mean=mean, std=std, **cfg)
    assert rel_err(b, a) < 1e-5


# ---- bad input -----------------------------------------------------------------------------

def test_bad_input_is_refused_with_the_argument_named():
    u, img, _ = make_case(1, 3, 10, 10, seed=15)
    with pytest.raises(InputError, match="unary must be"):
        conv_crf(u[0, 0], img)
    with pytest.raises(InputError, match="float64"):
        conv_crf(u.double(), img)
    with pytest.raises(InputTypeError, match="unary must be a torch tensor"):
        conv_crf(u.numpy(), img)
    with pytest.raises(InputError, match=r"image must be \(N, 3, H, W\)"):
        conv_crf(u, img[:, :, :5])
    with pytest.raises(InputError, match="NaN"):
        conv_crf(u.clone().index_put_((torch.tensor([0]),), torch.tensor(float("nan"))), img)
    with pytest.raises(InputError, match="pos_sdims must be > 0; got -2"):
        conv_crf(u, img, pos_sdims=-2.0, filter_size=3)
    with pytest.raises(InputError, match="col_compat must be >= 0; got -1"):
        conv_crf(u, img, col_compat=-1.0, filter_size=3)
    with pytest.raises(InputError, match="weight must have 1 or C = 3"):
        conv_crf(u, img, weight=torch.ones(4))
    with pytest.raises(InputError, match="mask must be"):
        conv_crf(u, img, mask=torch.ones(1, 9, 10, dtype=torch.bool))
    with pytest.raises(InputError, match="blur must be 1 or even"):
        conv_crf(u, img, blur=3)
    with pytest.raises(InputError, match="mean and std go together"):
        conv_crf(u, img, mean=[0, 0, 0])
    with pytest.raises(InputError, match="num_classes"):
        ConvCRF(trainable=True)
    with pytest.raises(InputError, match="num_classes=4"):
        ConvCRF(trainable=True, num_classes=4)(u, img)


INF, NAN = float("inf"), float("nan")
#: (what is bad, the values put at flat positions of that input, the error) for the op's
#: value checks (ops/convcrf_grad_torch._checked_setting: aminmax per tensor and one flag; on
#: the CPU the unary is checked by the forward kernel's first pass)
BAD_VALUES = [
    ("unary", {0: NAN}, r"unary contains NaN or inf \(1 values\)"),
    ("unary", {5: INF}, r"unary contains NaN or inf \(1 values\)"),
    ("unary", {7: -INF}, r"unary contains NaN or inf \(1 values\)"),
    ("unary", {3: INF, 9: -INF}, r"unary contains NaN or inf \(2 values\)"),
    ("probs", {4: 0.0}, r"probabilities > 0 .* minimum of 0"),
    ("probs", {4: -0.5}, r"probabilities > 0 .* minimum of -0.5"),
    ("probs", {2: NAN}, r"unary contains NaN or inf \(1 values\)"),
    ("image", {11: NAN}, "image contains NaN or inf"),
    ("image", {1: INF, 2: -INF}, "image contains NaN or inf"),
    ("weight", {1: -INF}, "weight must be finite"),
    ("compat", {3: INF}, "compat contains NaN or inf"),
]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.needs_cuda)])
@pytest.mark.parametrize("what,values,error", BAD_VALUES,
                         ids=[f"{w}-{i}" for i, (w, _, _) in enumerate(BAD_VALUES)])
def test_nan_inf_and_nonpositive_values_are_refused(device, what, values, error):
    u, img, p = make_case(1, 3, 8, 9, seed=16, kind="probs" if what == "probs" else "logits",
                          compat=True)
    args = {"unary": u, "probs": u, "image": img, "weight": p["weight"].clone(),
            "compat": p["compat"].clone()}
    bad = args[what].clone()
    for i, v in values.items():
        bad.view(-1)[i] = v
    args[what] = bad
    dev = torch.device(device)
    with pytest.raises(InputError, match=error):
        conv_crf(args["probs" if what == "probs" else "unary"].to(dev), args["image"].to(dev),
                 weight=args["weight"].to(dev), compat=args["compat"].to(dev), filter_size=3,
                 unary_kind="probs" if what == "probs" else "logits")
    # the same call on the good values runs
    good = make_case(1, 3, 8, 9, seed=16, kind="probs" if what == "probs" else "logits")[0]
    conv_crf(good.to(dev), img.to(dev), weight=p["weight"].to(dev),
             compat=p["compat"].to(dev), filter_size=3,
             unary_kind="probs" if what == "probs" else "logits")


@pytest.mark.parametrize("kind,value", [("logits", NAN), ("logits", INF), ("logits", -INF),
                                        ("probs", NAN), ("probs", INF), ("probs", 0.0),
                                        ("probs", -1e-30)])
def test_the_forward_kernel_finds_a_refused_unary_value_anywhere(kind, value):
    """The CPU forward checks the unary in its first pass (no separate scan): one refused value
    at any class, row or column (vector tails, both images, every thread's rows) is found; on
    good values it is not; inference (nothing saved) takes what segkit.convcrf accepted."""
    from segkit.ops import convcrf_grad as G
    from segkit.ops.convcrf import convcrf_params

    require_backend("cpp")
    n, c, h, w = 2, 5, 13, 37
    u, img, _ = make_case(n, c, h, w, seed=19, kind=kind)
    u, img = u.numpy(), np.ascontiguousarray(img.numpy())
    p = convcrf_params(None, filter_size=3, blur=2, num_iter=1, unary_kind=kind)
    weight = np.full(c, 0.2, np.float32)
    G.forward(u, img, None, p, weight, None)  # the good values run
    rng = np.random.default_rng(7)
    spots = [0, u.size - 1, w - 1, h * w, c * h * w + 16, *rng.integers(0, u.size, 12)]
    for at in spots:
        bad = u.copy()
        bad.reshape(-1)[at] = value
        with pytest.raises(InputError, match="NaN or inf" if not math.isfinite(value)
                           else "probabilities > 0"):
            G.forward(bad, img, None, p, weight, None)
        if kind == "probs" and value == 0.0:  # inference takes a zero probability
            assert G.forward(bad, img, None, p, weight, None, keep=False)[1] is None


def test_saved_state_is_not_differentiable():
    """The op's second output (the saved pooled Q) is marked non-differentiable, so autograd
    hands the backward no zero tensor of its size at the step's memory peak."""
    from segkit.ops.convcrf_grad_torch import PARAMS as _  # noqa: F401  (registers the op)

    u, img, p = make_case(1, 3, 8, 9, seed=17)
    u.requires_grad_(True)
    one = [torch.tensor(float(p[k])) for k in ("pos_compat", "col_compat", "pos_sdims",
                                                "col_schan")]
    out, saved = torch.ops.segkit.conv_crf(u, img, None, p["weight"], *one, None, None,
                                           filter_size=3, blur=2, num_iter=2,
                                           unary_kind="logits", init="convcrf",
                                           final_softmax=False, unary_weight=1.0)
    assert out.requires_grad and not saved.requires_grad
    out.sum().backward()
    assert u.grad is not None and torch.isfinite(u.grad).all()


def test_binding_checks_every_array():
    require_backend("cpp")
    from segkit import _C

    u = np.zeros((1, 2, 4, 4), np.float32)
    img = np.zeros((1, 3, 4, 4), np.float32)
    w = np.zeros(2, np.float32)
    out = np.zeros_like(u)
    saved = np.zeros((1, 1, 2, 4, 4), np.float32)
    kw = dict(filter_size=3, blur=1, num_iter=1, unary_kind="logits", init="convcrf",
              final_softmax=False, unary_weight=1.0, pos_compat=3.0, col_compat=10.0,
              pos_sdims=3.0, col_schan=13.0, col_sdims=None)
    _C.convcrf_grad_forward(u, img, None, w, None, out, saved, **kw)
    with pytest.raises(TypeError, match="image must be float32, got float64"):
        _C.convcrf_grad_forward(u, img.astype(np.float64), None, w, None, out, saved, **kw)
    with pytest.raises(ValueError, match=r"saved must have shape \(1, 1, 2, 4, 4\)"):
        _C.convcrf_grad_forward(u, img, None, w, None, out, saved[:, :, :1], **kw)
    with pytest.raises(ValueError, match="unary must be C-contiguous"):
        _C.convcrf_grad_forward(u.transpose(0, 1, 3, 2), img, None, w, None, out, saved, **kw)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out must be writeable"):
        _C.convcrf_grad_forward(u, img, None, w, None, out, saved, **kw)
    with pytest.raises(ValueError, match=r"mask must have shape \(1, 4, 4\)"):
        _C.convcrf_grad_forward(u, img, np.ones((1, 4, 3), np.uint8), w, None,
                                np.zeros_like(u), saved, **kw)
    # the backward checks its own arrays too (bindings/checks.h, named by the function)
    out = np.zeros_like(u)
    _C.convcrf_grad_forward(u, img, None, w, None, out, saved, **kw)
    args = [np.ones_like(u), u, img, None, w, None, saved, np.zeros_like(u), np.zeros(2),
            np.zeros(5)]
    _C.convcrf_grad_backward(*args, None, **kw)
    with pytest.raises(ValueError, match=r"_C.convcrf_grad_backward: d_params must have shape "
                                         r"\(5,\), got \(4,\)"):
        _C.convcrf_grad_backward(*args[:-1], np.zeros(4), None, **kw)
    with pytest.raises(TypeError, match="d_weight must be float64, got float32"):
        _C.convcrf_grad_backward(*args[:-2], np.zeros(2, np.float32), args[-1], None, **kw)
    compat = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match="d_compat is required when compat is given"):
        _C.convcrf_grad_backward(*args[:5], compat, *args[6:], None, **kw)
    with pytest.raises(ValueError, match=r"d_compat must have shape \(2, 2\)"):
        _C.convcrf_grad_backward(*args[:5], compat, *args[6:], np.zeros((2, 3)), **kw)
    # the setting by the op's names and types: strings, bandwidths > 0
    with pytest.raises(ValueError, match="unary_kind must be 'logits' or 'probs', got 'prob'"):
        _C.convcrf_grad_forward(u, img, None, w, None, out, saved, **kw | {"unary_kind": "prob"})
    with pytest.raises(ValueError, match="init must be 'convcrf' or 'softmax', got 'x'"):
        _C.convcrf_grad_backward(*args, None, **kw | {"init": "x"})
    with pytest.raises(ValueError, match="col_sdims must be finite and > 0, got -1"):
        _C.convcrf_grad_forward(u, img, None, w, None, out, saved, **kw | {"col_sdims": -1.0})
    with pytest.raises(ValueError, match="pos_sdims must be finite and > 0, got nan"):
        _C.convcrf_grad_backward(*args, None, **kw | {"pos_sdims": float("nan")})


# ---- a torch citizen: opcheck, compile, autocast, DDP -----------------------------------------

def _op_args(n=1, c=3, h=9, w=10, blur=2, col_sdims=None):
    """The op's arguments in schema order: tensors, then the setting's constants."""
    u, img, p = make_case(n, c, h, w, seed=16, compat=True, mask=True)
    values = [torch.tensor(v) for v in (3.0, 10.0, 3.0, 13.0)]
    values.append(None if col_sdims is None else torch.tensor(col_sdims))
    return (u, img, p["mask"].to(torch.uint8), p["weight"], *values, p["compat"], 3, blur, 2,
            "logits", "convcrf", False, 1.0)


def test_op_schema_is_typed_and_named():
    schema = torch.ops.segkit.conv_crf.default._schema
    assert [(a.name, str(a.type)) for a in schema.arguments] == [
        ("unary", "Tensor"), ("image", "Tensor"), ("mask", "Optional[Tensor]"),
        ("weight", "Tensor"), ("pos_compat", "Tensor"), ("col_compat", "Tensor"),
        ("pos_sdims", "Tensor"), ("col_schan", "Tensor"), ("col_sdims", "Optional[Tensor]"),
        ("compat", "Optional[Tensor]"), ("filter_size", "int"), ("blur", "int"),
        ("num_iter", "int"), ("unary_kind", "str"), ("init", "str"), ("final_softmax", "bool"),
        ("unary_weight", "float")]
    back = torch.ops.segkit.conv_crf_backward.default._schema
    assert [a.name for a in back.arguments][:2] == ["grad", "saved"]
    assert len(back.returns) == 8


@pytest.mark.parametrize("col_sdims", [None, 40.0])
def test_opcheck_schema_fake_and_autograd_registration(col_sdims):
    require_backend("cpp")
    args = list(_op_args(col_sdims=col_sdims))
    for i in range(10):
        if i not in (1, 2) and args[i] is not None:
            args[i] = args[i].requires_grad_(True)
    torch.library.opcheck(torch.ops.segkit.conv_crf.default, tuple(args))


def test_backward_op_returns_the_gradient_of_each_named_value():
    """The op's backward, called alone, against autograd through the float64 reference: the
    chain rule of each bandwidth is inside the op (no 1/x around it)."""
    require_backend("cpp")
    cfg = dict(filter_size=5, blur=2, num_iter=2)
    u, img, p = make_case(1, 4, 15, 14, seed=21, col_sdims=7.0, compat=True)
    g = torch.randn(1, 4, 15, 14, generator=torch.Generator().manual_seed(2))
    ref, leaf = reference(u, img, p, cfg)
    (ref * g.double()).sum().backward()
    names = ("pos_compat", "col_compat", "pos_sdims", "col_schan", "col_sdims")
    values = [torch.tensor(float(p[k])) for k in names]
    consts = (cfg["filter_size"], cfg["blur"], cfg["num_iter"], "logits", "convcrf", False, 1.0)
    tensors = (u, img, None, p["weight"], *values, p["compat"])
    out, saved = torch.ops.segkit.conv_crf(*tensors, *consts)
    grads = torch.ops.segkit.conv_crf_backward(g, saved, *tensors, *consts)
    for name, got in zip(("unary", "weight", *names, "compat"), grads):
        assert got.dtype == torch.float32 and got.shape == leaf[name].shape, name
        assert rel_err(got, leaf[name].grad) < RTOL32, (name, rel_err(got, leaf[name].grad))


def test_torch_compile():
    require_backend("cpp")
    u, img, p = make_case(2, 4, 14, 13, seed=17, mask=True)

    def loss(unary, weight):
        out = conv_crf(unary, img, weight=weight, mask=p["mask"], filter_size=5, blur=2,
                       num_iter=2)
        return torch.nn.functional.cross_entropy(out, unary.argmax(1))

    grads = []
    for fn in (loss, torch.compile(loss, backend="aot_eager", fullgraph=True)):
        uu, ww = u.clone().requires_grad_(True), p["weight"].clone().requires_grad_(True)
        value = fn(uu, ww)
        value.backward()
        grads.append((value.detach(), uu.grad, ww.grad))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_autocast_runs_the_op_in_float32():
    require_backend("cpp")
    u, img, _ = make_case(1, 4, 12, 12, seed=18)
    conv = torch.nn.Conv2d(4, 4, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = conv(u)
        assert logits.dtype == torch.bfloat16
        out = conv_crf(logits, img, filter_size=3, blur=1, num_iter=2)
    assert out.dtype == torch.float32
    assert rel_err(out.detach(), conv_crf(logits.detach().float(), img, filter_size=3, blur=1,
                                          num_iter=2)) < 1e-6
    out.sum().backward()
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()


def _ddp_worker(rank, world, path):
    import torch.distributed as dist

    # a file store, not a TCP port picked beforehand (which another process may take first)
    dist.init_process_group("gloo", init_method=f"file://{path}.store", rank=rank,
                            world_size=world)
    torch.manual_seed(0)
    crf = ConvCRF(trainable=True, num_classes=3, filter_size=3, blur=2, num_iter=2)
    model = torch.nn.parallel.DistributedDataParallel(crf)
    u, img, _ = make_case(1, 3, 10, 12, seed=100 + rank)
    torch.nn.functional.cross_entropy(model(u, img), u.argmax(1)).backward()
    torch.save({k: v.grad for k, v in crf.named_parameters()}, f"{path}.{rank}")
    dist.destroy_process_group()


def test_distributed_data_parallel_two_processes(tmp_path):
    require_backend("cpp")
    import torch.multiprocessing as mp

    path = str(tmp_path / "grads")
    mp.spawn(_ddp_worker, args=(2, path), nprocs=2, join=True)
    got = [torch.load(f"{path}.{r}") for r in range(2)]
    expect = {}
    for rank in range(2):  # DDP averages the two ranks' gradients
        crf = ConvCRF(trainable=True, num_classes=3, filter_size=3, blur=2, num_iter=2)
        u, img, _ = make_case(1, 3, 10, 12, seed=100 + rank)
        torch.nn.functional.cross_entropy(crf(u, img), u.argmax(1)).backward()
        for k, v in crf.named_parameters():
            expect[k] = expect.get(k, 0) + v.grad / 2
    for k, v in expect.items():
        assert torch.allclose(got[0][k], v, rtol=1e-5, atol=1e-7), k
        assert torch.equal(got[0][k], got[1][k]), k


# ---- the README example: decoupled training on a frozen model's outputs ------------------------

def test_decoupled_training_example():
    require_backend("cpp")
    import torch
    from segkit.synthetic import crf_scene
    from segkit.torch import ConvCRF

    # a frozen model's logits, the images it saw and the true labels (here synthetic)
    image, labels, logits = crf_scene(4, 48, 48, num_classes=5, coarse=8, seed=0)
    image = torch.from_numpy(image).permute(0, 3, 1, 2)  # (N, 3, H, W) uint8
    logits, labels = torch.from_numpy(logits), torch.from_numpy(labels).long()

    crf = ConvCRF(trainable=True, num_classes=5, filter_size=7, blur=2, num_iter=5)
    opt = torch.optim.Adam(crf.parameters(), lr=0.05)
    losses = []
    for step in range(15):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(crf(logits, image), labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())

    assert losses[-1] < 0.9 * losses[0]
    with torch.no_grad():
        before = (logits.argmax(1) == labels).float().mean()
        after = (crf(logits, image).argmax(1) == labels).float().mean()
    assert after > before
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f}, accuracy {before:.3f} -> {after:.3f}")
