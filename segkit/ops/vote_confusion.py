"""``segkit.vote_confusion``: the confusion matrix of a weighted soft vote with a per-class
bias, in one pass over the probabilities (the objective of ``segkit tune``)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import InputError, InputTypeError
from .. import _backend, _validate
from ..reference.vote_confusion import bias_scale as _bias_scale
from .soft_vote import _as_models, _check_models, check_weights


def check_bias(bias: Any, num_classes: int) -> np.ndarray | None:
    """`bias` as float64 (C,), or None; a clear error for a wrong length or a non-finite value."""
    if bias is None:
        return None
    if isinstance(bias, (str, bytes)):
        raise InputTypeError(f"bias must be a sequence of numbers; got {bias!r}")
    try:
        b = np.asarray(bias, np.float64)
    except (TypeError, ValueError) as exc:
        raise InputTypeError(f"bias must be a sequence of numbers; got {bias!r}") from exc
    if b.ndim != 1 or len(b) != num_classes:
        raise InputError(f"bias must hold one number per class ({num_classes}); got shape "
                         f"{b.shape}")
    for c, v in enumerate(b):
        if not np.isfinite(v) or abs(v) > 80:
            raise InputError(f"bias[{c}] is {v}; biases must be finite and within +-80 "
                             "(exp(b) must stay a finite float32)")
    return b


def vote_confusion(probs: Sequence[Any], gt: Any, weights: Sequence[float] | None = None,
                   bias: Sequence[float] | None = None, *, ignore_index: int | None = 255,
                   backend: str = "auto") -> np.ndarray:
    """Count (ground truth, label) pairs of ``labels = argmax_c (log mean_c + bias_c)``, with
    ``mean`` the weighted soft vote of M models.

    Parameters
    ----------
    probs : sequence of M arrays, each (C, H, W) or (N, C, H, W), float16 or float32
        The models' class probabilities (as :func:`segkit.soft_vote` takes them).
    gt : int array (H, W) or (N, H, W)
        Ground-truth labels in 0..C-1 (``ignore_index`` excepted).
    weights : sequence of M floats >= 0, optional
        Normalised by their sum; None for equal weights.
    bias : sequence of C floats, optional
        Additive per-class offsets on the log of the mean (None: no bias). Computed as
        ``mean_c * exp(bias_c)`` in float32 (no log per pixel); ties go to the smallest class.
    ignore_index : int or None, default 255
    backend : {"auto", "numpy", "numba"}

    Returns
    -------
    numpy.ndarray of int64, shape (C, C): ``cm[g, p]`` pixels of class g labelled p.

    Examples
    --------
    >>> import numpy as np, segkit
    >>> a = np.array([[[0.6, 0.3]], [[0.4, 0.7]]], np.float16)     # one model, C=2, 1x2
    >>> segkit.vote_confusion([a], np.array([[0, 0]]), backend="numpy")
    array([[1, 1],
           [0, 0]])
    >>> segkit.vote_confusion([a], np.array([[0, 0]]), bias=[1.0, 0.0], backend="numpy")
    array([[2, 0],
           [0, 0]])
    """
    models = _as_models(probs)
    call = OP.call(backend, *models)  # host backends only: no stream, NumPy results
    arrays = [call.array(p) for p in models]
    shape, dtype = _check_models(arrays)
    factors = check_weights(weights, len(arrays))
    num_classes = shape[-3]
    scale = bias_scale(check_bias(bias, num_classes), num_classes)
    g = np.asarray(gt)
    if g.shape != shape[:-3] + shape[-2:]:
        raise InputError(f"gt must have shape {shape[:-3] + shape[-2:]} (the probabilities' "
                         f"without C); got {g.shape}")
    if not np.issubdtype(g.dtype, np.integer):
        raise InputTypeError(f"gt must hold integer labels; got {g.dtype}")
    if ignore_index is not None:
        ignore_index = _validate.integer("ignore_index", ignore_index)
    return call.runner(arrays, g, num_classes, factors, scale, ignore_index)


def _vote_numpy(arrays, g, num_classes, factors, scale, ignore_index):
    from ..reference.vote_confusion import vote_confusion as ref

    return ref(arrays, g, num_classes, factors, scale, ignore_index)


def _vote_numba(arrays, g, num_classes, factors, scale, ignore_index):
    return confusion_of_pixels(stack_pixels(arrays), g.reshape(-1), factors, scale,
                               ignore_index)


def bias_scale(bias: Sequence[float] | np.ndarray | None, num_classes: int) -> np.ndarray:
    """The float32 factors ``exp(bias_c)`` (computed in float64) by which a biased vote
    multiplies the mean; ones for ``bias=None``.

    >>> from segkit.ops.vote_confusion import bias_scale
    >>> bias_scale([0.0, 1.0], 2)
    array([1.       , 2.7182817], dtype=float32)
    """
    return _bias_scale(bias, num_classes)


def settled_pixels(probs: Any, ratio: float, *,
                   backend: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's top class, and whether it leads every other class by more than `ratio`.

    A pixel whose top class leads by more than ``exp(2 * bias_bound)`` in every model keeps
    that label under every weighting and every bias within ``+-bias_bound`` (the pixels
    ``segkit tune`` counts once instead of keeping).

    Parameters
    ----------
    probs : array (C, P), float16 or float32
        One model's probabilities of P pixels.
    ratio : float > 0
    backend : {"auto", "numpy", "numba"}

    Returns
    -------
    top : numpy.ndarray of int32, shape (P,)
        The top class (the first of equal maxima).
    settled : numpy.ndarray of bool, shape (P,)
        ``p_top > ratio * p_second`` in float32 (a tie counts as the second: never settled;
        with one class every pixel is settled).

    Examples
    --------
    >>> import numpy as np
    >>> from segkit.ops.vote_confusion import settled_pixels
    >>> p = np.array([[0.9, 0.5], [0.1, 0.5]], np.float32)
    >>> settled_pixels(p, 2.0, backend="numpy")
    (array([0, 0], dtype=int32), array([ True, False]))
    """
    call = SETTLED_OP.call(backend, probs)  # host backends only: no stream, NumPy results
    a = call.array(probs)
    if a.ndim != 2 or a.shape[0] < 1:
        raise InputError(f"probs must have shape (C, P) with C >= 1; got {a.shape}")
    if a.dtype not in (np.float16, np.float32):
        raise InputTypeError(f"probs must be float16 or float32; got {a.dtype}")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float, np.floating)) or \
            not ratio > 0 or not np.isfinite(ratio):
        raise InputError(f"ratio must be a finite number > 0; got {ratio!r}")
    return call.runner(a, float(ratio))


