"""Reference confusion matrix: numpy bincount over the kept pixels."""
from __future__ import annotations

import numpy as np


def confusion_matrix(pred, gt, num_classes: int, ignore_index=None):
    """(C, C) int64 counts, row = ground truth, column = prediction, and the numbers of
    out-of-range ground-truth and predicted labels (ignored pixels are not checked)."""
    p = np.asarray(pred).ravel().astype(np.int64)
    g = np.asarray(gt).ravel().astype(np.int64)
    keep = np.ones(g.shape, bool) if ignore_index is None else g != ignore_index
    p, g = p[keep], g[keep]
    bad_gt = (g < 0) | (g >= num_classes)
    bad_pred = ~bad_gt & ((p < 0) | (p >= num_classes))
    ok = ~bad_gt & ~bad_pred
    counts = np.bincount(g[ok] * num_classes + p[ok], minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64), \
        (int(bad_gt.sum()), int(bad_pred.sum()))
