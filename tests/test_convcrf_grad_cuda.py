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

KERNELS = ["crfg_prepare", "crfg_unary", "crfg_softmax", "crfg_pool", "crfg_pass",
           "crfg_upsample", "crfg_pred", "crfg_softmax_jacobian", "crfg_step_back",
           "crfg_upsample_adjoint", "crfg_unpool", "crfg_add", "crfg_dot_chunks", "crfg_dx"]


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
    cfg = convcrf_params(None, **cfg_kw)
    col_pos = p.get("col_sdims") is not None
    scal = np.array([p["pos_compat"], p["col_compat"], np.float32(1 / np.float32(p["pos_sdims"])),
                     np.float32(1 / np.float32(p["col_schan"])),
                     np.float32(1 / np.float32(p["col_sdims"])) if col_pos else 0.0], np.float32)
    mask = None if p.get("mask") is None else p["mask"].numpy().astype(np.uint8)
    compat = None if p.get("compat") is None else p["compat"].numpy().astype(np.float32)
    return (np.ascontiguousarray(u.numpy()), np.ascontiguousarray(img.numpy()), mask,
            p["weight"].numpy().astype(np.float32), compat, scal, cfg, col_pos)


def _emulated_grads(emulated, grad, inputs):
    launch, empty = emulated
    u, img, mask, w, compat, scal, cfg, col_pos = inputs
    out, saved = forward_steps(launch, empty, u, img, mask, w, compat, scal, cfg, col_pos)
    du, dw, ds, dk = backward_steps(launch, empty, np.asarray, grad, u, img, mask, w, compat,
                                    scal, saved, cfg, col_pos)
    return out, saved, du, dw, ds, dk


CASES = [
    (2, 3, 11, 13, 3, 1, {}),
    (1, 4, 14, 17, 5, 2, dict(mask=True, col_sdims=5.0, compat=True)),
    (2, 3, 13, 10, 3, 4, dict(mask=True)),
]


@pytest.mark.parametrize("n,c,h,w,k,blur,extra", CASES)
def test_emulated_cuda_gradients_match_reference_and_cpp(emulated, n, c, h, w, k, blur, extra):
    cfg_kw = dict(filter_size=k, blur=blur, num_iter=2)
    u, img, p = make_case(n, c, h, w, seed=n + c + h, **extra)
    g = torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(5))
    inputs = _host_inputs(u, img, p, cfg_kw)
    out, saved, du, dw, ds, dk = _emulated_grads(emulated, g.numpy(), inputs)
    # the C++ backend on the same inputs: same forward, same sums
    cu, cimg, cmask, cw, ccompat, cscal, cfg, col_pos = inputs
    cout, csaved = og.forward(cu, cimg, cmask, cw, cscal, ccompat, cfg, col_pos)
    cdu, cdw, cds, cdk = og.backward(g.numpy(), cu, cimg, cmask, cw, cscal, ccompat, csaved, cfg,
                                     col_pos)
    assert rel_err(out, cout) < 1e-5 and rel_err(saved, csaved) < 1e-5
    pc, cc, pi, ci, cpi = (float(v) for v in cscal)
    d_scalars = np.array([ds[0], ds[1], -pc * pi * ds[2], -cc * ci * ds[3], -cc * cpi * ds[4]])
    assert rel_err(du, cdu) < 1e-5 and rel_err(dw, cdw) < 1e-5
    np.testing.assert_allclose(d_scalars[:4 + col_pos], cds[:4 + col_pos], rtol=1e-4)
    if dk is not None:
        assert rel_err(dk, cdk) < 1e-5
    # and the float64 reference
    ref, leaf = reference(u, img, p, cfg_kw)
    (ref * g.double()).sum().backward()
    assert rel_err(out, ref.detach()) < RTOL32
    assert rel_err(du, leaf["unary"].grad) < RTOL32
    assert rel_err(dw, leaf["weight"].grad) < RTOL32
    for i, name in enumerate(("pos_compat", "col_compat", "pos_inv", "col_inv", "colpos_inv")):
        if name in leaf:
            assert rel_err(d_scalars[i], leaf[name].grad) < RTOL32, name
    if dk is not None:
        assert rel_err(dk, leaf["compat"].grad) < RTOL32


def test_emulated_cuda_start_kinds_and_final_softmax(emulated):
    for kind, init, fs in (("probs", "convcrf", False), ("logits", "softmax", True)):
        cfg_kw = dict(filter_size=3, blur=2, num_iter=2, unary_kind=kind, init=init,
                      final_softmax=fs)
        u, img, p = make_case(1, 3, 9, 10, seed=3, kind=kind)
        g = torch.randn(1, 3, 9, 10, generator=torch.Generator().manual_seed(6))
        out, _, du, dw, ds, _ = _emulated_grads(emulated, g.numpy(), _host_inputs(u, img, p,
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
