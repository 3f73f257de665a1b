"""Numba confident-learning kernels (the stages of segkit/reference/label_issues.py; float16
probabilities arrive as their uint16 bits):
parallel over fixed chunks of each image, per-chunk partials reduced in order."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .soft_vote import to_float32  # float16 arrives as its uint16 bits

CHUNK = 1 << 15
HIST_BINS = 1 << 16


@njit(cache=True, inline="always")
def _class_of(v, c, has_ign, ign):
    v = np.int64(v)
    if has_ign and v == ign:
        return -1
    if v < 0 or v >= c:
        return -2
    return v


@njit(cache=True, inline="always")
def _key(u):
    """Order key of a float32's bits `u` (uint32)."""
    if u & np.uint32(0x80000000):
        return ~u
    return u | np.uint32(0x80000000)


@njit(parallel=True, cache=True)
def sums(labels, probs, c, has_ign, ign):
    """labels (N, HW), probs (N, C, HW) -> (sums (C,), counts (C,), bad)."""
    n, hw = labels.shape
    per = (hw + CHUNK - 1) // CHUNK
    tasks = n * per
    ps = np.zeros((tasks, c), np.float64)
    pk = np.zeros((tasks, c), np.int64)
    pb = np.zeros(tasks, np.int64)
    for t in prange(tasks):
        img = t // per
        b = (t % per) * CHUNK
        e = min(hw, b + CHUNK)
        for i in range(b, e):
            k = _class_of(labels[img, i], c, has_ign, ign)
            if k >= 0:
                ps[t, k] += np.float64(to_float32(probs[img, k, i]))
                pk[t, k] += 1
            elif k == -2:
                pb[t] += 1
    s = np.zeros(c, np.float64)
    cnt = np.zeros(c, np.int64)
    for t in range(tasks):  # in order: independent of the thread count
        for k in range(c):
            s[k] += ps[t, k]
            cnt[k] += pk[t, k]
    return s, cnt, pb.sum()


@njit(parallel=True, cache=True)
def scores(labels, probs, c, has_ign, ign, thr_adj, want_hist):
    """-> (scores float32 (N, HW), candidates uint8 (N, HW), hist (65536,), counted)."""
    n, hw = labels.shape
    per = (hw + CHUNK - 1) // CHUNK
    tasks = n * per
    sc = np.empty((n, hw), np.float32)
    cand = np.empty((n, hw), np.uint8)
    su = sc.reshape(n * hw).view(np.uint32)
    counted = np.zeros(tasks, np.int64)
    groups = min(tasks, 16) if want_hist else 0
    hist = np.zeros((max(groups, 1), HIST_BINS), np.int64)
    step = (tasks + max(groups, 1) - 1) // max(groups, 1)
    for g in prange(max(groups, 1)):
        for t in range(g * step, min(tasks, (g + 1) * step)):
            img = t // per
            b = (t % per) * CHUNK
            e = min(hw, b + CHUNK)
            cnt = 0
            for i in range(b, e):
                k = _class_of(labels[img, i], c, has_ign, ign)
                if k < 0:
                    sc[img, i] = np.nan
                    cand[img, i] = 0
                    continue
                a = 0
                m = to_float32(probs[img, 0, i])
                for j in range(1, c):
                    v = to_float32(probs[img, j, i])
                    if v > m:
                        m = v
                        a = j
                s = to_float32(probs[img, k, i])
                sc[img, i] = s
                cand[img, i] = a != k
                if a != k and np.float64(m) >= thr_adj[a]:
                    cnt += 1
                if want_hist:
                    hist[g, _key(su[img * hw + i]) >> 16] += 1
            counted[t] = cnt
    return sc, cand, hist.sum(0), counted.sum()


@njit(parallel=True, cache=True)
def softmin(sc, temperature):
    n, hw = sc.shape
    t = max(temperature, 1e-6)
    out = np.empty(n, np.float64)
    for img in prange(n):
        lo = np.inf
        anyv = False
        for i in range(hw):
            v = sc[img, i]
            if not np.isnan(v):
                anyv = True
                if v < lo:
                    lo = v
        if not anyv:
            out[img] = np.nan
            continue
        m = np.float64(np.float32(lo))
        num = 0.0
        den = 0.0
        for i in range(hw):
            v = sc[img, i]
            if np.isnan(v):
                continue
            x = np.float64(v)
            w = np.exp((m - x) / t)
            num += x * w
            den += w
        out[img] = num / den
    return out


@njit(parallel=True, cache=True)
def flags(sc, cand, cutoff_key):
    su = sc.view(np.uint32)
    total = sc.size
    out = np.empty(total, np.uint8)
    for i in prange(total):
        out[i] = 1 if (cand[i] != 0 and _key(su[i]) < cutoff_key) else 0
    return out


