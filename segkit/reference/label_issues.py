"""Reference confident learning for segmentation, written from cleanlab 2.9's algorithm on its
defaults (``cleanlab.segmentation.filter.find_label_issues`` and
``cleanlab.segmentation.rank.get_label_quality_scores``): whole-array NumPy, float64 sums.

The four stages every backend implements (segkit/ops/label_issues.py composes them):

- ``sums``: per class c, the sum of the self-confidence p_c over pixels labelled c and their
  count (the thresholds are sums / counts, clipped below at 2e-6);
- ``scores``: per pixel the self-confidence (NaN where ignored), whether argmax != label
  (a candidate), the 65536-bin histogram of the scores' order keys, and the estimated number
  of issues: candidates whose top probability reaches its class threshold minus 1e-6;
- ``softmin``: the per-image softmin of the pixel scores;
- ``flags``: candidates whose score's order key lies below a cutoff key.
"""
from __future__ import annotations

import numpy as np

HIST_BINS = 1 << 16


def order_keys(scores: np.ndarray) -> np.ndarray:
    """uint32 keys in the order of the float32 `scores` (negative values flipped)."""
    u = np.ascontiguousarray(scores, np.float32).view(np.uint32)
    return np.where(u & np.uint32(0x80000000), ~u, u | np.uint32(0x80000000)).astype(np.uint32)


def classes_of(labels: np.ndarray, num_classes: int, ignore_index):
    """(class index or -1 for ignored or -2 for out of range, as int64)."""
    lab = np.asarray(labels).astype(np.int64)
    cls = np.where((lab < 0) | (lab >= num_classes), -2, lab)
    if ignore_index is not None:
        cls = np.where(lab == ignore_index, -1, cls)
    return cls


def sums(labels, probs, num_classes: int, ignore_index=None):
    """(sums float64 (C,), counts int64 (C,), bad: labels outside 0..C-1)."""
    n, hw = len(labels), int(np.prod(np.shape(labels)[1:]))
    cls = classes_of(labels, num_classes, ignore_index).reshape(n, hw)
    p = np.asarray(probs, np.float32).reshape(n, num_classes, hw)
    s = np.zeros(num_classes, np.float64)
    k = np.zeros(num_classes, np.int64)
    for c in range(num_classes):
        sel = cls == c
        s[c] = p[:, c][sel].astype(np.float64).sum()
        k[c] = sel.sum()
    return s, k, int((cls == -2).sum())


def scores(labels, probs, num_classes: int, thresholds_adj, ignore_index=None):
    """(scores float32 (N, H, W), candidates bool (N, H, W), hist int64 (65536,), counted)."""
    n, hw = len(labels), int(np.prod(np.shape(labels)[1:]))
    cls = classes_of(labels, num_classes, ignore_index).reshape(n, hw)
    p = np.asarray(probs, np.float32).reshape(n, num_classes, hw)
    valid = cls >= 0
    arg = p.argmax(1)
    best = np.take_along_axis(p, arg[:, None], 1)[:, 0]
    own = np.take_along_axis(p, np.where(valid, cls, 0)[:, None], 1)[:, 0]
    sc = np.where(valid, own, np.float32(np.nan)).astype(np.float32)
    cand = valid & (arg != cls)
    thr = np.asarray(thresholds_adj, np.float64)
    counted = int((cand & (best.astype(np.float64) >= thr[arg])).sum())
    keys = order_keys(sc[valid])
    hist = np.bincount(keys >> 16, minlength=HIST_BINS).astype(np.int64)
    shape = np.shape(labels)
    return sc.reshape(shape), cand.reshape(shape), hist, counted


def softmin(pixel_scores, temperature: float):
    """float64 (N,): sum s w / sum w with w = exp((min s - s) / max(T, 1e-6)), NaN skipped."""
    s = np.asarray(pixel_scores, np.float32)
    s = s.reshape(len(s), int(np.prod(s.shape[1:])))
    t = max(float(temperature), 1e-6)
    out = np.full(len(s), np.nan)
    for i, row in enumerate(s):
        v = row[~np.isnan(row)].astype(np.float64)
        if v.size:
            w = np.exp((v.min() - v) / t)
            out[i] = (v * w).sum() / w.sum()
    return out


def flags(pixel_scores, candidates, cutoff_key: int):
    """bool: candidates whose score's order key is below `cutoff_key`."""
    return np.asarray(candidates, bool) & (order_keys(pixel_scores) < np.uint32(cutoff_key))


def label_issues(labels, probs, ignore_index=None):
    """The whole of cleanlab's find_label_issues on its defaults, in one function (the test
    oracle beside cleanlab itself): bool (N, H, W). Ties at the cutoff score: lowest flat
    index first."""
    labels = np.asarray(labels)
    c = np.shape(probs)[1]
    s, k, _ = sums(labels, probs, c, ignore_index)
    thr = np.clip(np.where(k > 0, s / np.maximum(k, 1), 0.0), 2e-6, None)
    sc, cand, _, counted = scores(labels, probs, c, thr - 1e-6, ignore_index)
    flat = sc.ravel()
    order = np.argsort(np.where(np.isnan(flat), np.inf, flat), kind="stable")[:counted]
    out = np.zeros(flat.size, bool)
    out[order] = True
    return (out & cand.ravel()).reshape(labels.shape)
