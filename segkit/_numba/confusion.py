"""Numba confusion matrix: parallel over pixel chunks, one local histogram per chunk."""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def confusion(pred, gt, num_classes, has_ign, ign):
    """pred, gt: 1-D arrays of one integer dtype. Returns (counts (C*C,), bad (2,))."""
    n = pred.size
    bins = num_classes * num_classes
    chunks = max(1, min(64, n // 65536 + 1))
    local = np.zeros((chunks, bins), np.int64)
    bad = np.zeros((chunks, 2), np.int64)
    step = (n + chunks - 1) // chunks
    for k in prange(chunks):
        for i in range(k * step, min(n, (k + 1) * step)):
            g = np.int64(gt[i])
            if has_ign and g == ign:
                continue
            p = np.int64(pred[i])
            if g < 0 or g >= num_classes:
                bad[k, 0] += 1
            elif p < 0 or p >= num_classes:
                bad[k, 1] += 1
            else:
                local[k, g * num_classes + p] += 1
    return local.sum(0), bad.sum(0)
