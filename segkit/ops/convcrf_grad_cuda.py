"""The CUDA trainable ConvCRF's launch sequence (csrc/cuda/convcrf_grad.cu).

``launch(kernel_name, work_items, args)`` runs one kernel, ``empty(shape, dtype)`` allocates a
device array, ``host(array)`` copies one to a NumPy array; tests drive the same sequence with
the kernels compiled for the host (tests/cuda_emu.py). Arrays are C-contiguous: unary, image
float32, mask uint8 or None, weight (C,), compat (C, C) or None.
"""
from __future__ import annotations

import numpy as np

from ..reference.convcrf import pool_geometry
from .convcrf import ConvCrfParams

I32, I64, F32 = np.int32, np.int64, np.float32
CHUNK = 4096  # pixels per partial sum (fixed: the same sums on every run)


class _Geo:
    def __init__(self, unary, cfg: ConvCrfParams):
        self.n, self.c, self.h, self.w = unary.shape
        self.hp, self.p0 = pool_geometry(self.h, cfg.blur)
        self.wp, self.p1 = pool_geometry(self.w, cfg.blur)
        self.hw, self.cells = self.h * self.w, self.hp * self.wp

    def pooled(self):  # (n, C, H, W, hp, wp, p0, p1, b) launch arguments
        return (I64(self.n), I32(self.c), I32(self.h), I32(self.w), I32(self.hp), I32(self.wp),
                I32(self.p0), I32(self.p1))


def _prepare(launch, empty, g: _Geo, image, mask, cfg):
    feat = empty((g.n, 5, g.hp, g.wp), F32)
    valid, invc = empty((g.n, g.hp, g.wp), F32), empty((g.n, g.hp, g.wp), F32)
    fmask = empty((g.n, g.h, g.w), F32)
    launch("crfg_prepare", g.n * g.cells,
           (image, mask, feat, valid, invc, fmask, I64(g.n), I32(g.h), I32(g.w), I32(g.hp),
            I32(g.wp), I32(g.p0), I32(g.p1), I32(cfg.blur), I32(mask is not None)))
    return feat, valid, invc, fmask


