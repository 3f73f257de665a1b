"""The CUDA ConvCRF's launch sequences: the forward of the one kernel family
(csrc/cuda/convcrf.cu), which ``segkit.convcrf`` runs without saved state
(segkit/ops/convcrf_cuda.py) and the trainable op with it, and the trainable backward
(csrc/cuda/convcrf_grad.cu, which includes the forward's kernels).

``launch(kernel_name, work_items, args)`` runs one kernel, ``empty(shape, dtype)`` allocates a
device array; tests drive the same sequences with the kernels compiled for the host
(tests/cuda_emu.py). Arrays: unary float32 C-contiguous, image (N, 3, H, W) uint8 or float32
with any strides (element multiples), mask uint8 or None, weight (C,), compat (C, C) or None.

Nothing crosses to the host: the op's named scalar values (``values``: pos_compat, col_compat,
pos_sdims, col_schan, col_sdims, 0-d float32 device arrays, col_sdims None when absent) reach
the kernels as pointers, and the backward adds the sums of every iteration into device
accumulators (double, a fixed order: the same bits on every run) that its last kernel turns
into the gradients through the one chain rule (csrc/common/convcrf_grad_params.h). The
setting `p` gives the geometry and the start/end (its scalar fields are not read here).
"""
from __future__ import annotations

import numpy as np

from ..reference.convcrf import pool_geometry
from .convcrf import ConvCrfParams

I32, I64, F32 = np.int32, np.int64, np.float32
CHUNK = 4096  # pixels per partial sum (fixed: the same sums on every run)
#: A null pointer argument. CuPy turns None into 0xffffffff, not NULL (cupy issue 9046), so
#: the sequences never hand None to a kernel: every optional array (mask, compat, col_sdims,
#: fmask, sums) goes through :func:`_null_safe`.
NULL = np.uint64(0)


def _null_safe(launch):
    """`launch` with every None argument passed as :data:`NULL`."""
    def run(name, total, args):
        launch(name, total, tuple(NULL if a is None else a for a in args))
    return run


class _Geo:
    def __init__(self, unary, p: ConvCrfParams):
        self.n, self.c, self.h, self.w = unary.shape
        self.hp, self.p0 = pool_geometry(self.h, p.blur)
        self.wp, self.p1 = pool_geometry(self.w, p.blur)
        self.hw, self.cells = self.h * self.w, self.hp * self.wp

    def pooled(self):  # (n, C, H, W, hp, wp, p0, p1, b) launch arguments
        return (I64(self.n), I32(self.c), I32(self.h), I32(self.w), I32(self.hp), I32(self.wp),
                I32(self.p0), I32(self.p1))


