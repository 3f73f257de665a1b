"""``segkit.soft_vote``: weighted soft voting of several models' class probabilities."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import InputError, InputTypeError
from .. import _backend, _validate
from ..reference.soft_vote import label_dtype, weight_factors

PROB_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))


def soft_vote(probs: Sequence[Any], weights: Sequence[float] | None = None, *,
              return_probs: bool = False, backend: str = "auto"):
    """Labels of the weighted mean of M models' class probabilities, in one fused pass.

    Parameters
    ----------
    probs : sequence of M arrays, each (C, H, W) or (N, C, H, W)
        One array per model, all of one shape and one dtype: float16 or float32 (a float32
        model mixed with float16 ones raises; cast it first). NumPy arrays of any strides,
        memory-mapped ``.npy`` files (e.g. :meth:`segkit.ConfidenceStore.read`), CuPy arrays
        and torch tensors. A stacked (M, C, H, W) array is read as M models. The inputs are
        read where they are: no float32 copy and no (M, C, H, W) stack is made (the ``cpp``
        and ``cuda`` backends copy only an input whose last axis is not contiguous, and
        ``numba`` one that is not C-contiguous, in its own dtype).
    weights : sequence of M floats, optional
        Non-negative and finite, not all zero; default: equal weights. They need not sum to 1:
        they are divided by their sum (in float64) and rounded to float32 factors ``f_m``, so
        the result is a weighted *mean*. Models whose factor is 0 are not read (a NaN in them
        goes unnoticed).
    return_probs : bool, default False
        Also return the weighted mean itself (float32, the input's shape), e.g. as a CRF's
        input. ``labels == mean.argmax(axis=-3)`` holds exactly.
    backend : {"auto", "numpy", "numba", "cpp", "cuda"}
        ``"auto"`` takes ``"cuda"`` when an input is on a GPU and the fastest CPU backend
        otherwise; a named backend that is not available raises
        :class:`segkit.BackendUnavailableError`.

    Returns
    -------
    labels : (H, W) or (N, H, W) uint8 (C <= 256) or uint16 (C <= 65536)
        ``argmax_c mean[c]``; ties go to the smallest class.
    mean : float32 array of the inputs' shape (only with ``return_probs``)
        ``mean[c] = sum_m f_m * p_m[c]``, summed in float32 in the models' order, each product
        and each sum rounded once (no fused multiply-add), identical on every backend, so the
        labels agree exactly even at near-ties. A sum that overflows float32 (possible only
        with huge float32 inputs) becomes inf and, like any maximum, goes to its smallest class.

    For GPU input the results are arrays of the same kind (CuPy, or torch CUDA tensors) on the
    same device; host input gives NumPy arrays.

    Raises
    ------
    ValueError
        Mismatched shapes or class counts (naming the model), no models, bad weights (wrong
        count, negative, NaN/inf, all zero), or a NaN in a model's probabilities (naming the
        model and the first NaN's index).
    TypeError
        A dtype other than float16/float32, or models of different dtypes.

    Examples
    --------
    >>> import numpy as np, segkit
    >>> a = np.array([[[0.6]], [[0.4]]], np.float16)    # model A: (C=2, H=1, W=1)
    >>> b = np.array([[[0.2]], [[0.8]]], np.float16)    # model B
    >>> segkit.soft_vote([a, b], backend="numpy")        # mean (0.4, 0.6) -> class 1
    array([[1]], dtype=uint8)
    >>> segkit.soft_vote([a, b], weights=[3, 1], backend="numpy")  # (0.5, 0.5): a tie -> 0
    array([[0]], dtype=uint8)
    """
    models = _as_models(probs)
    with OP.call(backend, *models) as call:  # resolve; on CUDA the caller's stream
        return _soft_vote(call, models, weights, return_probs)


def _soft_vote(call, models, weights, return_probs):
    arrays = [call.array(p) for p in models]  # results in the kind of the first model
    if call.backend == "cuda":
        devices = {a.device.id for a in arrays}
        if len(devices) > 1:
            raise InputError(f"probs are on several GPUs ({sorted(devices)}); put every model "
                             "on one device")
    shape, dtype = _check_models(arrays)
    factors = check_weights(weights, len(arrays))
    if not isinstance(return_probs, (bool, np.bool_)):
        raise InputTypeError(f"return_probs must be True or False; got {return_probs!r}")
    num_classes = shape[-3]
    lab_dtype = label_dtype(num_classes)

    keep = [m for m in range(len(arrays)) if factors[m] != 0]
    batched = [arrays[m] if len(shape) == 4 else arrays[m][None] for m in keep]
    labels, mean, nan = call.runner(batched, factors[keep], lab_dtype, bool(return_probs))
    if nan:
        _raise_nan(arrays, keep, call.backend)
    if len(shape) == 3:
        labels = labels[0]
        mean = mean[0] if mean is not None else None
    labels = call.back(labels)
    mean = call.back(mean) if mean is not None else None
    return (labels, mean) if return_probs else labels


# ---- validation ----------------------------------------------------------------------------
def _as_models(probs: Any) -> list:
    if isinstance(probs, (str, bytes)) or not hasattr(probs, "__len__") or \
            not hasattr(probs, "__getitem__"):
        raise InputTypeError("probs must be a sequence of arrays, one per model (or a stacked "
                        f"(M, C, H, W) array); got {type(probs).__name__}")
    models = [probs[i] for i in range(len(probs))]
    if not models:
        raise InputError("probs must hold at least one model's probabilities; got an empty "
                         "sequence")
    return models


def _check_models(arrays: list) -> tuple[tuple, np.dtype]:
    first = arrays[0]
    for m, a in enumerate(arrays):
        if a.ndim not in (3, 4):
            raise InputError(f"probs[{m}] must be (C, H, W) or (N, C, H, W); got shape "
                             f"{tuple(a.shape)}")
        dt = np.dtype(a.dtype)
        _validate.fits_memory(f"probs[{m}]", a.shape, dt.itemsize)
        if dt not in PROB_DTYPES:
            raise InputTypeError(f"probs[{m}] has dtype {dt}; expected float16 or float32 "
                            "(cast with .astype(np.float32))")
        if m == 0:
            continue
        if dt != np.dtype(first.dtype):
            raise InputTypeError(f"probs[{m}] is {dt} but probs[0] is {np.dtype(first.dtype)}: all "
                            "models must share one dtype (cast with .astype)")
        if a.ndim != first.ndim:
            raise InputError(f"probs[{m}] has shape {tuple(a.shape)} but probs[0] has "
                             f"{tuple(first.shape)}: mix no batched and unbatched models")
        if a.shape[-3] != first.shape[-3]:
            raise InputError(f"probs[{m}] has {a.shape[-3]} classes but probs[0] has "
                             f"{first.shape[-3]}")
        if tuple(a.shape) != tuple(first.shape):
            raise InputError(f"probs[{m}] has shape {tuple(a.shape)} but probs[0] has "
                             f"{tuple(first.shape)}")
    if first.shape[-3] < 1:
        raise InputError(f"probs need at least one class; got shape {tuple(first.shape)}")
    label_dtype(first.shape[-3])  # raises above 65536 classes
    return tuple(first.shape), np.dtype(first.dtype)


def check_weights(weights: Any, m: int) -> np.ndarray:
    """The float32 factors (summing to 1) of `m` models' `weights`, or a clear error.

    Parameters
    ----------
    weights : sequence of m numbers >= 0 (at least one > 0), or None for equal weights
    m : int
        The number of models.

    Returns
    -------
    numpy.ndarray of float32, shape (m,)

    Examples
    --------
    >>> from segkit.ops.soft_vote import check_weights
    >>> check_weights([1, 3], 2)
    array([0.25, 0.75], dtype=float32)
    """
    if weights is None:
        return weight_factors(None, m)
    if isinstance(weights, (str, bytes)):
        raise InputTypeError(f"weights must be a sequence of numbers; got {weights!r}")
    try:
        w = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputTypeError(f"weights must be a sequence of numbers; got {weights!r}") from exc
    if w.ndim != 1:
        raise InputError(f"weights must be a 1-D sequence of {m} numbers; got shape {w.shape}")
    if len(w) == 0:
        raise InputError("weights is empty; give one weight per model")
    if len(w) != m:
        raise InputError(f"weights has {len(w)} values for {m} models; give one per model")
    for i, v in enumerate(w):
        if not np.isfinite(v):
            raise InputError(f"weights[{i}] is {v}; weights must be finite")
        if v < 0:
            raise InputError(f"weights[{i}] is {v}; weights must be >= 0")
    if not (w > 0).any():
        raise InputError("weights are all zero; at least one model needs a positive weight")
    factors = weight_factors(w, m)
    if not (factors > 0).any():  # pragma: no cover - impossible after the checks above
        raise InputError(f"weights {w.tolist()} leave no model with a positive float32 factor")
    return factors


def _raise_nan(arrays: list, keep: list[int], backend: str) -> None:
    for m in keep:
        a = arrays[m]
        isnan = a != a  # NumPy and CuPy alike
        if bool(isnan.any()):
            index = np.unravel_index(int(isnan.ravel().argmax()), a.shape)
            raise InputError(f"probs[{m}] contains NaN (first at index "
                             f"{tuple(int(i) for i in index)}); soft voting needs finite "
                             "probabilities")
    raise InputError("the weighted sum is NaN although no model holds a NaN: the "
                     "probabilities contain +inf and -inf")


# ---- backends --------------------------------------------------------------------------------
def _run_numpy(xs, factors, lab_dtype, want_probs):
    from ..reference.soft_vote import vote_with_factors

    labels, mean = vote_with_factors(xs, factors)
    nan = bool(np.isnan(mean).any())
    return labels, (mean if want_probs else None), nan


def _host_ready(x: np.ndarray, *, c_contiguous: bool) -> np.ndarray:
    """x itself when the kernel can read it, else a copy in its own dtype."""
    if x.size == 0:
        return x
    item = x.itemsize
    if c_contiguous:
        return x if x.flags.c_contiguous else np.ascontiguousarray(x)
    ok = (min(x.strides) >= 0 and all(s % item == 0 for s in x.strides)
          and (x.shape[3] <= 1 or x.strides[3] == item)
          and x.ctypes.data % item == 0)
    return x if ok else np.ascontiguousarray(x)


def _run_numba(xs, factors, lab_dtype, want_probs):
    from numba.typed import List

    from .._numba.soft_vote import soft_vote as kernel

    n, c, h, w = xs[0].shape
    labels = np.empty((n, h, w), lab_dtype)
    mean = np.empty((n, c, h, w), np.float32) if want_probs else np.empty((0, 0, 0), np.float32)
    if labels.size == 0:
        return labels, (mean if want_probs else None), False
    as_kernel_type = np.uint16 if xs[0].dtype == np.float16 else np.float32
    arrays = List()
    for x in xs:
        arrays.append(_host_ready(x, c_contiguous=True).view(as_kernel_type).reshape(n, c, h * w))
    nan = kernel(arrays, np.ascontiguousarray(factors, np.float32), labels.reshape(n, h * w),
                 mean.reshape(n, c, h * w) if want_probs else mean, want_probs)
    return labels, (mean if want_probs else None), bool(nan)


def _run_cpp(xs, factors, lab_dtype, want_probs):
    from .. import _C

    n, c, h, w = xs[0].shape
    labels = np.empty((n, h, w), lab_dtype)
    mean = np.empty((n, c, h, w), np.float32) if want_probs else None
    if labels.size == 0:
        return labels, mean, False
    arrays = [_host_ready(x, c_contiguous=False) for x in xs]
    nan = _C.soft_vote(arrays, np.ascontiguousarray(factors, np.float32), labels, mean)
    return labels, mean, bool(nan)


def cuda_plan(arrays, factors, labels, mean, flag, ptr_of, to_device):
    """(kernel name, work items, arguments, dynamic shared bytes) of the CUDA soft vote of
    `arrays` (M (N, C, H, W) inputs, last axis contiguous, element-aligned strides) into
    `labels`, `mean` (or None) and the int32 NaN `flag`. `ptr_of(a)` gives an array's address
    and `to_device(numpy_array)` a device copy: CuPy's for the backend, NumPy's own for the
    host emulation in the tests."""
    from .._cuda import DTYPE_SUFFIX

    n, c, h, w = arrays[0].shape
    strides = np.array([[s // a.itemsize if d > 1 else 0 for s, d in zip(a.strides[:3], a.shape)]
                        for a in arrays], dtype=np.int64)
    uniform = bool((strides == strides[0]).all())
    in_suffix = "f16" if np.dtype(arrays[0].dtype) == np.float16 else "f32"
    lab_suffix = DTYPE_SUFFIX[np.dtype(labels.dtype)]
    m = len(arrays)
    # Vector path: every thread votes P neighbouring pixels with 16-byte loads.
    p = 8 if in_suffix == "f16" else 4
    vector = (uniform and w % p == 0 and not (strides[0] % p).any()
              and all(ptr_of(a) % (p * a.itemsize) == 0 for a in arrays))
    if vector:
        name = f"soft_vote_v{p}_{in_suffix}_{lab_suffix}"
        shared, d_strides, total = 12 * m, to_device(strides[0]), n * h * w // p
    else:
        name = f"soft_vote_{in_suffix}_{lab_suffix}"
        shared, d_strides, total = 36 * m, to_device(strides.reshape(-1)), n * h * w
    shared += -shared % 8
    ptrs = to_device(np.array([ptr_of(a) for a in arrays], dtype=np.uint64))
    d_weights = to_device(np.ascontiguousarray(factors, np.float32))
    args = (ptrs, d_strides, d_weights, np.int32(m), np.int64(n), np.int32(c), np.int32(h),
            np.int32(w)) + (() if vector else (np.int32(uniform),)) + (
            labels, mean if mean is not None else np.uint64(0), flag)
    return name, total, args, shared


def _run_cuda(xs, factors, lab_dtype, want_probs):
    import cupy

    from .. import _cuda

    n, c, h, w = xs[0].shape
    labels = cupy.empty((n, h, w), lab_dtype)
    mean = cupy.empty((n, c, h, w), cupy.float32) if want_probs else None
    if labels.size == 0:
        return labels, mean, False
    arrays = []
    for x in xs:
        item = x.itemsize
        if (min(x.strides) < 0 or any(s % item for s in x.strides)
                or (w > 1 and x.strides[3] != item) or x.data.ptr % item):
            x = cupy.ascontiguousarray(x)
        arrays.append(x)
    flag = cupy.zeros(1, cupy.int32)
    name, total, args, shared = cuda_plan(arrays, factors, labels, mean, flag,
                                          lambda a: a.data.ptr, cupy.asarray)
    # on op_stream's stream, like the copies and allocations above
    _cuda.launch(_cuda.get_kernel("soft_vote", name), total, args, shared_mem=shared)
    nan = bool(flag.get()[0])  # also keeps ptrs/strides alive until the kernel ran
    return labels, mean, nan


#: The backends of soft_vote and its runner on each: the kept models (N, C, H, W), their
#: float32 factors, the label dtype and whether the mean is wanted in; (labels, mean or None,
#: whether a sum is NaN) out.
OP = _backend.register("soft_vote", {"numpy": _run_numpy, "numba": _run_numba,
                                     "cpp": _run_cpp, "cuda": _run_cuda})
