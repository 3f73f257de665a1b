"""The trainable ConvCRF's host side: validated settings and the fused C++ forward/backward on
NumPy arrays (``segkit.torch.conv_crf`` wraps them in a torch op).

The forward keeps per iteration only Qb_t, the pooled Q that iteration t + 1's message pass
reads (C*Hp*Wp floats: C*H*W at blur 1, C*H*W/blur^2 otherwise; Qb_0 pools the start Q_0);
the backward recomputes the messages Mb_t = A Qb_{t-1} on the pooled grid, and U, M'_t and
Q_t from the unary and those messages, and computes every gradient in one fused pass per
iteration (no k*k tensor). See csrc/cpu/convcrf_grad.cpp and GUIDE section 3.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from ..reference.convcrf import pool_geometry
from .convcrf import ConvCrfParams, check_finite_unary

#: The op's named scalar values (torch.ops.segkit.conv_crf), in the order of the binding's
#: ``d_params`` (csrc/common/convcrf_grad_params.h, which holds the chain rule of each).
PARAMS = ("pos_compat", "col_compat", "pos_sdims", "col_schan", "col_sdims")


def kernel_args(p: ConvCrfParams) -> dict[str, Any]:
    """A setting as the bindings' keyword arguments: the names and values of the torch op
    (``col_sdims`` None: no position term in the colour kernel)."""
    return dict(filter_size=p.filter_size, blur=p.blur, num_iter=p.num_iter,
                unary_kind=p.unary_kind, init=p.init, final_softmax=bool(p.final_softmax),
                unary_weight=float(p.unary_weight), pos_compat=float(p.pos_compat),
                col_compat=float(p.col_compat), pos_sdims=float(p.pos_sdims),
                col_schan=float(p.col_schan), col_sdims=p.col_sdims)


def pooled(p: ConvCrfParams, h: int, w: int) -> tuple[int, int]:
    """The pooled grid (Hp, Wp) of an H x W image under setting `p`."""
    return pool_geometry(h, p.blur)[0], pool_geometry(w, p.blur)[0]


def class_weights(p: ConvCrfParams, c: int) -> np.ndarray:
    """The per-class message weights (C,) float32 of a setting."""
    if p.weight is not None:
        return np.asarray(p.weight, np.float32)
    return np.full(c, p.weight_init, np.float32)


def apply(unary: np.ndarray, image: np.ndarray, p: ConvCrfParams) -> np.ndarray:
    """Inference with the trainable forward (per-class weights, compat), nothing saved:
    `unary` (N, C, H, W) float32 C-contiguous, `image` (N, 3, H, W) float32 0-255."""
    out, _ = forward(unary, np.ascontiguousarray(image, np.float32), None, p,
                     class_weights(p, unary.shape[1]), compat_matrix(p), keep=False)
    return out


def compat_matrix(p: ConvCrfParams) -> np.ndarray | None:
    """The setting's C x C compatibility as a float32 array, or None."""
    return None if p.compat is None else np.asarray(p.compat, np.float32)


def check_trainable(p: ConvCrfParams) -> None:
    """Raise InputError unless the compatibilities are >= 0 (the trainable op learns them as
    they are; a gradient step that would make one negative is refused here). The bandwidths
    are > 0 in every validated setting (:func:`segkit.ops.convcrf.convcrf_params`)."""
    for name in ("pos_compat", "col_compat"):
        if getattr(p, name) < 0:
            raise InputError(f"{name} must be >= 0; got {getattr(p, name)}")


def check_unary(unary: np.ndarray, unary_kind: str) -> None:
    """Raise InputError naming what the op refuses in `unary`: NaN or inf, or for
    ``unary_kind='probs'`` a value <= 0 (its log has no gradient). The kernels check the same in
    their first pass (the forward returns False); this names the values."""
    check_finite_unary(unary, np)
    if unary_kind == "probs" and unary.size and not bool((unary > 0).all()):
        raise InputError("unary_kind='probs' needs probabilities > 0 for gradients; got a "
                         f"minimum of {float(unary.min()):.3g}")


def forward(unary: np.ndarray, image: np.ndarray, mask: np.ndarray | None, p: ConvCrfParams,
            weight: np.ndarray, compat: np.ndarray | None, keep: bool = True
            ) -> tuple[np.ndarray, np.ndarray | None]:
    """(scores (N, C, H, W), saved pooled Q (N, T, C, Hp, Wp) or None without `keep`),
    float32 (saved[:, t] is Qb_t, the pooled Q that iteration t + 1's message pass reads),
    with the C++ kernel, for setting `p` (its geometry and scalar values) and the
    per-class `weight` (C,) and `compat` (C, C) or None. Arrays must be C-contiguous float32
    (mask uint8) as the binding checks. A unary the op refuses (:func:`check_unary`) raises
    InputError: the kernel checks it in its first pass (inference on probabilities, which may
    be 0 there, is left to segkit.convcrf's check)."""
    from .. import _C

    n, c, h, w = unary.shape
    hp, wp = pooled(p, h, w)
    out = np.empty_like(unary)
    saved = np.empty((n, p.num_iter, c, hp, wp), np.float32) if keep else None
    if unary.size and not _C.convcrf_grad_forward(unary, image, mask, weight, compat, out, saved,
                                                  **kernel_args(p)):
        check_unary(unary, p.unary_kind)
        raise InputError("unary: a value the op refuses")  # not reached: check_unary names it
    return out, saved


def backward(grad: np.ndarray, unary: np.ndarray, image: np.ndarray, mask: np.ndarray | None,
             p: ConvCrfParams, weight: np.ndarray, compat: np.ndarray | None, saved: np.ndarray):
    """(d_unary float32, d_weight (C,), d_params {name in :data:`PARAMS`: gradient}, d_compat
    (C, C) or None): the gradient w.r.t. each named value (0 for an absent ``col_sdims``), in
    float64, computed by the one chain rule of csrc/common/convcrf_grad_params.h."""
    from .. import _C

    n, c, h, w = unary.shape
    d_unary = np.empty_like(unary)  # the kernel writes every element
    d_weight = np.zeros(c, np.float64)
    d_params = np.zeros(len(PARAMS), np.float64)
    d_compat = None if compat is None else np.zeros((c, c), np.float64)
    if unary.size:
        _C.convcrf_grad_backward(grad, unary, image, mask, weight, compat, saved, d_unary,
                                 d_weight, d_params, d_compat, **kernel_args(p))
    return d_unary, d_weight, dict(zip(PARAMS, d_params.tolist())), d_compat
