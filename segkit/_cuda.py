"""CUDA plumbing: kernel sources kept in files (csrc/cuda/<op>.cu plus the shared headers in
csrc/common), compiled by CuPy (NVRTC) once per device and memoised.

Sources are found inside the package (``segkit/_csrc``, copied there when a wheel is built)
or, for an editable install, in the checkout's ``csrc/``. Local ``#include "common/..."``
lines are inlined before compiling so that CuPy's on-disk cache key covers the headers too.
"""
from __future__ import annotations

import contextlib
import functools
import math
import re
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from . import _config

_CANDIDATES = (Path(__file__).resolve().parent / "_csrc",
               Path(__file__).resolve().parent.parent / "csrc")
_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$', re.MULTILINE)

#: Kernel-name suffix of each label/score dtype the CUDA sources instantiate.
DTYPE_SUFFIX = {np.dtype(np.uint8): "u8", np.dtype(np.uint16): "u16",
                np.dtype(np.int32): "i32", np.dtype(np.int64): "i64",
                np.dtype(np.float16): "f16", np.dtype(np.float32): "f32"}


def source_root() -> Path | None:
    """Directory holding ``common/`` and ``cuda/``, or None if the install lacks them."""
    for root in _CANDIDATES:
        if (root / "cuda").is_dir() and (root / "common").is_dir():
            return root
    return None


def cuda_sources() -> list[Path]:
    """Every ``.cu`` file segkit ships (sorted)."""
    root = source_root()
    return sorted((root / "cuda").glob("*.cu")) if root else []


def load_source(op: str) -> str:
    """The full source of ``cuda/<op>.cu`` with its local includes inlined (each once)."""
    root = source_root()
    if root is None:
        raise FileNotFoundError("segkit's CUDA sources (csrc/cuda, csrc/common) are missing")
    seen: set[Path] = set()

    def expand(path: Path) -> str:
        def include(match: re.Match) -> str:
            name = match.group(1)
            for base in (path.parent, root):
                target = (base / name).resolve()
                if target.is_file():
                    break
            else:
                raise FileNotFoundError(f"{path.name}: cannot find included file {name!r}")
            if target in seen:
                return f"// (already included: {name})"
            seen.add(target)
            return f"// ---- begin {name} ----\n{expand(target)}\n// ---- end {name} ----"

        text = path.read_text()
        text = re.sub(r"^\s*#\s*pragma\s+once\s*$", "", text, flags=re.MULTILINE)
        return _INCLUDE.sub(include, text)

    src = root / "cuda" / f"{op}.cu"
    if not src.is_file():
        raise FileNotFoundError(f"no CUDA source for op {op!r} ({src})")
    seen.add(src.resolve())
    return expand(src)


@functools.lru_cache(maxsize=None)
def _module(op: str, device_id: int):
    import cupy

    with cupy.cuda.Device(device_id):
        return cupy.RawModule(code=load_source(op), options=_config.NVRTC_OPTIONS)


def get_kernel(op: str, name: str):
    """Kernel `name` from ``cuda/<op>.cu``, compiled for the current device (memoised)."""
    import cupy

    return _module(op, cupy.cuda.Device().id).get_function(name)


def as_cupy(x: Any) -> tuple[Any, Callable[[Any], Any]]:
    """A CuPy view of `x` (no copy for CuPy arrays and torch CUDA tensors; host arrays are
    uploaded) and a function that turns a CuPy result back into `x`'s kind: a torch tensor
    for torch input, a NumPy array for host input, CuPy otherwise."""
    import cupy

    if type(x).__module__.startswith("torch"):
        import torch

        if x.is_cuda:
            return cupy.asarray(x), torch.from_dlpack
        return cupy.asarray(x.numpy()), lambda y: torch.from_numpy(cupy.asnumpy(y))
    if isinstance(x, cupy.ndarray):
        return x, lambda y: y
    if hasattr(x, "__cuda_array_interface__"):
        return cupy.asarray(x), lambda y: y
    return cupy.asarray(np.asarray(x)), cupy.asnumpy


def _torch_cuda(xs: tuple) -> Any:
    """The first torch CUDA tensor among `xs`, or None."""
    for x in xs:
        if type(x).__module__.startswith("torch") and getattr(x, "is_cuda", False):
            return x
    return None


@contextlib.contextmanager
def op_stream(*inputs: Any) -> Iterator[Any]:
    """The stream rule of every CUDA runner: the whole op (uploads, allocations, copies,
    launches, reading results back, the conversion to the caller's kind) runs inside this
    block, on one stream, which it yields.

    - A torch CUDA tensor among `inputs` (the first one decides): torch's current stream of
      that tensor's device, made CuPy's current stream (and that device CuPy's current device)
      for the block, so the op is ordered after whatever torch queued before it, also under
      ``torch.cuda.stream(side)``, and torch's later work is ordered after the op.
    - Otherwise (CuPy arrays, host arrays): CuPy's current stream, unchanged.

    >>> from segkit import _cuda
    >>> with _cuda.op_stream(x) as stream:  # doctest: +SKIP
    ...     out = cupy.empty_like(x); _cuda.launch(kernel, n, (x, out))
    """
    import cupy

    tensor = _torch_cuda(inputs)
    if tensor is None:
        yield cupy.cuda.get_current_stream()
        return
    import torch

    device = tensor.device.index
    stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(tensor.device).cuda_stream,
                                      device)
    with cupy.cuda.Device(device), stream:
        yield stream


def launch(kernel, total: int, args: tuple, stream=None, block: int | None = None,
           shared_mem: int = 0) -> None:
    """Launch a grid-stride kernel over `total` work items, on CuPy's current stream (the one
    :func:`op_stream` set) unless `stream` is given."""
    if total <= 0:
        return
    block = block or _config.CUDA_BLOCK
    grid = max(1, min(math.ceil(total / block), _config.CUDA_MAX_BLOCKS))
    kernel((grid,), (block,), args, shared_mem=shared_mem, stream=stream)
