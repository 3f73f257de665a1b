"""The trainable ConvCRF's host side: validated settings and the fused C++ forward/backward on
NumPy arrays (``segkit.torch.conv_crf`` wraps them in a torch op).

The forward keeps per iteration only the pooled message (C*Hp*Wp floats: C*H*W at blur 1,
C*H*W/blur^2 otherwise); the backward recomputes U, Q_{t-1} and M'_t from the unary and those
messages, and computes every gradient in one fused pass per iteration (no k*k tensor). See
csrc/cpu/convcrf_grad.cpp and GUIDE section 3.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _validate
from ..errors import InputError, InputTypeError
from ..reference.convcrf import pool_geometry
from .convcrf import INITS, UNARY_KINDS

#: The order of the scalar parameters the kernels take and return gradients for.
SCALARS = ("pos_compat", "col_compat", "pos_inv", "col_inv", "colpos_inv")


@dataclass(frozen=True)
class GradConfig:
    """The non-learnable part of a trainable ConvCRF setting."""
    filter_size: int = 11
    blur: int = 4
    num_iter: int = 5
    unary_weight: float = 1.0
    unary_kind: str = "logits"
    init: str = "convcrf"
    final_softmax: bool = False

    def kernel_kwargs(self) -> dict[str, Any]:
        return dict(filter_size=self.filter_size, blur=self.blur, num_iter=self.num_iter,
                    unary_kind=UNARY_KINDS.index(self.unary_kind),
                    init=INITS.index(self.init), final_softmax=self.final_softmax,
                    unary_weight=self.unary_weight)

    def pooled(self, h: int, w: int) -> tuple[int, int]:
        return pool_geometry(h, self.blur)[0], pool_geometry(w, self.blur)[0]


def grad_config(*, filter_size: int = 11, blur: int = 4, num_iter: int = 5,
                unary_weight: float = 1.0, unary_kind: str = "logits", init: str = "convcrf",
                final_softmax: bool = False) -> GradConfig:
    """A validated :class:`GradConfig` (InputError / InputTypeError name the bad argument)."""
    try:
        filter_size = _validate.integer("filter_size", filter_size, minimum=1, odd=True)
        blur = _validate.integer("blur", blur, minimum=1)
        num_iter = _validate.integer("num_iter", num_iter, minimum=1)
        _validate.choice("unary_kind", unary_kind, UNARY_KINDS)
        _validate.choice("init", init, INITS)
    except TypeError as e:
        raise InputTypeError(str(e)) from None
    except ValueError as e:
        raise InputError(str(e)) from None
    if blur > 1 and blur % 2:
        raise InputError(f"blur must be 1 or even (ConvCRF's pooling); got {blur}")
    if isinstance(unary_weight, bool) or not isinstance(unary_weight, (int, float)) \
            or not math.isfinite(unary_weight):
        raise InputError(f"unary_weight must be a finite number; got {unary_weight!r}")
    if not isinstance(final_softmax, (bool, np.bool_)):
        raise InputTypeError(f"final_softmax must be True or False; got {final_softmax!r}")
    return GradConfig(filter_size, blur, num_iter, float(unary_weight), unary_kind, init,
                      bool(final_softmax))


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
            scalars: np.ndarray, compat: np.ndarray | None, cfg: GradConfig,
            col_pos: bool) -> tuple[np.ndarray, np.ndarray]:
    """(scores (N, C, H, W), saved messages (N, T, C, Hp, Wp)), float32, with the C++ kernel.
    Arrays must be C-contiguous float32 (mask uint8) as the binding checks."""
    from .. import _C

    n, c, h, w = unary.shape
    hp, wp = cfg.pooled(h, w)
    out = np.empty_like(unary)
    saved = np.empty((n, cfg.num_iter, c, hp, wp), np.float32)
    if unary.size:
        _C.convcrf_grad_forward(unary, image, mask, weight, compat, out, saved,
                                **cfg.kernel_kwargs(), **_scalar_kwargs(scalars, col_pos))
    return out, saved


def backward(grad: np.ndarray, unary: np.ndarray, image: np.ndarray, mask: np.ndarray | None,
             weight: np.ndarray, scalars: np.ndarray, compat: np.ndarray | None,
             saved: np.ndarray, cfg: GradConfig, col_pos: bool):
    """(d_unary float32, d_weight (C,), d_scalars (5,) in SCALARS order, d_compat (C, C) or
    None), the parameter gradients in float64."""
    from .. import _C

    n, c, h, w = unary.shape
    d_unary = np.zeros_like(unary)
    d_weight = np.zeros(c, np.float64)
    sums = np.zeros(5, np.float64)
    d_compat = None if compat is None else np.zeros((c, c), np.float64)
    if unary.size:
        _C.convcrf_grad_backward(grad, unary, image, mask, weight, compat, saved, d_unary,
                                 d_weight, sums, d_compat, **cfg.kernel_kwargs(),
                                 **_scalar_kwargs(scalars, col_pos))
    return d_unary, d_weight, scalar_gradients(sums, scalars, col_pos), d_compat


def scalar_gradients(sums: np.ndarray, scalars: np.ndarray, col_pos: bool) -> np.ndarray:
    """The gradients w.r.t. SCALARS from the kernels' five sums (common/convcrf_grad.h)."""
    pc, cc, pi, ci, cpi = (float(v) for v in scalars)
    return np.array([sums[0], sums[1], -pc * pi * sums[2], -cc * ci * sums[3],
                     -cc * cpi * sums[4] if col_pos else 0.0])
