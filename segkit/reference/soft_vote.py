"""Reference soft vote: the weighted mean of M models' class probabilities and its argmax,
written as plainly as NumPy allows (GUIDE section 3). Every fast backend is tested against it.

The arithmetic is part of the definition, so that all backends agree bit for bit (and hence
on labels at near-ties):

- the weights are divided by their sum in float64 and rounded to float32 factors ``f_m``
  (``weights=None``: every model gets ``1/M``); models whose factor is 0 are skipped;
- ``mean[c] = 0``, then for m = 0 .. M-1 in the given order:
  ``mean[c] = fl32(mean[c] + fl32(f_m * float32(p_m[c])))``: each product and each sum is
  rounded to float32 once (no fused multiply-add, no pairwise or reordered summation);
- ``label = argmax_c mean[c]``, ties to the smallest class (``np.argmax`` returns the first).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def weight_factors(weights: Sequence[float] | np.ndarray | None, m: int) -> np.ndarray:
    """float32 factors f_m = w_m / sum(w) (computed in float64); 1/M each for None."""
    if weights is None:
        return np.full(m, 1.0 / m, dtype=np.float64).astype(np.float32)
    w = np.asarray(weights, dtype=np.float64)
    return (w / w.sum()).astype(np.float32)


def label_dtype(num_classes: int) -> np.dtype:
    """uint8 for up to 256 classes, uint16 up to 65536."""
    if num_classes <= 256:
        return np.dtype(np.uint8)
    if num_classes <= 65536:
        return np.dtype(np.uint16)
    raise ValueError(f"at most 65536 classes are supported; got {num_classes}")


def vote_with_factors(arrays: Sequence[np.ndarray], factors: np.ndarray):
    """(labels, mean) for arrays of one shape (C, H, W) or (N, C, H, W) and float32 factors."""
    mean = np.zeros(np.shape(arrays[0]), dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN are the caller's to judge
        for f, p in zip(factors, arrays):
            if f == 0:
                continue
            product = np.float32(f) * np.asarray(p).astype(np.float32)  # rounded once
            mean += product                                              # rounded once
    labels = mean.argmax(axis=-3).astype(label_dtype(mean.shape[-3]))
    return labels, mean


def soft_vote(probs: Sequence[np.ndarray], weights=None, *, return_probs: bool = False):
    """Labels (and with `return_probs` the float32 weighted mean) of M arrays (C, H, W) or
    (N, C, H, W) of one shape."""
    arrays = [np.asarray(p) for p in probs]
    labels, mean = vote_with_factors(arrays, weight_factors(weights, len(arrays)))
    return (labels, mean) if return_probs else labels
