"""Numba ConvCRF: the fused algorithm of csrc/cpu/convcrf.cpp (weights of half the offsets
stored once per image in zero-haloed planes, one pass over Q per iteration, the b x b pooling
of the next Q fused into the update), with loops over a row that LLVM vectorises."""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

LOGITS, PROBS = 0, 1
INIT_CONVCRF, INIT_SOFTMAX = 0, 1
F32 = np.float32


#: Exponents below this give 0: keeps weights, probabilities and their products clear of
#: float32 subnormals, which x86 computes through slow microcode assists (the C++ backend
#: flushes them to zero instead). exp(-40) = 4e-18: far below any score's precision.
EXP_FLOOR = -40.0


@njit(cache=True, inline="always")
def _exp(x):
    return math.exp(x) if x > EXP_FLOOR else F32(0.0)


@njit(cache=True, inline="always")
def _geometry(n, b):
    off = (b - n % b) % b
    return (n + b - 1) // b, (off + 1) // 2


@njit(cache=True, inline="always")
def _span(P, pad, b, n):
    return max(P * b - pad, 0), min(P * b - pad + b, n)


@njit(cache=True, inline="always")
def _taps(i, pad, b, n_in):
    """Bilinear taps (align_corners=False) of full-resolution pixel i (torch's formula)."""
    scale = F32(1.0 / b)
    src = scale * (F32(i + pad) + F32(0.5)) - F32(0.5)
    if src < 0:
        src = F32(0.0)
    lo = min(int(src), n_in - 1)
    lam = min(max(src - F32(lo), F32(0.0)), F32(1.0))
    hi = lo + 1 if lo < n_in - 1 else lo
    return lo, hi, F32(1.0) - lam, lam


@njit(parallel=True, cache=True)
def _features(img, feat, hp, wp, p0, p1, b, pos_inv, col_inv, col_pos, colpos_inv):
    """Pooled features (F, hp, wp): position, [colour position], colour; float32 products,
    means in float64."""
    h, w = img.shape[1], img.shape[2]
    c0 = 4 if col_pos else 2
    for R in prange(hp):
        y0, y1 = _span(R, p0, b, h)
        for X in range(wp):
            x0, x1 = _span(X, p1, b, w)
            sy = 0.0
            sx = 0.0
            cy = 0.0
            cx = 0.0
            r = 0.0
            g = 0.0
            bl = 0.0
            for i in range(y0, y1):
                for j in range(x0, x1):
                    sy += F32(i) * pos_inv
                    sx += F32(j) * pos_inv
                    cy += F32(i) * colpos_inv
                    cx += F32(j) * colpos_inv
                    r += F32(img[0, i, j]) * col_inv
                    g += F32(img[1, i, j]) * col_inv
                    bl += F32(img[2, i, j]) * col_inv
            n = float((y1 - y0) * (x1 - x0))
            feat[0, R, X] = sy / n
            feat[1, R, X] = sx / n
            if col_pos:
                feat[2, R, X] = cy / n
                feat[3, R, X] = cx / n
            feat[c0, R, X] = r / n
            feat[c0 + 1, R, X] = g / n
            feat[c0 + 2, R, X] = bl / n


@njit(parallel=True, cache=True)
def _weights(feat, K, offs, s, npos, pos_compat, col_compat):
    """K[j, s + R, s + x] = weight between (R, x) and (R + ey, x + ex); zero elsewhere."""
    nf, hp, wp = feat.shape
    half = F32(-0.5)
    for R in prange(hp):
        for j in range(offs.shape[0]):
            ey = offs[j, 0]
            ex = offs[j, 1]
            if R + ey >= hp:
                continue
            for x in range(max(0, -ex), min(wp, wp - ex)):
                ep = F32(0.0)
                ec = F32(0.0)
                for f in range(nf):
                    d = feat[f, R + ey, x + ex] - feat[f, R, x]
                    if f < npos:
                        ep += half * (d * d)
                    else:
                        ec += half * (d * d)
                K[j, s + R, s + x] = pos_compat * _exp(ep) + col_compat * _exp(ec)


@njit(parallel=True, cache=True)
def _unary(v, kind):
    """U in place: log_softmax over classes (LOGITS) or log (PROBS)."""
    c, h, w = v.shape
    for i in prange(h):
        if kind == PROBS:
            for k in range(c):
                for x in range(w):
                    v[k, i, x] = math.log(v[k, i, x]) if v[k, i, x] > 0 else -np.inf
            continue
        mx = v[0, i].copy()
        for k in range(1, c):
            for x in range(w):
                mx[x] = max(mx[x], v[k, i, x])
        acc = np.zeros(w, np.float32)
        for k in range(c):
            for x in range(w):
                acc[x] += math.exp(v[k, i, x] - mx[x])
        for x in range(w):
            acc[x] = math.log(acc[x])
        for k in range(c):
            for x in range(w):
                v[k, i, x] = (v[k, i, x] - mx[x]) - acc[x]


