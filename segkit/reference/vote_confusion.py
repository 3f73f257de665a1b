"""Reference fused vote and confusion matrix: the labels of a weighted soft vote with an
additive per-class bias on the log of the mean, counted against ground truth, written as
plainly as NumPy allows. Every fast backend is tested against it.

The arithmetic is part of the definition (so that every backend, and the ensemble job that
applies a tuned setting, agrees on labels at near-ties):

- ``mean`` is the soft vote's weighted mean (:mod:`segkit.reference.soft_vote`: float32
  factors ``w_m / sum(w)``, models in order, one float32 rounding per product and per sum);
- ``scale_c = float32(exp(b_c))`` (exp in float64; 1 for every class without a bias), and
  ``score_c = fl32(mean_c * scale_c)``: since exp is increasing,
  ``argmax_c (log mean_c + b_c) = argmax_c mean_c * exp(b_c)``, so no log is taken per pixel;
- ``label = argmax_c score_c``, ties to the smallest class;
- ``cm[g, label] += 1`` for every pixel whose ground truth g is not ``ignore_index``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .soft_vote import vote_with_factors


def bias_scale(bias: Sequence[float] | np.ndarray | None, num_classes: int) -> np.ndarray:
    """float32 ``exp(b_c)`` per class (computed in float64); ones for None."""
    if bias is None:
        return np.ones(num_classes, np.float32)
    return np.exp(np.asarray(bias, np.float64)).astype(np.float32)


def settled_pixels(probs: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """For one model's (C, P) probabilities: the top class of every pixel (int32, the first of
    equal maxima) and whether its probability is more than `ratio` (float32) times the second
    largest (bool; the second largest counts a tie, and is -1 with one class)."""
    vals = np.asarray(probs, np.float32)
    top = np.argmax(vals, axis=0).astype(np.int32)
    if vals.shape[0] < 2:
        second = np.full(vals.shape[1:], -1, np.float32)
    else:
        second = np.partition(vals, vals.shape[0] - 2, axis=0)[vals.shape[0] - 2]
    best = vals.max(axis=0)
    return top, best > np.float32(ratio) * second


def biased_labels(arrays: Sequence[np.ndarray], factors: np.ndarray,
                  scale: np.ndarray) -> np.ndarray:
    """int64 labels of (C, H, W) or (N, C, H, W) arrays: argmax of mean * scale over C."""
    _, mean = vote_with_factors(arrays, factors)
    axis = mean.ndim - 3
    shape = [1] * mean.ndim
    shape[axis] = -1
    score = (mean * scale.reshape(shape)).astype(np.float32)
    return np.argmax(score, axis=axis)


def vote_confusion(arrays: Sequence[np.ndarray], gt: np.ndarray, num_classes: int,
                   factors: np.ndarray, scale: np.ndarray,
                   ignore_index: int | None) -> np.ndarray:
    """(C, C) int64 counts ``cm[g, p]`` of the biased vote's labels against `gt`."""
    labels = biased_labels(arrays, factors, scale).ravel()
    g = np.asarray(gt).astype(np.int64).ravel()
    keep = np.ones(g.shape, bool) if ignore_index is None else g != ignore_index
    if ((g[keep] < 0) | (g[keep] >= num_classes)).any():
        raise ValueError(f"gt has labels outside 0..{num_classes - 1}")
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (g[keep], labels[keep]), 1)
    return cm
