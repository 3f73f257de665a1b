"""The trainable ConvCRF's CUDA kernels (csrc/cuda/convcrf_grad.cu): compiled by NVRTC, and run
on the host through the emulation (tests/cuda_emu.py: the exact source CuPy compiles, g++,
CUDA's thread indices emulated, 3 blocks of 4 threads so the grid-stride loops split), driven
by the backend's own launch sequence (segkit.ops.convcrf_grad_cuda). Gradients against the
float64 reference and against the C++ backward; bit-identical on a rerun. Compiled and
emulated, not run on a GPU here."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from segkit import _config, _cuda
from segkit.ops import convcrf_grad as og
from segkit.ops.convcrf_grad_cuda import backward_steps, forward_steps
from segkit.ops.convcrf import convcrf_params

from . import nvrtc
from .cuda_emu import HostKernels
from .test_convcrf_grad import RTOL32, make_case, reference, rel_err

KERNELS = ["crfg_prepare_u8", "crfg_prepare_f32", "crfg_start", "crfg_update", "crfg_unary",
           "crfg_softmax", "crfg_pass", "crfg_upsample", "crfg_pred", "crfg_softmax_jacobian",
           "crfg_step_back", "crfg_upsample_adjoint", "crfg_unpool", "crfg_add", "crfg_dot_chunks",
           "crfg_chunk_sums", "crfg_accumulate", "crfg_param_grads", "crfg_dx"]
NAMES = og.PARAMS


def test_nvrtc_compiles_every_kernel():
    if nvrtc.find_library() is None:
        pytest.skip("libnvrtc not found (pip install nvidia-cuda-nvrtc, part of the dev extra)")
    ptx = nvrtc.compile_ptx(_cuda.load_source("convcrf_grad"),
                            _config.NVRTC_OPTIONS + ("--gpu-architecture=compute_90",),
                            "convcrf_grad.cu")
    for name in KERNELS:
        assert re.search(rf"\.entry\s+{name}\s*\(", ptx), name


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    try:
        kernels = HostKernels("convcrf_grad", tmp_path_factory.mktemp("cuda_emu_grad"))
    except FileNotFoundError as exc:
        pytest.skip(str(exc))

    def launch(name, total, args):
        kernels.launch(name, args, grid=3, block=4)

    def empty(shape, dtype):
        return np.full(shape, np.nan, dtype)

    return launch, empty


def _host_inputs(u, img, p, cfg_kw):
    """(unary, image, mask, weight, compat, values, setting): the scalar values as 0-d float32
    arrays (what the kernels read through pointers), the setting holding the same values."""
    setting = convcrf_params(None, **cfg_kw, **{k: p[k] for k in NAMES if p.get(k) is not None})
    values = {k: None if p.get(k) is None else np.array(p[k], np.float32) for k in NAMES}
    mask = None if p.get("mask") is None else p["mask"].numpy().astype(np.uint8)
    compat = None if p.get("compat") is None else p["compat"].numpy().astype(np.float32)
    return (np.ascontiguousarray(u.numpy()), np.ascontiguousarray(img.numpy()), mask,
            p["weight"].numpy().astype(np.float32), compat, values, setting)


def _emulated_grads(emulated, grad, inputs):
    launch, empty = emulated
    u, img, mask, w, compat, values, setting = inputs
    out, saved = forward_steps(launch, empty, u, img, mask, w, compat, values, setting)
    du, dw, dp, dk = backward_steps(launch, empty, grad, u, img, mask, w, compat, values, saved,
                                    setting)
    return out, saved, du, dw, dp, dk


CASES = [
    (2, 3, 11, 13, 3, 1, {}),
    (1, 4, 14, 17, 5, 2, dict(mask=True, col_sdims=5.0, compat=True)),
    (2, 3, 13, 10, 3, 4, dict(mask=True)),
    (1, 4, 12, 11, 5, 1, dict(mask=True, compat=True)),  # blur 1: Q_{t-1} is the saved Qb
]


@pytest.mark.parametrize("n,c,h,w,k,blur,extra", CASES)
def test_emulated_cuda_gradients_match_reference_and_cpp(emulated, n, c, h, w, k, blur, extra):
    cfg_kw = dict(filter_size=k, blur=blur, num_iter=2)
    u, img, p = make_case(n, c, h, w, seed=n + c + h, **extra)
    g = torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(5))
    inputs = _host_inputs(u, img, p, cfg_kw)
    out, saved, du, dw, dp, dk = _emulated_grads(emulated, g.numpy(), inputs)
    assert all(a.dtype == np.float32 for a in (du, dw, dp)) and dp.shape == (5,)
    # the C++ backend on the same inputs: same forward, same gradients by name
    cu, cimg, cmask, cw, ccompat, _, setting = inputs
    cout, csaved = og.forward(cu, cimg, cmask, setting, cw, ccompat)
    cdu, cdw, cdp, cdk = og.backward(g.numpy(), cu, cimg, cmask, setting, cw, ccompat, csaved)
    assert rel_err(out, cout) < 1e-5 and rel_err(saved, csaved) < 1e-5
    assert rel_err(du, cdu) < 1e-5 and rel_err(dw, cdw) < 1e-5
    np.testing.assert_allclose(dp, [cdp[k] for k in NAMES], rtol=1e-5)
    if dk is not None:
        assert rel_err(dk, cdk) < 1e-5
    # and the float64 reference
    ref, leaf = reference(u, img, p, cfg_kw)
    (ref * g.double()).sum().backward()
    assert rel_err(out, ref.detach()) < RTOL32
    assert rel_err(du, leaf["unary"].grad) < RTOL32
    assert rel_err(dw, leaf["weight"].grad) < RTOL32
    for i, name in enumerate(NAMES):
        if name in leaf:
            assert rel_err(dp[i], leaf[name].grad) < RTOL32, name
        else:
            assert dp[i] == 0, name
    if dk is not None:
        assert rel_err(dk, leaf["compat"].grad) < RTOL32


@pytest.mark.parametrize("blur", [1, 2])
def test_emulated_cuda_start_kinds_and_final_softmax(emulated, blur):
    for kind, init, fs in (("probs", "convcrf", False), ("logits", "softmax", True)):
        cfg_kw = dict(filter_size=3, blur=blur, num_iter=2, unary_kind=kind, init=init,
                      final_softmax=fs)
        u, img, p = make_case(1, 3, 9, 10, seed=3, kind=kind, mask=True)
        g = torch.randn(1, 3, 9, 10, generator=torch.Generator().manual_seed(6))
        out, _, du, dw, _, _ = _emulated_grads(emulated, g.numpy(), _host_inputs(u, img, p,
                                                                                  cfg_kw))
        ref, leaf = reference(u, img, p, cfg_kw)
        (ref * g.double()).sum().backward()
        assert rel_err(out, ref.detach()) < RTOL32
        assert rel_err(du, leaf["unary"].grad) < RTOL32, kind
        assert rel_err(dw, leaf["weight"].grad) < RTOL32, kind


def test_emulated_cuda_gradients_are_bit_identical_on_a_rerun(emulated):
    u, img, p = make_case(2, 3, 10, 9, seed=4, compat=True, mask=True)
    g = np.random.default_rng(0).standard_normal((2, 3, 10, 9)).astype(np.float32)
    inputs = _host_inputs(u, img, p, dict(filter_size=3, blur=2, num_iter=2))
    a = _emulated_grads(emulated, g, inputs)
    b = _emulated_grads(emulated, g, inputs)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_emulated_cuda_inference_forward_keeps_nothing(emulated):
    """keep=False (segkit.convcrf of a fitted setting): one pooled message, the same scores."""
    launch, empty = emulated
    u, img, p = make_case(1, 3, 12, 11, seed=8, compat=True)
    cu, cimg, _, w, compat, values, setting = _host_inputs(u, img, p, dict(filter_size=3,
                                                                           blur=2, num_iter=3))
    out, saved = forward_steps(launch, empty, cu, cimg, None, w, compat, values, setting)
    lean, none = forward_steps(launch, empty, cu, cimg, None, w, compat, values, setting,
                               keep=False)
    assert none is None
    np.testing.assert_array_equal(lean, out)


def test_backward_never_copies_to_the_host(emulated_gpu):
    """The launch sequence on the stand-in CuPy (tests/cuda_emu.py logs every device-to-host
    copy): the scalar values stay device arrays read by the kernels, the sums of every iteration
    are added on the device, and the gradients come back as device arrays."""
    from segkit import _cuda

    cupy = emulated_gpu.module

    def launch(name, total, args):
        _cuda.launch(_cuda.get_kernel("convcrf_grad", name), total, args, block=32)

    def empty(shape, dtype):
        return cupy.empty(shape, dtype)

    u, img, p = make_case(1, 3, 9, 8, seed=9, col_sdims=6.0, compat=True, mask=True)
    g = torch.randn(1, 3, 9, 8, generator=torch.Generator().manual_seed(3)).numpy()
    cu, cimg, mask, w, compat, values, setting = _host_inputs(u, img, p, dict(
        filter_size=3, blur=2, num_iter=3))
    dev = [cupy.asarray(a) for a in (g, cu, cimg, mask, w, compat)]
    dvalues = {k: cupy.asarray(v) for k, v in values.items()}
    emulated_gpu.clear()
    out, saved = forward_steps(empty=empty, launch=launch, unary=dev[1], image=dev[2],
                               mask=dev[3], weight=dev[4], compat=dev[5], values=dvalues,
                               p=setting)
    grads = backward_steps(launch, empty, dev[0], *dev[1:], dvalues, saved, setting)
    assert [e for e in emulated_gpu.events if e.kind == "to_host"] == []
    assert all(isinstance(a, cupy.ndarray) for a in grads)
    assert len(emulated_gpu.launches()) > 3 * 10  # the whole sequence ran on the stand-in
    _, csaved = og.forward(cu, cimg, mask, setting, w, compat)
    cdu, cdw, cdp, cdk = og.backward(g, cu, cimg, mask, setting, w, compat, csaved)
    for got, want in zip(grads, (cdu, cdw, [cdp[k] for k in NAMES], cdk)):
        assert rel_err(np.asarray(got), want) < 1e-5


def test_fitted_setting_on_cuda_runs_the_trainable_forward(emulated_gpu):
    """segkit.convcrf of a fitted setting (per-class weights, compat) with backend="cuda": the
    one kernel family's forward on the stand-in CuPy (the values as device arrays, nothing
    saved, nothing copied back but the result), equal to the C++ backend."""
    import segkit

    c = 4
    u, img, _ = make_case(1, c, 13, 12, seed=12)
    unary, image = u.numpy(), np.ascontiguousarray(img.numpy().transpose(0, 2, 3, 1))
    kw = dict(filter_size=5, blur=2, num_iter=3, col_sdims=30.0,
              weight=[0.1, 0.2, 0.3, 0.25], compat=(0.05 * np.eye(c)).tolist())
    want = segkit.convcrf(unary, image, backend="cpp", **kw)
    emulated_gpu.clear()
    got = segkit.convcrf(unary, image, backend="cuda", **kw)
    assert {e.name for e in emulated_gpu.launches()} >= {"crfg_pass", "crfg_update"}
    assert len([e for e in emulated_gpu.events if e.kind == "to_host"]) == 1  # the result
    assert rel_err(got, want) < 1e-5


# ---- on a GPU (scripts/gpu_check.sh runs this file where one is lent) ------------------------

def _cuda_grads(u, img, p, cfg, g):
    """conv_crf on CUDA tensors: (scores, {name: gradient}) on the host."""
    from segkit.torch import conv_crf

    dev = torch.device("cuda")
    leaf = {"unary": u.to(dev).requires_grad_(True),
            "weight": p["weight"].to(dev).requires_grad_(True)}
    for k in NAMES:
        if p.get(k) is not None:
            leaf[k] = torch.tensor(float(p[k]), device=dev, requires_grad=True)
    if p.get("compat") is not None:
        leaf["compat"] = p["compat"].to(dev).requires_grad_(True)
    mask = None if p.get("mask") is None else p["mask"].to(dev)
    out = conv_crf(leaf["unary"], img.to(dev), mask=mask,
                   **{k: v for k, v in leaf.items() if k != "unary"}, **cfg)
    torch.cuda.set_sync_debug_mode("error")  # the backward never waits for the device
    try:
        (out * g.to(dev)).sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return out.detach().cpu(), {k: v.grad.cpu() for k, v in leaf.items()}


@pytest.mark.needs_cuda
@pytest.mark.parametrize("n,c,h,w,k,blur,extra", CASES + [(2, 21, 64, 72, 11, 4, {}),
                                                          (1, 5, 40, 33, 7, 1, dict(
                                                              col_sdims=20.0, mask=True))])
def test_torch_cuda_tensors_match_reference(n, c, h, w, k, blur, extra):
    cfg = dict(filter_size=k, blur=blur, num_iter=3)
    u, img, p = make_case(n, c, h, w, seed=n + c + h, **extra)
    g = torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(5))
    out, grads = _cuda_grads(u, img, p, cfg, g)
    ref, leaf = reference(u, img, p, cfg)
    (ref * g.double()).sum().backward()
    assert rel_err(out, ref.detach()) < RTOL32
    for name, got in grads.items():
        assert rel_err(got, leaf[name].grad) < RTOL32, name
    again = _cuda_grads(u, img, p, cfg, g)  # the same bits on a rerun
    assert torch.equal(again[0], out)
    for name, got in grads.items():
        assert torch.equal(again[1][name], got), name
