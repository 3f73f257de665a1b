"""The CUDA backend's launch sequence of :func:`segkit.convcrf` (csrc/cuda/convcrf.cu); the
tests drive it with the kernels compiled for the host (tests/test_convcrf_cuda.py)."""
from __future__ import annotations

import numpy as np


def cuda_steps(scores, img, k: dict, launch, empty) -> None:
    """The CUDA backend's launch sequence (csrc/cuda/convcrf.cu), in place on `scores`; `k` is
    :meth:`ConvCrfParams.kernel_constants`.

    `launch(kernel_name, work_items, args)` runs one kernel, `empty(shape)` allocates a float32
    device array; tests drive the same sequence with the kernels compiled for the host. Each
    kernel's name says what it runs (no mode codes among the arguments).
    """
    from ..reference.convcrf import pool_geometry

    n, c, h, w = scores.shape
    b, s = k["blur"], k["filter_size"] // 2
    hp, p0 = pool_geometry(h, b)
    wp, p1 = pool_geometry(w, b)
    col_pos = k["colpos_inv"] is not None
    nf = 7 if col_pos else 5
    i32, i64, f32 = np.int32, np.int64, np.float32
    cells = n * hp * wp
    feat = empty((n, nf, hp, wp))
    item = img.itemsize
    launch(f"convcrf_features_{'u8' if img.dtype == np.uint8 else 'f32'}", cells,
           (img, feat, i64(n), i32(h), i32(w), i32(hp), i32(wp), i32(p0), i32(p1), i32(b),
            *(i64(st // item) for st in img.strides), f32(k["pos_inv"]), f32(k["col_inv"]),
            i32(col_pos), f32(k["colpos_inv"] or 0.0)))
    launch(f"convcrf_unary_{k['unary_kind']}", n * h * w, (scores, i64(n), i32(c), i64(h * w)))
    q = [empty((n, c, hp, wp)), empty((n, c, hp, wp))]
    m = empty((n, c, hp, wp))
    a, wt = f32(k["unary_coef"]), f32(k["message_coef"])
    geometry = (i64(n), i32(c), i32(h), i32(w), i32(hp), i32(wp), i32(p0), i32(p1), i32(b), a,
                wt)
    start_soft = k["unary_kind"] == "probs" or k["init"] == "softmax"
    # Q_0 = U (ConvCRF's start for logits) or softmax(U)
    launch("convcrf_start_softmax" if start_soft else "convcrf_start", cells,
           (scores, m, q[0], *geometry))
    message = "convcrf_message_colpos" if col_pos else "convcrf_message"
    for it in range(k["num_iter"]):
        launch(message, cells, (q[it % 2], m, feat, i64(n), i32(c), i32(hp), i32(wp), i32(s),
                                f32(k["pos_compat"]), f32(k["col_compat"])))
        if it < k["num_iter"] - 1:
            step = "convcrf_step"  # update, softmax, pooled into the next Q
        else:
            step = "convcrf_last_step_softmax" if k["final_softmax"] else "convcrf_last_step"
        launch(step, cells, (scores, m, q[(it + 1) % 2], *geometry))
