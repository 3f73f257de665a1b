"""``segkit.mode_filter``: the mode (majority) filter for label masks."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _backend, _validate

ANCHORS = ("center", "topleft")
TIES = ("keep", "smallest", "first")


@dataclass(frozen=True)
class ModeParams:
    """The validated settings of a mode filter call (see :func:`mode_params`)."""

    size: int = 3
    anchor: str = "center"
    ties: str = "keep"
    ignore_index: int | None = None

    def codes(self) -> tuple:
        """(size, anchor code, ties code, ignore_index): what every backend's runner takes."""
        return (self.size, ANCHORS.index(self.anchor), TIES.index(self.ties), self.ignore_index)


def mode_params(size: int = 3, *, anchor: str = "center", ties: str = "keep",
                ignore_index: int | None = None, dtype: Any = None) -> ModeParams:
    """Check the settings of :func:`mode_filter` without running it (errors name the argument
    and the bad value), as dataset jobs do before touching a file.

    `dtype` (the labels' dtype), when given, also checks that it can hold `ignore_index`;
    without it `ignore_index` need only be an integer.

    >>> from segkit.ops.mode_filter import mode_params
    >>> mode_params(5, ties="first")
    ModeParams(size=5, anchor='center', ties='first', ignore_index=None)
    >>> mode_params(4)
    Traceback (most recent call last):
    ...
    segkit.errors.InputError: size must be odd; got 4
    """
    size = _validate.integer("size", size, minimum=1, odd=True)
    _validate.choice("anchor", anchor, ANCHORS)
    _validate.choice("ties", ties, TIES)
    if dtype is None:
        ignore_index = None if ignore_index is None else _validate.integer("ignore_index",
                                                                           ignore_index)
    else:
        ignore_index = _validate.ignore_index(ignore_index, np.dtype(dtype))
    return ModeParams(size, anchor, ties, ignore_index)


def mode_filter(labels: Any, size: int = 3, *, anchor: str = "center", ties: str = "keep",
                ignore_index: int | None = None, backend: str = "auto"):
    """Replace every label by the most frequent label in its window.

    Parameters
    ----------
    labels : array of int, shape (H, W) or (N, H, W)
        Label masks: uint8, uint16, int32 or int64 (int8, int16 and uint32 are accepted and
        widened internally). NumPy arrays (any strides), CuPy arrays and torch tensors.
    size : odd int, default 3
        Window side. 3 is the fast path of every backend; any odd size works.
    anchor : {"center", "topleft"}
        ``"center"``: the window is centred on the pixel and clipped at the image border (only
        in-image pixels vote). ``"topleft"``: pixel (r, c) takes the mode of the window whose
        top-left corner is ``(min(r, H-size), min(c, W-size))`` (clipped when the image is
        smaller than the window), which reproduces the original recipe's loop bit for bit.
    ties : {"keep", "smallest", "first"}
        Which label wins when several are equally frequent. ``"keep"``: the pixel's own label
        if it is among them, else the smallest; ``"smallest"``: the smallest (equal to
        ``skimage.filters.rank.modal`` with a square footprint; PIL's ``ModeFilter`` differs by
        also keeping pixels whose top count is 2 or less); ``"first"``: the first in row-major
        order inside the window (the original recipe).
    ignore_index : int, optional
        Pixels with this label neither vote nor change. A pixel whose window has no voter keeps
        its label.
    backend : {"auto", "numpy", "numba", "cpp", "cuda"}
        ``"auto"`` takes ``"cuda"`` for GPU arrays and the fastest CPU backend otherwise. A named
        backend that is not available raises :class:`segkit.BackendUnavailableError`.

    Returns
    -------
    array of the input's shape and dtype
        A NumPy array for host input; for GPU input an array of the same kind (CuPy array or
        torch CUDA tensor) on the same device. The input is never modified.

    Examples
    --------
    >>> import numpy as np, segkit
    >>> m = np.array([[1, 1, 2],
    ...               [1, 7, 2],
    ...               [1, 2, 2]], dtype=np.uint8)
    >>> segkit.mode_filter(m, backend="numpy")
    array([[1, 1, 2],
           [1, 1, 2],
           [1, 2, 2]], dtype=uint8)
    """
    with OP.call(backend, labels) as call:  # resolve; on CUDA the caller's stream
        arr = call.array(labels)
        _validate.label_ndim("labels", arr.shape)
        run_dtype = _validate.label_dtype("labels", arr.dtype)
        params = mode_params(size, anchor=anchor, ties=ties, ignore_index=ignore_index,
                             dtype=arr.dtype)
        in_dtype = np.dtype(arr.dtype)
        x = arr if arr.ndim == 3 else arr[None]
        if run_dtype != in_dtype:
            x = x.astype(run_dtype)
        out = call.runner(x, *params.codes())
        if run_dtype != in_dtype:
            out = out.astype(in_dtype)
        return call.back(out if arr.ndim == 3 else out[0])


def _run_numpy(x, size, anchor, ties, ignore_index):
    from ..reference.mode_filter import mode_filter as ref

    return ref(x, size, anchor=ANCHORS[anchor], ties=TIES[ties], ignore_index=ignore_index)


def _run_numba(x, size, anchor, ties, ignore_index):
    from .._numba.mode_filter import mode_filter as kernel

    out = np.empty(x.shape, x.dtype)
    if x.size:
        kernel(x, out, size, anchor, ties, ignore_index is not None, ignore_index or 0,
               np.iinfo(x.dtype).max)
    return out


def _run_cpp(x, size, anchor, ties, ignore_index):
    from .. import _C

    if x.size and (x.strides[-1] != x.itemsize or min(x.strides) < 0):
        x = np.ascontiguousarray(x)
    out = np.empty(x.shape, x.dtype)
    _C.mode_filter(x, out, size, anchor, ties, ignore_index)
    return out


def cuda_launch(x, out, size, anchor, ties, ignore_index):
    """(kernel name, work items, arguments) of the CUDA mode filter of (N, H, W) `x` into
    C-contiguous `out` (CuPy arrays; the host emulation in the tests passes NumPy ones)."""
    item = x.itemsize
    n, h, w = x.shape
    args = (x, out, np.int64(n), np.int32(h), np.int32(w), np.int64(x.strides[0] // item),
            np.int64(x.strides[1] // item), np.int32(size), np.int32(anchor), np.int32(ties),
            np.int32(ignore_index is not None), np.int64(ignore_index or 0))
    from .._cuda import DTYPE_SUFFIX

    return f"mode_filter_{DTYPE_SUFFIX[np.dtype(x.dtype)]}", n * h * w, args


def _run_cuda(x, size, anchor, ties, ignore_index):
    import cupy

    from .. import _cuda

    item = x.itemsize
    if x.size and (x.strides[-1] != item or min(x.strides) < 0 or x.strides[0] % item
                   or x.strides[1] % item):
        x = cupy.ascontiguousarray(x)
    out = cupy.empty(x.shape, x.dtype)
    name, total, args = cuda_launch(x, out, size, anchor, ties, ignore_index)
    _cuda.launch(_cuda.get_kernel("mode_filter", name), total, args)  # op_stream's stream
    return out


#: The backends of mode_filter and its runner on each: (N, H, W) labels of a kernel dtype and
#: the settings' codes (:meth:`ModeParams.codes`) in, the filtered labels out.
OP = _backend.register("mode_filter", {"numpy": _run_numpy, "numba": _run_numba,
                                       "cpp": _run_cpp, "cuda": _run_cuda})
