"""Reference mode filter: one pixel at a time, straight from the contract (GUIDE section 3).

Slow (a Python loop over pixels) and meant to be: every fast backend is tested against it.
`seed_mode_filter` is the original recipe's loop, kept as the baseline it must reproduce.
"""
from __future__ import annotations

from collections import Counter

import numpy as np


def window_bounds(p: int, n: int, size: int, anchor: str) -> tuple[int, int]:
    """Half-open [lo, hi) span of the window along one axis for output position p."""
    if anchor == "center":
        return max(p - size // 2, 0), min(p + size // 2 + 1, n)
    lo = max(min(p, n - size), 0)
    return lo, min(lo + size, n)


def mode_of_window(window: np.ndarray, own, ties: str, ignore_index=None):
    """Mode of one window (2-D) for a pixel whose label is `own`, by the tie rule."""
    if ignore_index is not None and own == ignore_index:
        return own
    voters = [v for v in window.ravel().tolist() if ignore_index is None or v != ignore_index]
    if not voters:
        return own
    counts = Counter(voters)  # insertion order = first appearance in row-major order
    top = max(counts.values())
    tied = [v for v, n in counts.items() if n == top]
    if ties == "first":
        return tied[0]
    if ties == "keep" and own in tied:
        return own
    return min(tied)


def mode_filter(labels: np.ndarray, size: int = 3, *, anchor: str = "center",
                ties: str = "keep", ignore_index=None) -> np.ndarray:
    """Reference of `segkit.mode_filter` for (H, W) or (N, H, W) integer arrays."""
    labels = np.asarray(labels)
    if labels.ndim == 3:
        return np.stack([mode_filter(m, size, anchor=anchor, ties=ties, ignore_index=ignore_index)
                         for m in labels]) if len(labels) else labels.copy()
    out = labels.copy()
    h, w = labels.shape
    for r in range(h):
        r0, r1 = window_bounds(r, h, size, anchor)
        for c in range(w):
            c0, c1 = window_bounds(c, w, size, anchor)
            out[r, c] = mode_of_window(labels[r0:r1, c0:c1], labels[r, c], ties, ignore_index)
    return out


def seed_mode_filter(mask: np.ndarray, size: int = 3) -> np.ndarray:
    """The original recipe's loop: every window, in row-major order, writes its most common
    label (Counter.most_common: the first in row-major order among equals) into all of its
    pixels of a copy. Equals ``mode_filter(mask, size, anchor="topleft", ties="first")`` for
    images at least `size` pixels on each side (smaller ones it leaves unchanged)."""
    out = mask.copy()
    h, w = mask.shape
    for i in range(h - size + 1):
        for j in range(w - size + 1):
            window = mask[i:i + size, j:j + size]
            label = Counter(window.flatten().tolist()).most_common(1)[0][0]
            out[i:i + size, j:j + size] = label
    return out
