"""Numba mode filter: the same per-pixel definition as csrc/common/mode_filter.h, plus a
branch-free 3x3 row routine that LLVM vectorises over columns."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

# Codes shared with the C++ and CUDA kernels (csrc/common/mode_filter.h).
CENTER, TOPLEFT = 0, 1
KEEP, SMALLEST, FIRST = 0, 1, 2


@njit(cache=True, inline="always")
def _span(p, n, size, anchor):
    if anchor == CENTER:
        return max(p - size // 2, 0), min(p + size // 2 + 1, n)
    lo = max(min(p, n - size), 0)
    return lo, min(lo + size, n)


@njit(cache=True)
def _mode_pixel(img, r, c, size, anchor, ties, has_ign, ign):
    """Pairwise counting over the (clipped) window: any size, no scratch memory."""
    own = img[r, c]
    if has_ign and own == ign:
        return own
    h, w = img.shape
    r0, r1 = _span(r, h, size, anchor)
    c0, c1 = _span(c, w, size, anchor)
    best = own
    best_count = 0
    own_count = 0
    for i in range(r0, r1):
        for j in range(c0, c1):
            v = img[i, j]
            if has_ign and v == ign:
                continue
            count = 0
            for y in range(r0, r1):
                for x in range(c0, c1):
                    if img[y, x] == v:
                        count += 1
            if v == own:
                own_count = count
            if count > best_count or (ties != FIRST and count == best_count and v < best):
                best_count = count
                best = v
    if best_count == 0:
        return own
    if ties == KEEP and own_count == best_count:
        return own
    return best


@njit(cache=True, inline="always")
def _eq(a, b):
    return np.int32(1) if a == b else np.int32(0)


@njit(cache=True)
def _row3(img, top, out_row, col0, nx, own, ties, has_ign, ign, vmax):
    """out_row[col0 + x] = mode of rows top..top+2, columns x..x+2, for x in [0, nx).
    `own` is the row-major window index of the pixel's own label."""
    r0 = img[top]
    r1 = img[top + 1]
    r2 = img[top + 2]
    orow = own // 3
    ocol = own % 3
    for x in range(nx):
        v0 = r0[x]; v1 = r0[x + 1]; v2 = r0[x + 2]  # noqa: E702
        v3 = r1[x]; v4 = r1[x + 1]; v5 = r1[x + 2]  # noqa: E702
        v6 = r2[x]; v7 = r2[x + 1]; v8 = r2[x + 2]  # noqa: E702
        e01 = _eq(v0, v1); e02 = _eq(v0, v2); e03 = _eq(v0, v3); e04 = _eq(v0, v4)  # noqa: E702
        e05 = _eq(v0, v5); e06 = _eq(v0, v6); e07 = _eq(v0, v7); e08 = _eq(v0, v8)  # noqa: E702
        e12 = _eq(v1, v2); e13 = _eq(v1, v3); e14 = _eq(v1, v4); e15 = _eq(v1, v5)  # noqa: E702
        e16 = _eq(v1, v6); e17 = _eq(v1, v7); e18 = _eq(v1, v8)  # noqa: E702
        e23 = _eq(v2, v3); e24 = _eq(v2, v4); e25 = _eq(v2, v5); e26 = _eq(v2, v6)  # noqa: E702
        e27 = _eq(v2, v7); e28 = _eq(v2, v8)  # noqa: E702
        e34 = _eq(v3, v4); e35 = _eq(v3, v5); e36 = _eq(v3, v6); e37 = _eq(v3, v7)  # noqa: E702
        e38 = _eq(v3, v8)
        e45 = _eq(v4, v5); e46 = _eq(v4, v6); e47 = _eq(v4, v7); e48 = _eq(v4, v8)  # noqa: E702
        e56 = _eq(v5, v6); e57 = _eq(v5, v7); e58 = _eq(v5, v8)  # noqa: E702
        e67 = _eq(v6, v7); e68 = _eq(v6, v8)  # noqa: E702
        e78 = _eq(v7, v8)
        c0 = np.uint8(1 + e01 + e02 + e03 + e04 + e05 + e06 + e07 + e08)
        c1 = np.uint8(1 + e01 + e12 + e13 + e14 + e15 + e16 + e17 + e18)
        c2 = np.uint8(1 + e02 + e12 + e23 + e24 + e25 + e26 + e27 + e28)
        c3 = np.uint8(1 + e03 + e13 + e23 + e34 + e35 + e36 + e37 + e38)
        c4 = np.uint8(1 + e04 + e14 + e24 + e34 + e45 + e46 + e47 + e48)
        c5 = np.uint8(1 + e05 + e15 + e25 + e35 + e45 + e56 + e57 + e58)
        c6 = np.uint8(1 + e06 + e16 + e26 + e36 + e46 + e56 + e67 + e68)
        c7 = np.uint8(1 + e07 + e17 + e27 + e37 + e47 + e57 + e67 + e78)
        c8 = np.uint8(1 + e08 + e18 + e28 + e38 + e48 + e58 + e68 + e78)
        if has_ign:
            z = np.uint8(0)
            c0 = z if v0 == ign else c0
            c1 = z if v1 == ign else c1
            c2 = z if v2 == ign else c2
            c3 = z if v3 == ign else c3
            c4 = z if v4 == ign else c4
            c5 = z if v5 == ign else c5
            c6 = z if v6 == ign else c6
            c7 = z if v7 == ign else c7
            c8 = z if v8 == ign else c8
        m = max(max(max(c0, c1), max(c2, c3)), max(max(c4, c5), max(max(c6, c7), c8)))
        vo = img[top + orow, x + ocol]
        if ties == FIRST:
            res = v8
            res = v7 if c7 == m else res
            res = v6 if c6 == m else res
            res = v5 if c5 == m else res
            res = v4 if c4 == m else res
            res = v3 if c3 == m else res
            res = v2 if c2 == m else res
            res = v1 if c1 == m else res
            res = v0 if c0 == m else res
        else:
            res = vmax
            res = v0 if c0 == m else res
            res = v1 if c1 == m and v1 < res else res
            res = v2 if c2 == m and v2 < res else res
            res = v3 if c3 == m and v3 < res else res
            res = v4 if c4 == m and v4 < res else res
            res = v5 if c5 == m and v5 < res else res
            res = v6 if c6 == m and v6 < res else res
            res = v7 if c7 == m and v7 < res else res
            res = v8 if c8 == m and v8 < res else res
            if ties == KEEP:
                co = np.uint8(_eq(vo, v0) + _eq(vo, v1) + _eq(vo, v2) + _eq(vo, v3) + _eq(vo, v4)
                      + _eq(vo, v5) + _eq(vo, v6) + _eq(vo, v7) + _eq(vo, v8))
                if has_ign and vo == ign:
                    co = np.uint8(0)
                res = vo if co == m else res
        if has_ign and (m == 0 or vo == ign):
            res = vo
        out_row[col0 + x] = res


