"""Numba fused vote + per-class scale + argmax + confusion counts (one pass over the data):
the arithmetic of :mod:`segkit.reference.vote_confusion`, parallel over chunks of pixels, each
chunk with its own (C, C) histogram, summed at the end.

float16 inputs arrive as their uint16 bits and are converted exactly (as in the soft vote).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .soft_vote import to_float32

#: Pixels per inner tile (the running best/label/acc arrays stay in L1).
TILE = 2048
#: At most this many parallel chunks (each holds a C*C int64 histogram).
MAX_CHUNKS = 256


@njit(parallel=True, cache=True)
def vote_confusion(data, factors, scale, gt, num_classes, has_ign, ign):
    """data: C-contiguous (M, C, P) uint16 (float16 bits) or float32; factors: (M,) float32
    (0 skips a model); scale: (C,) float32 (exp of the bias); gt: (P,) integer labels.
    Returns (counts (C*C,) int64 indexed [gt * C + pred], bad (2,): gt out of range, NaN
    scores)."""
    m_count, nc, npix = data.shape
    tiles = (npix + TILE - 1) // TILE
    chunks = max(1, min(MAX_CHUNKS, tiles))
    per = (tiles + chunks - 1) // chunks
    local = np.zeros((chunks, num_classes * num_classes), np.int64)
    bad = np.zeros((chunks, 2), np.int64)
    for k in prange(chunks):
        best = np.empty(TILE, np.float32)
        lab = np.zeros(TILE, np.int32)
        acc = np.empty(TILE, np.float32)
        for t in range(k * per, min(tiles, (k + 1) * per)):
            x0 = t * TILE
            x1 = min(x0 + TILE, npix)
            length = x1 - x0
            for c in range(nc):
                acc[:length] = 0
                for m in range(m_count):
                    f = factors[m]
                    if f == 0:
                        continue
                    src = data[m, c, x0:x1]
                    for x in range(length):
                        acc[x] = acc[x] + f * to_float32(src[x])
                s_c = scale[c]
                if c == 0:
                    for x in range(length):
                        best[x] = acc[x] * s_c
                        lab[x] = 0
                else:
                    for x in range(length):
                        s = acc[x] * s_c
                        b = best[x]
                        better = s > b
                        best[x] = s if better else b
                        lab[x] = c if better else lab[x]
            for x in range(length):
                if best[x] != best[x]:
                    bad[k, 1] += 1
                g = np.int64(gt[x0 + x])
                if has_ign and g == ign:
                    continue
                if g < 0 or g >= num_classes:
                    bad[k, 0] += 1
                else:
                    local[k, g * num_classes + lab[x]] += 1
    return local.sum(0), bad.sum(0)