def _prepare(launch, empty, g: _Geo, image, mask, p: ConvCrfParams, fmask: bool = True):
    """Pooled features, validity, inverse counts and (`fmask`, or a mask given) the float mask
    of the pixels; the forward without a mask needs none (every pixel counts)."""
    feat = empty((g.n, 5, g.hp, g.wp), F32)
    valid, invc = empty((g.n, g.hp, g.wp), F32), empty((g.n, g.hp, g.wp), F32)
    fm = empty((g.n, g.h, g.w), F32) if fmask or mask is not None else None
    item = image.itemsize
    kind = "u8" if image.dtype == np.uint8 else "f32"
    launch(f"crfg_prepare_{kind}", g.n * g.cells,
           (image, *(I64(st // item) for st in image.strides), mask, feat, valid, invc, fm,
            I64(g.n), I32(g.h), I32(g.w), I32(g.hp), I32(g.wp), I32(g.p0), I32(g.p1),
            I32(p.blur)))
    return feat, valid, invc, fm


def _values(values: dict):
    """The five value pointers in the kernels' argument order (col_sdims None: null)."""
    return tuple(values[k] for k in ("pos_compat", "col_compat", "pos_sdims", "col_schan",
                                     "col_sdims"))


def forward_steps(launch, empty, unary, image, mask, weight, compat, values: dict,
                  p: ConvCrfParams, keep: bool = True, out=None):
    """(scores (N, C, H, W), saved (N, T, C, hp, wp) or None without `keep`) on the device.
    saved[:, t] is Qb_t, the pooled Q that iteration t + 1's message pass reads (Qb_0 pools
    the start Q_0): each pass reads its slice in place and the update writes the next one
    there. Without `keep` one pooled Q is reused. `out`: where the scores go (may be `unary`
    itself: in place); it holds U until the last iteration, so that the forward needs no other
    full-resolution buffer."""
    launch = _null_safe(launch)
    g = _Geo(unary, p)
    n, c, b, t_all = g.n, g.c, p.blur, p.num_iter
    feat, valid, invc, fmask = _prepare(launch, empty, g, image, mask, p, fmask=False)
    out = empty((n, c, g.h, g.w), F32) if out is None else out
    mb = empty((n, c, g.hp, g.wp), F32)
    saved = empty((n, t_all if keep else 1, c, g.hp, g.wp), F32)
    qs = I64(saved.shape[1] * c * g.cells)
    launch("crfg_unary", n * g.hw, (unary, out, I64(n), I32(c), I64(g.hw),
                                    I32(p.unary_kind == "probs")))
    launch("crfg_start", n * g.cells, (out, fmask, invc, saved[:, 0], qs, *g.pooled(), I32(b),
                                       I32(p.unary_kind == "probs" or p.init == "softmax")))
    passing = (feat, valid, I64(n), I32(c), I32(g.hp), I32(g.wp), I32(p.filter_size // 2),
               *_values(values))
    for t in range(t_all):
        last = t == t_all - 1
        launch("crfg_pass", n * g.cells, (saved[:, t if keep else 0], qs, None, I64(0), mb,
                                          None, *passing))
        qn = None if last else saved[:, t + 1 if keep else 0]
        launch("crfg_update", n * g.cells, (out, mb, compat, weight, fmask, invc, qn, qs, out,
                                            *g.pooled(), I32(b), F32(p.unary_weight),
                                            I32(not last or p.final_softmax)))
    return out, saved if keep else None


def _accumulate(launch, part, acc, rows: int, nchunks: int, first: bool):
    """acc (+)= the row sums of part (rows, nchunks), on the device, in a fixed order."""
    launch("crfg_accumulate", rows, (part, acc, I32(rows), I32(nchunks), I32(first)))


def backward_steps(launch, empty, grad, unary, image, mask, weight, compat, values: dict,
                   saved, p: ConvCrfParams):
    """(d_unary, d_weight (C,), d_params (5,): the gradients w.r.t. pos_compat, col_compat,
    pos_sdims, col_schan, col_sdims (0 when absent), d_compat (C, C) or None), float32 device
    arrays; no copy to the host. `saved`: the forward's Qb_t (N, T, C, hp, wp).

    Stage t (T down to 1) holds the message Mb_t = A Qb_{t-1} (one pooled pass over the saved
    slice) and M'_t, its upsampled form; the parameter sums of dQb_{t-1} = A R_t are taken
    against the saved Qb_{t-1} itself, and Q_{t-1} for the softmax Jacobian is recomputed at
    full resolution from Mb_{t-1} = A Qb_{t-2}, whose M'_{t-1} the next stage then reads (at
    blur 1 the Jacobian reads the saved Qb_{t-1} instead: the masked Q_{t-1})."""
    launch = _null_safe(launch)
    g = _Geo(unary, p)
    n, c, b, t_all = g.n, g.c, p.blur, p.num_iter
    feat, valid, invc, fmask = _prepare(launch, empty, g, image, mask, p)
    pool_args = (fmask, invc, *g.pooled(), I32(b))
    full = (I64(n), I32(c), I64(g.hw))
    # full resolution: U, M', G (the incoming grad at t = T without a final softmax), the
    # product for dw that then holds dQ, dM that then holds Q_{t-1}, dU; pooled: R and Mb,
    # which then holds dQb (each buffer's second use starts after its first one ends)
    u, m, prod, dm, du = (empty((n, c, g.h, g.w), F32) for _ in range(5))
    gbuf = empty((n, c, g.h, g.w), F32) if p.final_softmax else grad
    qp = dm
    r, mb = (empty((n, c, g.hp, g.wp), F32) for _ in range(2))
    dqb = mb
    sums = empty((5, n * g.cells), np.float64)  # the five sums per pooled cell, planar
    nchunks, schunks = -(-(n * g.hw) // CHUNK), -(-(n * g.cells) // CHUNK)
    part_w, part_s = empty((c, nchunks), np.float64), empty((5, schunks), np.float64)
    part_mu = empty((c, c, nchunks), np.float64) if compat is not None else None
    acc_w, acc_s = empty((c,), np.float64), empty((5,), np.float64)
    acc_mu = empty((c, c), np.float64) if compat is not None else None
    qs, chw = I64(t_all * c * g.cells), I64(c * g.hw)
    launch("crfg_unary", n * g.hw, (unary, u, *full, I32(p.unary_kind == "probs")))
    start_soft = p.unary_kind == "probs" or p.init == "softmax"
    passing = (feat, valid, I64(n), I32(c), I32(g.hp), I32(g.wp), I32(p.filter_size // 2),
               *_values(values))

    def message(t):  # m = M'_t = fmask upsample(A Qb_{t-1}), via mb
        launch("crfg_pass", n * g.cells, (saved[:, t - 1], qs, None, I64(0), mb, None,
                                          *passing))
        launch("crfg_upsample", n * g.hw, (mb, m, fmask, *g.pooled(), I32(b)))

    def q_prev(t):  # (Q_{t-1}, its image stride): at blur 1 the saved Qb_{t-1} itself (the
        # masked Q: 0 where dQ is 0 too), else recomputed at full resolution into qp
        if b == 1:
            return saved[:, t - 1], qs
        if t >= 2:
            launch("crfg_pred", n * g.hw, (u, m, compat, weight, qp, *full,
                                           F32(p.unary_weight), I32(compat is not None)))
            launch("crfg_softmax", n * g.hw, (qp, qp, *full))
        else:
            launch("crfg_softmax", n * g.hw, (u, qp, *full))
        return qp, chw

    message(t_all)
    for t in range(t_all, 0, -1):
        first = t == t_all
        if first and p.final_softmax:  # G = Q (g - sum Q g), Q = softmax(z_T)
            launch("crfg_pred", n * g.hw, (u, m, compat, weight, qp, *full,
                                           F32(p.unary_weight), I32(compat is not None)))
            launch("crfg_softmax", n * g.hw, (qp, qp, *full))
            launch("crfg_softmax_jacobian", n * g.hw, (qp, chw, grad, gbuf, *full, I32(0)))
        launch("crfg_step_back", n * g.hw, (gbuf, u, m, compat, weight, fmask, prod, du, dm,
                                            *full, F32(p.unary_weight),
                                            I32(compat is not None), I32(first)))
        launch("crfg_dot_chunks", c * nchunks, (prod, None, part_w, *full, I64(CHUNK),
                                                I32(nchunks), I32(1)))
        _accumulate(launch, part_w, acc_w, c, nchunks, first)
        if compat is not None:
            launch("crfg_dot_chunks", c * c * nchunks, (gbuf, m, part_mu, *full, I64(CHUNK),
                                                        I32(nchunks), I32(0)))
            _accumulate(launch, part_mu, acc_mu, c * c, nchunks, first)
        launch("crfg_upsample_adjoint", n * g.cells, (dm, r, *g.pooled(), I32(b)))
        # dQb_{t-1} = A R_t and the parameter sums against the saved Qb_{t-1}
        launch("crfg_pass", n * g.cells, (r, I64(c * g.cells), saved[:, t - 1], qs, dqb, sums,
                                          *passing))
        launch("crfg_chunk_sums", 5 * schunks, (sums, part_s, I32(5), I64(n * g.cells),
                                                I64(CHUNK), I32(schunks)))
        _accumulate(launch, part_s, acc_s, 5, schunks, first)
        launch("crfg_unpool", n * g.hw, (dqb, prod, *pool_args))  # prod is free: dQ
        if t >= 2:  # Q_{t-1} = softmax(z_{t-1}); m = M'_{t-1} stays for the next stage
            message(t - 1)
            if gbuf is grad:
                gbuf = empty((n, c, g.h, g.w), F32)
            launch("crfg_softmax_jacobian", n * g.hw, (*q_prev(t), prod, gbuf, *full, I32(0)))
        elif start_soft:
            launch("crfg_softmax_jacobian", n * g.hw, (*q_prev(t), prod, du, *full, I32(1)))
        else:
            launch("crfg_add", n * c * g.hw, (du, prod, I64(n * c * g.hw)))
    launch("crfg_dx", n * g.hw, (du, unary if p.unary_kind == "probs" else u, *full,
                                 I32(p.unary_kind == "probs")))
    d_weight, d_params = empty((c,), F32), empty((5,), F32)
    d_compat = empty((c, c), F32) if compat is not None else None
    launch("crfg_param_grads", c * c + c + 1, (acc_w, acc_s, acc_mu, weight, *_values(values),
                                              d_weight, d_params, d_compat, I32(c)))
    return du, d_weight, d_params, d_compat
