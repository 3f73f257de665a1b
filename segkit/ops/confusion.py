"""``segkit.confusion_matrix``: the confusion matrix of label maps, and the metrics from it."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError, InputTypeError
from .. import _backend, _validate

MAX_CLASSES = 4096


def confusion_matrix(pred: Any, gt: Any, num_classes: int, *, ignore_index: int | None = 255,
                     backend: str = "auto") -> np.ndarray:
    """Count (ground truth, prediction) label pairs over all pixels.

    Parameters
    ----------
    pred, gt : arrays of int, the same shape (any number of dimensions)
        Predicted and ground-truth labels of one dtype (uint8, uint16, int32 or int64).
    num_classes : int
        C; labels must lie in 0..C-1 (``ignore_index`` excepted in ``gt``). At most 4096.
    ignore_index : int or None, default 255
        Ground-truth pixels with this label are not counted.
    backend : {"auto", "numpy", "numba", "cpp", "cuda"}

    Returns
    -------
    numpy.ndarray of int64, shape (C, C)
        ``cm[g, p]``: pixels of class g predicted as p.

    Raises
    ------
    ValueError
        If a ground-truth or predicted label lies outside 0..C-1 (the message gives how many
        and an example), or the shapes differ.

    Examples
    --------
    >>> import numpy as np, segkit
    >>> segkit.confusion_matrix(np.array([0, 1, 1]), np.array([0, 1, 255]), 2)
    array([[1, 0],
           [0, 1]])
    """
    with OP.call(backend, pred, gt) as call:  # resolve; on CUDA the caller's stream
        return _confusion(call, pred, gt, num_classes, ignore_index)


def _confusion(call, pred, gt, num_classes, ignore_index):
    num_classes = _validate.integer("num_classes", num_classes, minimum=1)
    if num_classes > MAX_CLASSES:
        raise InputError(f"num_classes must be <= {MAX_CLASSES}; got {num_classes}")
    p, g = call.array(pred), call.array(gt)
    if p.shape != g.shape:
        raise InputError(f"pred and gt must have the same shape; got {p.shape} and {g.shape}")
    _validate.fits_memory("pred", p.shape)
    dtype = _validate.label_dtype("pred", p.dtype)
    if _validate.label_dtype("gt", g.dtype) != dtype or np.dtype(p.dtype) != np.dtype(g.dtype):
        raise InputTypeError(f"pred and gt must have the same dtype; got {p.dtype} and {g.dtype}")
    # ignore_index may lie outside the label dtype (e.g. 255 with int8): then nothing matches.
    if ignore_index is not None:
        ignore_index = _validate.integer("ignore_index", ignore_index)
    if np.dtype(p.dtype) != dtype:
        p, g = p.astype(dtype), g.astype(dtype)
    counts, bad = call.runner(p, g, num_classes, ignore_index)
    if bad[0] or bad[1]:
        which = "gt" if bad[0] else "pred"
        arr = g if bad[0] else p
        arr = arr.get() if call.backend == "cuda" else np.asarray(arr)
        vals = arr.ravel()
        if ignore_index is not None and bad[0]:
            vals = vals[vals != ignore_index]
        example = vals[(vals < 0) | (vals >= num_classes)][:1]
        raise InputError(f"{which} has {bad[0] or bad[1]} labels outside 0..{num_classes - 1} "
                         f"(e.g. {int(example[0]) if example.size else '?'}); set num_classes or "
                         "ignore_index")
    return counts


def _run_numpy(p, g, c, ignore):
    from ..reference.confusion import confusion_matrix as ref

    counts, bad = ref(p, g, c, ignore)
    return counts, bad


def _run_numba(p, g, c, ignore):
    from .._numba.confusion import confusion

    if p.size == 0:
        return np.zeros((c, c), np.int64), (0, 0)
    counts, bad = confusion(np.ascontiguousarray(p).ravel(), np.ascontiguousarray(g).ravel(), c,
                            ignore is not None, ignore if ignore is not None else 0)
    return counts.reshape(c, c), (int(bad[0]), int(bad[1]))


def _run_cpp(p, g, c, ignore):
    from .. import _C

    counts = np.zeros(c * c, np.int64)
    bad = np.zeros(2, np.int64)
    if p.size:
        _C.confusion(np.ascontiguousarray(p).ravel(), np.ascontiguousarray(g).ravel(), c, ignore,
                     counts, bad)
    return counts.reshape(c, c), (int(bad[0]), int(bad[1]))


def cuda_launch(p, g, c, ignore, counts, bad):
    """(kernel name, work items, arguments) of the CUDA confusion matrix of flat, contiguous
    `p` and `g` into int64 `counts` (C*C) and `bad` (2), both zeroed by the caller."""
    from .._cuda import DTYPE_SUFFIX

    args = (p, g, np.int64(p.size), np.int32(c), np.int32(ignore is not None),
            np.int64(ignore if ignore is not None else 0), counts, bad)
    return f"confusion_{DTYPE_SUFFIX[np.dtype(p.dtype)]}", p.size, args


def _run_cuda(p, g, c, ignore):
    import cupy

    from .. import _cuda

    p, g = cupy.ascontiguousarray(p).ravel(), cupy.ascontiguousarray(g).ravel()
    counts = cupy.zeros(c * c, cupy.int64)
    bad = cupy.zeros(2, cupy.int64)
    name, total, args = cuda_launch(p, g, c, ignore, counts, bad)
    _cuda.launch(_cuda.get_kernel("confusion", name), total, args)  # op_stream's stream
    b = bad.get()
    return counts.get().reshape(c, c), (int(b[0]), int(b[1]))


#: The backends of confusion_matrix and its runner on each: flat or any-shaped labels of one
#: kernel dtype, C and the ignore label in; (counts (C, C) int64 NumPy, (bad gt, bad pred)) out.
OP = _backend.register("confusion_matrix", {"numpy": _run_numpy, "numba": _run_numba,
                                            "cpp": _run_cpp, "cuda": _run_cuda})


def iou_scores(cm: np.ndarray) -> dict:
    """Per-class IoU (NaN for classes absent from both ground truth and prediction), mIoU
    over the classes that are present, pixel accuracy, from a (C, C) confusion matrix."""
    cm = np.asarray(cm, np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(cm.sum(1) > 0, tp / cm.sum(1), np.nan)
    total = cm.sum()
    return {"iou": iou, "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
            "class_acc": acc, "pixel_acc": float(tp.sum() / total) if total else float("nan")}
