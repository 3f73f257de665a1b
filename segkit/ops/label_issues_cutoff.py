"""The cutoff arithmetic of :mod:`segkit.ops.label_issues` (NumPy only, no backends): the
per-class thresholds from the stage-1 sums, the order keys of float32 scores and their 65536-bin
histogram, and the cutoff of the T lowest scores found from that histogram and the scores of the
one bin it falls in (ties broken in flat index order). The streaming audit job
(:func:`segkit.audit`) and :func:`segkit.label_issues` share it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import InputError

HIST_BINS = 1 << 16
#: cleanlab's constants (cleanlab.internal.constants)
FLOATING_POINT_COMPARISON = 1e-6
CONFIDENT_THRESHOLDS_LOWER_BOUND = 2e-6


def thresholds_from_sums(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per-class thresholds t_c = mean self-confidence (0 for unseen classes), clipped below at
    cleanlab's 2e-6."""
    sums, counts = np.asarray(sums, np.float64), np.asarray(counts, np.int64)
    t = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
    return np.clip(t, CONFIDENT_THRESHOLDS_LOWER_BOUND, None)


def order_keys(scores) -> np.ndarray:
    """uint32 keys ordered as the float32 `scores` (the kernels' ``order_key``)."""
    from ..reference.label_issues import order_keys as keys

    return keys(scores)


def in_bin(scores: np.ndarray, bin_: int) -> np.ndarray:
    """Boolean mask of the float32 `scores` whose order key falls in histogram bin `bin_`."""
    u = np.ascontiguousarray(scores, np.float32).view(np.uint32) >> np.uint32(16)
    target = bin_ - 0x8000 if bin_ >= 0x8000 else 0xFFFF - bin_
    return u == np.uint32(target)


@dataclass(frozen=True)
class Cutoff:
    """Where the T lowest scores end: every score with a key below `key` is in, and of the
    scores whose key equals `tie_key` the first `ties` in index order (0: none, `tie_key` is
    then unused)."""
    key: int
    tie_key: int
    ties: int
    count: int            # T, the estimated number of issues

    @property
    def tie_value(self) -> np.float32:
        k = np.uint32(self.tie_key)
        u = ~k if not (k & np.uint32(0x80000000)) else k & np.uint32(0x7FFFFFFF)
        return np.array([u], np.uint32).view(np.float32)[0]


def find_cutoff(hist: np.ndarray, count: int, gather: Callable[[int], np.ndarray]) -> Cutoff:
    """The cutoff of the `count` lowest scores, from their histogram and `gather(bin)`: the
    scores (float32, any order) that fall in one bin."""
    if count <= 0:
        return Cutoff(0, 0, 0, 0)
    hist = np.asarray(hist, np.int64)
    cum = np.cumsum(hist)
    if count > cum[-1]:
        raise InputError(f"count {count} exceeds the {int(cum[-1])} scored pixels")
    b = int(np.searchsorted(cum, count))
    before = int(cum[b] - hist[b])
    keys = order_keys(gather(b))
    if keys.size != hist[b]:
        raise RuntimeError(f"bin {b} holds {keys.size} scores, its histogram says {hist[b]}")
    r = count - before  # 1..hist[b]
    kth = int(np.partition(keys, r - 1)[r - 1])
    less = before + int((keys < kth).sum())
    equal = int((keys == kth).sum())
    ties = count - less
    if ties == equal:  # every tied score is in: no tie to break
        return Cutoff(kth + 1, 0, 0, count)
    return Cutoff(kth, kth, ties, count)


def apply_ties(flags: np.ndarray, pixel_scores: np.ndarray, candidates: np.ndarray,
               cutoff: Cutoff, start: int = 0) -> int:
    """Adds, in place, the tied pixels at the cutoff to `flags` (the first `cutoff.ties - start`
    pixels, in flat order, whose score has the tie key; flagged if candidates). Returns how many
    tied pixels this array held (to carry `start` on to the next image)."""
    if cutoff.ties <= start:
        return 0
    u = np.ascontiguousarray(pixel_scores, np.float32).view(np.uint32).ravel()
    want = np.uint32(cutoff.tie_key)
    bits = ~want if not (want & np.uint32(0x80000000)) else want & np.uint32(0x7FFFFFFF)
    idx = np.flatnonzero(u == bits)
    take = idx[:cutoff.ties - start]
    f = flags.reshape(-1)
    f[take] = np.asarray(candidates).reshape(-1)[take].astype(bool)
    return int(idx.size)