@njit(cache=True, inline="always")
def _softmax_rows(P, n):
    """Softmax over the classes of P[:, :n] in place."""
    c = P.shape[0]
    mx = P[0, :n].copy()
    for k in range(1, c):
        for x in range(n):
            mx[x] = max(mx[x], P[k, x])
    acc = np.zeros(n, np.float32)
    for k in range(c):
        for x in range(n):
            e = _exp(P[k, x] - mx[x])
            P[k, x] = e
            acc[x] += e
    for x in range(n):
        acc[x] = F32(1.0) / acc[x]
    for k in range(c):
        for x in range(n):
            P[k, x] *= acc[x]


@njit(cache=True, inline="always")
def _message_row(Q, K, offs, s, r, wp, kc, out):
    """out[c, x] = sum_d K(p, p+d) Q_c(p+d) along pooled row r (flat index arithmetic, so that
    LLVM sees contiguous runs and vectorises the innermost loop)."""
    c = Q.shape[0]
    ld = Q.shape[2]
    qplane = Q.shape[1] * ld
    kplane = K.shape[1] * ld
    Qf = Q.reshape(-1)
    Kf = K.reshape(-1)
    base = (s + r) * ld + s
    for k in range(c):
        qb = k * qplane + base
        for x in range(wp):
            out[k, x] = kc * Qf[qb + x]
    for j in range(offs.shape[0]):
        o = offs[j, 0] * ld + offs[j, 1]
        kf = j * kplane + base
        kb = kf - o
        for k in range(c):
            qf = k * qplane + base + o
            qb = k * qplane + base - o
            for x in range(wp):
                out[k, x] += Kf[kf + x] * Qf[qf + x] + Kf[kb + x] * Qf[qb + x]


@njit(cache=True)
def _mix(M, compat, wd):
    """M' = M + compat @ M over the classes of one row (ConvCRF's convcomp)."""
    c = M.shape[0]
    Mp = np.empty((c, wd), np.float32)
    for k in range(c):
        for x in range(wd):
            Mp[k, x] = M[k, x]
        for d in range(c):
            for x in range(wd):
                Mp[k, x] += compat[k, d] * M[d, x]
    return Mp


@njit(parallel=True, cache=True)
def _step_blur1(U, Qcur, Qnext, K, offs, s, kc, a, w, compat, mix, mode, soft, last):
    """blur 1: (message,) update and softmax of every row; into Qnext or, last, into U.
    a, w: per-class coefficients; mix: M' = M + compat @ M."""
    c, h, wd = U.shape
    for r in prange(h):
        P = np.empty((c, wd), np.float32)
        if mode == 1:
            M = np.empty((c, wd), np.float32)
            _message_row(Qcur, K, offs, s, r, wd, kc, M)
            if mix:
                M = _mix(M, compat, wd)
            for k in range(c):
                for x in range(wd):
                    P[k, x] = a[k] * U[k, r, x] + w[k] * M[k, x]
        else:
            for k in range(c):
                for x in range(wd):
                    P[k, x] = U[k, r, x]
        if soft:
            _softmax_rows(P, wd)
        if mode == 1 and last:
            for k in range(c):
                for x in range(wd):
                    U[k, r, x] = P[k, x]
        else:
            for k in range(c):
                for x in range(wd):
                    Qnext[k, s + r, s + x] = P[k, x]


@njit(parallel=True, cache=True)
def _message_blur(Qcur, K, offs, s, kc, Me, xi0, xi1, xl0, xl1):
    """blur b: the message of each pooled row, upsampled along the row into Me (C, hp, W)."""
    c, hp, wd = Me.shape
    wp = Qcur.shape[2] - 2 * s
    for R in prange(hp):
        M = np.empty((c, wp), np.float32)
        _message_row(Qcur, K, offs, s, R, wp, kc, M)
        for k in range(c):
            for x in range(wd):
                Me[k, R, x] = xl0[x] * M[k, xi0[x]] + xl1[x] * M[k, xi1[x]]