def _pass_args(scalars, col_pos, cfg):
    pc, cc, pi, ci, cpi = (float(v) for v in scalars)
    return (I32(cfg.filter_size // 2), F32(pc), F32(cc), F32(np.float32(pi) * np.float32(pi)),
            F32(np.float32(ci) * np.float32(ci)),
            F32(np.float32(cpi) * np.float32(cpi) if col_pos else 0.0))


def forward_steps(launch, empty, unary, image, mask, weight, compat, scalars, cfg: ConvCrfParams,
                  col_pos: bool):
    """(scores (N, C, H, W), saved pooled messages (N, T, C, hp, wp)) on the device."""
    g = _Geo(unary, cfg)
    n, c, b, t_all = g.n, g.c, cfg.blur, cfg.num_iter
    feat, valid, invc, fmask = _prepare(launch, empty, g, image, mask, cfg)
    pool_args = (fmask, invc, *g.pooled(), I32(b))
    u, q, m = (empty((n, c, g.h, g.w), F32) for _ in range(3))
    qb = empty((n, c, g.hp, g.wp), F32)
    out = empty((n, c, g.h, g.w), F32)
    saved = empty((n, t_all, c, g.hp, g.wp), F32)
    full = (I64(n), I32(c), I64(g.hw))
    launch("crfg_unary", n * g.hw, (unary, u, *full, I32(cfg.unary_kind == "probs")))
    start = u
    if cfg.unary_kind == "probs" or cfg.init == "softmax":
        launch("crfg_softmax", n * g.hw, (u, q, *full))
        start = q
    launch("crfg_pool", n * g.cells, (start, qb, *pool_args))
    ms = I64(t_all * c * g.cells)
    for t in range(t_all):
        last = t == t_all - 1
        mb = saved[:, t]
        launch("crfg_pass", n * g.cells, (qb, None, mb, ms, None, feat, valid, I64(n), I32(c),
                                          I32(g.hp), I32(g.wp), *_pass_args(scalars, col_pos,
                                                                            cfg)))
        launch("crfg_upsample", n * g.hw, (mb, ms, m, fmask, *g.pooled(), I32(b)))
        z = out if last else q
        launch("crfg_pred", n * g.hw, (u, m, compat, weight, z, *full, F32(cfg.unary_weight),
                                       I32(compat is not None)))
        if not last or cfg.final_softmax:
            launch("crfg_softmax", n * g.hw, (z, z, *full))
        if not last:
            launch("crfg_pool", n * g.cells, (q, qb, *pool_args))
    return out, saved


def backward_steps(launch, empty, host, grad, unary, image, mask, weight, compat, scalars,
                   saved, cfg: ConvCrfParams, col_pos: bool):
    """(d_unary on the device, d_weight (C,), d_sums (5,), d_compat (C, C) or None), the last
    three float64 NumPy arrays (the sums of common/convcrf_grad.h, as the C++ backward)."""
    g = _Geo(unary, cfg)
    n, c, b, t_all = g.n, g.c, cfg.blur, cfg.num_iter
    feat, valid, invc, fmask = _prepare(launch, empty, g, image, mask, cfg)
    pool_args = (fmask, invc, *g.pooled(), I32(b))
    full = (I64(n), I32(c), I64(g.hw))
    u, gbuf, qp, m, prod, dm, du = (empty((n, c, g.h, g.w), F32) for _ in range(7))
    r, qb, dqb = (empty((n, c, g.hp, g.wp), F32) for _ in range(3))
    sums = empty((n * g.cells, 5), np.float64)
    nchunks = -(-(n * g.hw) // CHUNK)
    part_w = empty((c, nchunks), np.float64)
    part_mu = empty((c, c, nchunks), np.float64) if compat is not None else None
    d_weight, d_sums = np.zeros(c), np.zeros(5)
    d_compat = None if compat is None else np.zeros((c, c))
    ms = I64(t_all * c * g.cells)
    launch("crfg_unary", n * g.hw, (unary, u, *full, I32(cfg.unary_kind == "probs")))
    start_soft = cfg.unary_kind == "probs" or cfg.init == "softmax"
    passing = (feat, valid, I64(n), I32(c), I32(g.hp), I32(g.wp),
               *_pass_args(scalars, col_pos, cfg))
    for t in range(t_all, 0, -1):
        launch("crfg_upsample", n * g.hw, (saved[:, t - 1], ms, m, fmask, *g.pooled(), I32(b)))
        if t == t_all:
            if cfg.final_softmax:  # G = Q (g - sum Q g), Q = softmax(z_T)
                launch("crfg_pred", n * g.hw, (u, m, compat, weight, qp, *full,
                                               F32(cfg.unary_weight), I32(compat is not None)))
                launch("crfg_softmax", n * g.hw, (qp, qp, *full))
                launch("crfg_softmax_jacobian", n * g.hw, (qp, grad, gbuf, *full, I32(0)))
            else:
                gbuf = grad
        launch("crfg_step_back", n * g.hw, (gbuf, u, m, compat, weight, fmask, prod, du, dm,
                                            *full, F32(cfg.unary_weight),
                                            I32(compat is not None), I32(t == t_all)))
        launch("crfg_dot_chunks", c * nchunks, (prod, None, part_w, *full, I64(CHUNK),
                                                I32(nchunks), I32(1)))
        d_weight += host(part_w).sum(axis=1)
        if compat is not None:
            launch("crfg_dot_chunks", c * c * nchunks, (gbuf, m, part_mu, *full, I64(CHUNK),
                                                        I32(nchunks), I32(0)))
            d_compat += host(part_mu).sum(axis=2) * np.asarray(host(weight), np.float64)[:, None]
        launch("crfg_upsample_adjoint", n * g.cells, (dm, r, *g.pooled(), I32(b)))
        if t >= 2:  # Q_{t-1} = softmax(z_{t-1}) from the saved message
            launch("crfg_upsample", n * g.hw, (saved[:, t - 2], ms, m, fmask, *g.pooled(),
                                               I32(b)))
            launch("crfg_pred", n * g.hw, (u, m, compat, weight, qp, *full,
                                           F32(cfg.unary_weight), I32(compat is not None)))
            launch("crfg_softmax", n * g.hw, (qp, qp, *full))
        elif start_soft:
            launch("crfg_softmax", n * g.hw, (u, qp, *full))
        start_q = qp if t >= 2 or start_soft else u
        launch("crfg_pool", n * g.cells, (start_q, qb, *pool_args))
        launch("crfg_pass", n * g.cells, (r, qb, dqb, I64(c * g.cells), sums, *passing))
        d_sums += host(sums).sum(axis=0)
        launch("crfg_unpool", n * g.hw, (dqb, prod, *pool_args))  # prod is free: dQ
        if t >= 2:
            if gbuf is grad:
                gbuf = empty((n, c, g.h, g.w), F32)
            launch("crfg_softmax_jacobian", n * g.hw, (qp, prod, gbuf, *full, I32(0)))
        elif start_soft:
            launch("crfg_softmax_jacobian", n * g.hw, (qp, prod, du, *full, I32(1)))
        else:
            launch("crfg_add", n * c * g.hw, (du, prod, I64(n * c * g.hw)))
    launch("crfg_dx", n * g.hw, (du, unary if cfg.unary_kind == "probs" else u, *full,
                                 I32(cfg.unary_kind == "probs")))
    return du, d_weight, d_sums, d_compat