BLOCK = 512  # pixels whose argmax is kept while the class planes stream


@njit(parallel=True, cache=True)
def fused(labels, probs, c, has_ign, ign, want_hist):
    """One read of probs: -> (sums (C,), counts (C,), bad, scores float32 (N, HW),
    candidates uint8, argmax int32, top float32 (its probability), hist (65536,), the flat
    index of the first NaN or inf in probs or -1): the outputs of `sums` and of `scores`
    (without the count, see `count`)."""
    n, hw = labels.shape
    per = (hw + CHUNK - 1) // CHUNK
    tasks = n * per
    ps = np.zeros((tasks, c), np.float64)
    pk = np.zeros((tasks, c), np.int64)
    pb = np.zeros(tasks, np.int64)
    pnf = np.full(tasks, -1, np.int64)  # per chunk: first NaN or inf, flat index into probs
    sc = np.empty((n, hw), np.float32)
    cand = np.empty((n, hw), np.uint8)
    am = np.empty((n, hw), np.int32)
    top = np.empty((n, hw), np.float32)
    su = sc.reshape(n * hw).view(np.uint32)
    flat = probs.reshape(n * c * hw)
    groups = min(tasks, 16)
    hist = np.zeros((max(groups, 1), HIST_BINS), np.int64)
    step = (tasks + max(groups, 1) - 1) // max(groups, 1)
    for g in prange(max(groups, 1)):
        best = np.empty(BLOCK, np.float32)
        arg = np.empty(BLOCK, np.int32)
        odd = np.empty(BLOCK, np.float32)
        for t in range(g * step, min(tasks, (g + 1) * step)):
            img = t // per
            b = (t % per) * CHUNK
            e = min(hw, b + CHUNK)
            for b0 in range(b, e, BLOCK):
                m = min(BLOCK, e - b0)
                # every probability is read here, so NaN and inf are found here: v - v is 0
                # for a finite v and NaN otherwise, summed per pixel (lanes, not one reduction,
                # so that the loop stays vectorised)
                for j in range(m):
                    v = to_float32(probs[img, 0, b0 + j])
                    best[j] = v
                    arg[j] = 0
                    odd[j] = v - v
                for q in range(1, c):
                    base = (img * c + q) * hw + b0
                    for j in range(m):  # selects, not branches: LLVM vectorises them
                        v = to_float32(flat[base + j])
                        bj = best[j]
                        gt = v > bj
                        best[j] = v if gt else bj
                        arg[j] = q if gt else arg[j]
                        odd[j] += v - v
                if pnf[t] < 0:
                    for j in range(m):
                        if odd[j] != 0:
                            pnf[t] = _first_nonfinite(flat, img, c, hw, b, e)
                            break
                for j in range(m):
                    i = b0 + j
                    k = _class_of(labels[img, i], c, has_ign, ign)
                    if k < 0:
                        if k == -2:
                            pb[t] += 1
                        sc[img, i] = np.nan
                        cand[img, i] = 0
                        am[img, i] = 0
                        top[img, i] = 0.0
                        continue
                    s = to_float32(probs[img, k, i])
                    ps[t, k] += np.float64(s)
                    pk[t, k] += 1
                    sc[img, i] = s
                    cand[img, i] = arg[j] != k
                    am[img, i] = arg[j]
                    top[img, i] = best[j]
                    if want_hist:
                        hist[g, _key(su[img * hw + i]) >> 16] += 1
    s = np.zeros(c, np.float64)
    cnt = np.zeros(c, np.int64)
    nonfinite = -1
    for t in range(tasks):  # in order: independent of the thread count
        for k in range(c):
            s[k] += ps[t, k]
            cnt[k] += pk[t, k]
        if pnf[t] >= 0 and (nonfinite < 0 or pnf[t] < nonfinite):
            nonfinite = pnf[t]
    return s, cnt, pb.sum(), sc, cand, am, top, hist.sum(0), nonfinite


@njit(cache=True)
def _first_nonfinite(flat, img, c, hw, b, e):
    """The smallest flat index into probs of a NaN or inf among image `img`'s pixels b..e-1
    (in probs order: class, then pixel), or -1."""
    for q in range(c):
        base = (img * c + q) * hw
        for i in range(b, e):
            v = to_float32(flat[base + i])
            if not (v - v == 0):
                return base + i
    return -1


@njit(parallel=True, cache=True)
def count(cand, am, top, thr_adj):
    """The number of counted issues of `fused`'s flat outputs."""
    total = cand.size
    n = 0
    for i in prange(total):
        if cand[i] != 0 and np.float64(top[i]) >= thr_adj[am[i]]:
            n += 1
    return n