@njit(parallel=True, cache=True)
def mode_filter(labels, out, size, anchor, ties, has_ign, ign, vmax):
    """labels, out: (N, H, W) arrays of one integer dtype; codes as in the C++ header."""
    n, h, w = labels.shape
    ign = labels.dtype.type(ign)
    vmax = labels.dtype.type(vmax)
    for rr in prange(n * h):
        b = rr // h
        r = rr % h
        img = labels[b]
        orow = out[b, r]
        if size == 3 and h >= 3 and w >= 3 and (anchor == TOPLEFT or 1 <= r <= h - 2):
            if anchor == CENTER:
                _row3(img, r - 1, orow, 1, w - 2, 4, ties, has_ign, ign, vmax)
                orow[0] = _mode_pixel(img, r, 0, size, anchor, ties, has_ign, ign)
                orow[w - 1] = _mode_pixel(img, r, w - 1, size, anchor, ties, has_ign, ign)
            else:
                top = min(r, h - 3)
                _row3(img, top, orow, 0, w - 2, 3 * (r - top), ties, has_ign, ign, vmax)
                orow[w - 2] = _mode_pixel(img, r, w - 2, size, anchor, ties, has_ign, ign)
                orow[w - 1] = _mode_pixel(img, r, w - 1, size, anchor, ties, has_ign, ign)
        else:
            for c in range(w):
                orow[c] = _mode_pixel(img, r, c, size, anchor, ties, has_ign, ign)