@njit(parallel=True, cache=True)
def _update_blur(U, Me, Qnext, s, b, p0, p1, a, w, compat, mix, mode, soft, last):
    """blur b: per pooled row, its full-resolution rows (interpolation, update, softmax), then
    the b x b means into Qnext (or, last, the rows into U)."""
    c, h, wd = U.shape
    hp = Qnext.shape[1] - 2 * s
    wp = Qnext.shape[2] - 2 * s
    pool = mode == 0 or not last
    for R in prange(hp):
        y0, y1 = _span(R, p0, b, h)
        A = np.zeros((c, wd), np.float32)
        P = np.empty((c, wd), np.float32)
        for i in range(y0, y1):
            if mode == 1 and mix:
                r0, r1, h0, h1 = _taps(i, p0, b, hp)
                M = np.empty((c, wd), np.float32)
                for k in range(c):
                    for x in range(wd):
                        M[k, x] = h0 * Me[k, r0, x] + h1 * Me[k, r1, x]
                M = _mix(M, compat, wd)
                for k in range(c):
                    for x in range(wd):
                        P[k, x] = a[k] * U[k, i, x] + w[k] * M[k, x]
            elif mode == 1:
                r0, r1, h0, h1 = _taps(i, p0, b, hp)
                for k in range(c):
                    for x in range(wd):
                        P[k, x] = a[k] * U[k, i, x] + w[k] * (h0 * Me[k, r0, x]
                                                              + h1 * Me[k, r1, x])
            else:
                for k in range(c):
                    for x in range(wd):
                        P[k, x] = U[k, i, x]
            if soft:
                _softmax_rows(P, wd)
            if not pool:
                for k in range(c):
                    for x in range(wd):
                        U[k, i, x] = P[k, x]
                continue
            for k in range(c):
                for x in range(wd):
                    A[k, x] += P[k, x]
        if not pool:
            continue
        rows = F32(y1 - y0)
        for k in range(c):
            for X in range(wp):
                x0, x1 = _span(X, p1, b, wd)
                t = F32(0.0)
                for x in range(x0, x1):
                    t += A[k, x]
                Qnext[k, s + R, s + X] = t / (rows * F32(x1 - x0))


def convcrf(scores: np.ndarray, image: np.ndarray, *, filter_size: int, blur: int,
            num_iter: int, pos_inv: float, col_inv: float, colpos_inv: float | None,
            pos_compat: float, col_compat: float, unary_coef: float, message_coef: float,
            unary_kind: int, init: int, final_softmax: bool, class_weight=None, compat=None,
            unary_weight: float = 1.0) -> None:
    """In place: `scores` (N, C, H, W) float32 C-contiguous holds the unary on entry and the
    scores on return; `image` (N, 3, H, W) uint8 or float32 (any strides). A fitted setting:
    class_weight (C,) replaces message_coef (unary coefficient unary_weight - w_c), compat
    (C, C) mixes the message (M + compat @ M)."""
    n, c, h, w = scores.shape
    if n == 0 or h == 0 or w == 0:
        return
    s = filter_size // 2
    hp, p0 = _geometry(h, blur)
    wp, p1 = _geometry(w, blur)
    offs = np.array([(ey, ex) for ey in range(s + 1) for ex in range(-s, s + 1)
                     if ey > 0 or ex > 0], np.int64).reshape(-1, 2)
    col_pos = colpos_inv is not None
    nf = 7 if col_pos else 5
    f32 = np.float32
    kc = f32(f32(pos_compat) + f32(col_compat))
    if class_weight is None:
        a = np.full(c, f32(unary_coef), np.float32)
        wt = np.full(c, f32(message_coef), np.float32)
    else:
        wt = np.asarray(class_weight, np.float32)
        a = (f32(unary_weight) - wt).astype(np.float32)
    mix = compat is not None
    cm = np.zeros((c, c), np.float32) if compat is None else np.asarray(compat, np.float32)
    feat = np.empty((nf, hp, wp), np.float32)
    K = np.zeros((len(offs), hp + 2 * s, wp + 2 * s), np.float32)
    Q = [np.zeros((c, hp + 2 * s, wp + 2 * s), np.float32) for _ in range(2)]
    Me = np.empty((c, hp, w), np.float32) if blur > 1 else None
    if blur > 1:
        taps = [_taps(x, p1, blur, wp) for x in range(w)]
        xi0 = np.array([t[0] for t in taps], np.int64)
        xi1 = np.array([t[1] for t in taps], np.int64)
        xl0 = np.array([t[2] for t in taps], np.float32)
        xl1 = np.array([t[3] for t in taps], np.float32)
    init_soft = unary_kind == PROBS or init == INIT_SOFTMAX
    for i in range(n):
        _features(image[i], feat, hp, wp, p0, p1, blur, f32(pos_inv), f32(col_inv), col_pos,
                  f32(colpos_inv or 0.0))
        _weights(feat, K, offs, s, 2, f32(pos_compat), f32(col_compat))
        U = scores[i]
        _unary(U, unary_kind)
        if blur == 1:
            _step_blur1(U, Q[1], Q[0], K, offs, s, kc, a, wt, cm, mix, 0, init_soft, False)
        else:
            _update_blur(U, Me, Q[0], s, blur, p0, p1, a, wt, cm, mix, 0, init_soft, False)
        for it in range(num_iter):
            last = it == num_iter - 1
            soft = not last or bool(final_softmax)
            qcur, qnext = Q[it % 2], Q[(it + 1) % 2]
            if blur == 1:
                _step_blur1(U, qcur, qnext, K, offs, s, kc, a, wt, cm, mix, 1, soft, last)
            else:
                _message_blur(qcur, K, offs, s, kc, Me, xi0, xi1, xl0, xl1)
                _update_blur(U, Me, qnext, s, blur, p0, p1, a, wt, cm, mix, 1, soft, last)