def _settled_numpy(a, ratio):
    from ..reference.vote_confusion import settled_pixels as ref

    return ref(a, ratio)


def _settled_numba(a, ratio):
    from .._numba.vote_confusion import settled_pixels as kernel

    a = np.ascontiguousarray(a)
    top = np.empty(a.shape[1], np.int32)
    settled = np.empty(a.shape[1], np.bool_)
    kernel(a.view(np.uint16) if a.dtype == np.float16 else a, np.float32(ratio), top, settled)
    return top, settled


def stack_pixels(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """(M, C, P) array of the models' probabilities, pixels of all images in a row (float16
    as its uint16 bits, the kernel's input); one copy."""
    first = arrays[0]
    c = first.shape[-3]
    if first.ndim == 4:
        flat = [np.moveaxis(np.asarray(a), 1, 0).reshape(c, -1) for a in arrays]
    else:
        flat = [np.asarray(a).reshape(c, -1) for a in arrays]
    data = np.ascontiguousarray(np.stack(flat))
    return data.view(np.uint16) if data.dtype == np.float16 else data


def confusion_of_pixels(data: np.ndarray, gt: np.ndarray, factors: np.ndarray,
                        scale: np.ndarray, ignore_index: int | None) -> np.ndarray:
    """The Numba kernel on (M, C, P) pixels (uint16 float16-bits or float32) and (P,) labels."""
    from .._numba.vote_confusion import vote_confusion as kernel

    m, c, p = data.shape
    if p == 0:
        return np.zeros((c, c), np.int64)
    counts, bad = kernel(data, np.asarray(factors, np.float32), np.asarray(scale, np.float32),
                         np.ascontiguousarray(gt), c, ignore_index is not None,
                         0 if ignore_index is None else int(ignore_index))
    if bad[0]:
        raise InputError(f"gt has {int(bad[0])} labels outside 0..{c - 1}; set ignore_index")
    if bad[1]:
        raise InputError(f"{int(bad[1])} pixels have a NaN score: probs hold NaN")
    return counts.reshape(c, c)


#: The backends of vote_confusion and settled_pixels (the tuning search's kernels: they run on
#: the host, where the search keeps its pixels) and their runner on each.
OP = _backend.register("vote_confusion", {"numpy": _vote_numpy, "numba": _vote_numba},
                       note="the tuning search's kernel; no C++ or CUDA kernel")
SETTLED_OP = _backend.register("settled_pixels", {"numpy": _settled_numpy,
                                                  "numba": _settled_numba},
                               note="the tuning search's pre-pass; no C++ or CUDA kernel")
