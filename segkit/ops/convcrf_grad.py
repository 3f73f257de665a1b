"""The trainable ConvCRF's host side: validated settings and the fused C++ forward/backward on
NumPy arrays (``segkit.torch.conv_crf`` wraps them in a torch op).

The forward keeps per iteration only the pooled message (C*Hp*Wp floats: C*H*W at blur 1,
C*H*W/blur^2 otherwise); the backward recomputes U, Q_{t-1} and M'_t from the unary and those
messages, and computes every gradient in one fused pass per iteration (no k*k tensor). See
csrc/cpu/convcrf_grad.cpp and GUIDE section 3.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import InputError
from ..reference.convcrf import pool_geometry
from .convcrf import INITS, UNARY_KINDS, ConvCrfParams

#: The order of the scalar parameters the kernels take and return gradients for.
SCALARS = ("pos_compat", "col_compat", "pos_inv", "col_inv", "colpos_inv")


def kernel_kwargs(p: ConvCrfParams) -> dict[str, Any]:
    """The non-learnable part of a setting as the kernels' keyword arguments."""
    return dict(filter_size=p.filter_size, blur=p.blur, num_iter=p.num_iter,
                unary_kind=UNARY_KINDS.index(p.unary_kind), init=INITS.index(p.init),
                final_softmax=bool(p.final_softmax), unary_weight=float(p.unary_weight))


def pooled(p: ConvCrfParams, h: int, w: int) -> tuple[int, int]:
    """The pooled grid (Hp, Wp) of an H x W image under setting `p`."""
    return pool_geometry(h, p.blur)[0], pool_geometry(w, p.blur)[0]


def scalars_of(p: ConvCrfParams) -> np.ndarray:
    """The setting's scalars in :data:`SCALARS` order, float32, bandwidths as float32
    reciprocals computed in float32 (as the torch op computes ``1 / x``)."""
    f32 = np.float32
    inv = [f32(1) / f32(v) if v is not None else f32(0)
           for v in (p.pos_sdims, p.col_schan, p.col_sdims)]
    return np.array([f32(p.pos_compat), f32(p.col_compat), *inv], np.float32)


def class_weights(p: ConvCrfParams, c: int) -> np.ndarray:
    """The per-class message weights (C,) float32 of a setting."""
    if p.weight is not None:
        return np.asarray(p.weight, np.float32)
    return np.full(c, p.weight_init, np.float32)


def apply(unary: np.ndarray, image: np.ndarray, p: ConvCrfParams) -> np.ndarray:
    """Inference with the trainable forward (per-class weights, compat), nothing saved:
    `unary` (N, C, H, W) float32 C-contiguous, `image` (N, 3, H, W) float32 0-255."""
    c = unary.shape[1]
    compat = None if p.compat is None else np.asarray(p.compat, np.float32)
    out, _ = forward(unary, np.ascontiguousarray(image, np.float32), None, class_weights(p, c),
                     scalars_of(p), compat, p, p.col_sdims is not None, keep=False)
    return out


def apply_cuda(unary, image, p: ConvCrfParams):
    """:func:`apply` on CuPy arrays (csrc/cuda/convcrf_grad.cu; compiled and emulated in the
    tests, not run on a GPU)."""
    import cupy

    from .. import _cuda
    from .convcrf_grad_cuda import forward_steps

    def launch(name, total, args):
        _cuda.launch(_cuda.get_kernel("convcrf_grad", name), total, args)

    c = unary.shape[1]
    compat = None if p.compat is None else cupy.asarray(np.asarray(p.compat, np.float32))
    out, _ = forward_steps(launch, lambda shape, dtype: cupy.empty(shape, dtype), unary,
                           cupy.ascontiguousarray(image, dtype=np.float32), None,
                           cupy.asarray(class_weights(p, c)), compat, scalars_of(p), p,
                           p.col_sdims is not None)
    return out


def check_scalars(values: dict[str, float | None]) -> None:
    """Raise InputError unless the bandwidths are finite and > 0 and the compatibilities finite
    and >= 0 (a gradient step that would make one negative is refused here)."""
    names = {"pos_inv": "pos_sdims", "col_inv": "col_schan", "colpos_inv": "col_sdims"}
    for key, v in values.items():
        if v is None:
            continue
        if not math.isfinite(v):
            raise InputError(f"{names.get(key, key)} must be finite; got {v}")
        if key in names and v <= 0:
            raise InputError(f"{names[key]} must be > 0; got {1 / v if v else v} "
                             f"(1/{names[key]} = {v})")
        if key not in names and v < 0:
            raise InputError(f"{key} must be >= 0; got {v}")


def _scalar_kwargs(scalars: np.ndarray, col_pos: bool) -> dict[str, Any]:
    pc, cc, pi, ci, cpi = (float(v) for v in scalars)
    return dict(pos_compat=pc, col_compat=cc, pos_inv=pi, col_inv=ci,
                colpos_inv=cpi if col_pos else None)


def forward(unary: np.ndarray, image: np.ndarray, mask: np.ndarray | None, weight: np.ndarray,
            scalars: np.ndarray, compat: np.ndarray | None, cfg: ConvCrfParams,
            col_pos: bool, keep: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """(scores (N, C, H, W), saved messages (N, T, C, Hp, Wp) or None without `keep`),
    float32, with the C++ kernel. Arrays must be C-contiguous float32 (mask uint8) as the
    binding checks."""
    from .. import _C

    n, c, h, w = unary.shape
    hp, wp = pooled(cfg, h, w)
    out = np.empty_like(unary)
    saved = np.empty((n, cfg.num_iter, c, hp, wp), np.float32) if keep else None
    if unary.size:
        _C.convcrf_grad_forward(unary, image, mask, weight, compat, out, saved,
                                **kernel_kwargs(cfg), **_scalar_kwargs(scalars, col_pos))
    return out, saved


def backward(grad: np.ndarray, unary: np.ndarray, image: np.ndarray, mask: np.ndarray | None,
             weight: np.ndarray, scalars: np.ndarray, compat: np.ndarray | None,
             saved: np.ndarray, cfg: ConvCrfParams, col_pos: bool):
    """(d_unary float32, d_weight (C,), d_scalars (5,) in SCALARS order, d_compat (C, C) or
    None), the parameter gradients in float64."""
    from .. import _C

    n, c, h, w = unary.shape
    d_unary = np.empty_like(unary)  # the kernel writes every element
    d_weight = np.zeros(c, np.float64)
    sums = np.zeros(5, np.float64)
    d_compat = None if compat is None else np.zeros((c, c), np.float64)
    if unary.size:
        _C.convcrf_grad_backward(grad, unary, image, mask, weight, compat, saved, d_unary,
                                 d_weight, sums, d_compat, **kernel_kwargs(cfg),
                                 **_scalar_kwargs(scalars, col_pos))
    return d_unary, d_weight, scalar_gradients(sums, scalars, col_pos), d_compat


def scalar_gradients(sums: np.ndarray, scalars: np.ndarray, col_pos: bool) -> np.ndarray:
    """The gradients w.r.t. SCALARS from the kernels' five sums (common/convcrf_grad.h)."""
    pc, cc, pi, ci, cpi = (float(v) for v in scalars)
    return np.array([sums[0], sums[1], -pc * pi * sums[2], -cc * ci * sums[3],
                     -cc * cpi * sums[4] if col_pos else 0.0])
