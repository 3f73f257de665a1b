"""Argument checks shared by the ops: every message names the argument and the bad value."""
from __future__ import annotations

import math
import os
from typing import Any, Sequence

import numpy as np
from .errors import InputError, InputTypeError


#: Label dtypes every backend handles natively.
LABEL_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.int32), np.dtype(np.int64))
#: Integer dtypes accepted by widening to a native one (and narrowing the result back).
LABEL_WIDEN = {np.dtype(np.int8): np.dtype(np.int32), np.dtype(np.int16): np.dtype(np.int32),
               np.dtype(np.uint32): np.dtype(np.int64)}


def choice(name: str, value: Any, options: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in options:
        raise InputError(f"{name} must be one of {', '.join(map(repr, options))}; got {value!r}")
    return value


def integer(name: str, value: Any, *, minimum: int | None = None, odd: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputTypeError(f"{name} must be an integer; got {value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise InputError(f"{name} must be >= {minimum}; got {value}")
    if odd and value % 2 == 0:
        raise InputError(f"{name} must be odd; got {value}")
    return value


def label_dtype(name: str, dtype: Any) -> np.dtype:
    """The native dtype a label array of `dtype` runs in; raises for non-integer dtypes."""
    dtype = np.dtype(dtype)
    if dtype in LABEL_DTYPES:
        return dtype
    if dtype in LABEL_WIDEN:
        return LABEL_WIDEN[dtype]
    kind = "bool" if dtype == np.bool_ else str(dtype)
    raise InputTypeError(f"{name} must be an integer label array (uint8, uint16, int32 or int64; "
                    f"int8, int16 and uint32 are widened); got dtype {kind}")


def label_ndim(name: str, shape: tuple) -> None:
    if len(shape) not in (2, 3):
        raise InputError(f"{name} must be 2-D (H, W) or 3-D (N, H, W); got shape {tuple(shape)}")
    fits_memory(name, shape)


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX: no check
        return None


def fits_memory(name: str, shape: tuple, itemsize: int = 1) -> None:
    """Refuse an array whose elements could never fit this machine's memory (a zero-stride
    view such as ``np.broadcast_to(0, (2**20, 2**20))``): every op writes at least one byte per
    input element, so it would fail (or be killed) after allocating. Raised before anything
    is allocated."""
    need = math.prod(int(s) for s in shape) * int(itemsize)
    have = _memory_bytes()
    if have is not None and need > have:
        raise InputError(f"{name} of shape {tuple(shape)} needs {need / 2**30:,.0f} GiB, more "
                         f"than this machine's memory ({have / 2**30:,.0f} GiB); process it "
                         "in pieces")


def ignore_index(value: Any, dtype: np.dtype, name: str = "ignore_index") -> int | None:
    """None, or an integer that the label dtype can hold."""
    if value is None:
        return None
    value = integer(name, value)
    info = np.iinfo(dtype)
    if not info.min <= value <= info.max:
        raise InputError(f"{name}={value} is out of range for {dtype} labels "
                         f"({info.min}..{info.max})")
    return value


def finite(name: str, values: np.ndarray, *, what: str = "probabilities") -> None:
    """Refuse NaN and +-inf in a floating-point array, naming the first bad index (row-major).
    Checked one slice of the first axis at a time, so the temporary stays small."""
    from .errors import InputError

    a = np.asarray(values)
    if a.size == 0 or a.dtype.kind != "f":
        return
    rows = a.reshape(a.shape[0], -1) if a.ndim > 1 else a.reshape(1, -1)
    for i in range(rows.shape[0]):
        ok = np.isfinite(rows[i])
        if not ok.all():
            j = int(np.argmin(ok))
            index = tuple(int(k) for k in np.unravel_index(i * rows.shape[1] + j, a.shape))
            raise InputError(f"{name} contains {rows[i][j]} (first at index {index}); "
                             f"{what} must be finite")
