"""Which backends exist, which each op has, and which one a call runs on.

Four backends exist: ``numpy`` (the reference: slow, obviously right), ``numba``, ``cpp`` (the
compiled extension, segkit._C) and ``cuda`` (CuPy, compiled at run time). Not every op has all
four: :data:`OP_BACKENDS` is the one table of which op has which (``segkit info``, the ops
that take a subset, the tests and the README's table read it). ``backend="auto"`` picks
``cuda`` for GPU arrays (CuPy arrays, torch CUDA tensors) and the fastest available CPU backend
the op has otherwise. Asking for a backend that is not available raises
:class:`BackendUnavailableError` with the reason; nothing falls back silently.
"""
from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .errors import InputError, UnavailableError
from . import _config

BACKENDS = ("numpy", "numba", "cpp", "cuda")

#: The backends of each public op (``backend=`` takes these and "auto"). The trainable ConvCRF
#: (``segkit.torch.conv_crf`` / ``ConvCRF(trainable=True)``) picks its kernels from the tensors'
#: device; its NumPy reference (``segkit.reference.convcrf_grad``) is for the tests only.
OP_BACKENDS: dict[str, tuple[str, ...]] = {
    "mode_filter": BACKENDS,
    "convcrf": BACKENDS,
    "soft_vote": BACKENDS,
    "confusion_matrix": BACKENDS,
    "label_issues": BACKENDS,
    "label_quality": BACKENDS,
    "vote_confusion": ("numpy", "numba"),
    "settled_pixels": ("numpy", "numba"),
    "conv_crf (trainable)": ("cpp", "cuda"),
}
#: What the table alone does not say.
OP_NOTES: dict[str, str] = {
    "conv_crf (trainable)": "cuda: its kernels are tested on the CPU in emulation only "
                            "(tests/cuda_emu.py), not yet on a GPU",
    "vote_confusion": "the tuning search's kernel; no C++ or CUDA kernel",
    "settled_pixels": "the tuning search's pre-pass; no C++ or CUDA kernel",
}


def backends_table() -> str:
    """:data:`OP_BACKENDS` as the Markdown table the README shows (a test keeps them equal)."""
    rows = ["| op | " + " | ".join(BACKENDS) + " | note |",
            "|---|" + ":---:|" * len(BACKENDS) + "---|"]
    for op, have in OP_BACKENDS.items():
        marks = " | ".join("yes" if b in have else "-" for b in BACKENDS)
        rows.append(f"| `{op}` | {marks} | {OP_NOTES.get(op, '')} |")
    return "\n".join(rows)


class BackendUnavailableError(UnavailableError):
    """A backend was asked for by name but cannot run here (the message says why)."""


@dataclass(frozen=True)
class BackendInfo:
    name: str
    available: bool
    reason: str  # why not, when not available
    detail: str = ""  # version, SIMD path, device name when available

    def __str__(self) -> str:
        state = "yes" if self.available else "no"
        text = self.detail if self.available else self.reason
        return f"{self.name:6s} {state:3s} {text}"


def _probe_numpy() -> BackendInfo:
    return BackendInfo("numpy", True, "", f"numpy {np.__version__} (reference)")


def _probe_numba() -> BackendInfo:
    try:
        numba = importlib.import_module("numba")
    except Exception as exc:  # noqa: BLE001 - any import failure makes it unavailable
        return BackendInfo("numba", False, f"numba cannot be imported: {exc}")
    return BackendInfo("numba", True, "", f"numba {numba.__version__}, "
                       f"{numba.config.NUMBA_NUM_THREADS} threads")


def _probe_cpp() -> BackendInfo:
    try:
        from . import _C
    except ImportError as exc:
        return BackendInfo("cpp", False, "the C++ extension segkit._C is not built or does not "
                           f"load ({exc}); run 'make' or 'pip install -e .'")
    info = _C.build_info()
    openmp = f"OpenMP {info['openmp']}" if info["openmp"] else "no OpenMP"
    return BackendInfo("cpp", True, "", f"{info['compiler']}, {openmp}, SIMD "
                       f"{info['simd_active']} (best {info['simd_best']}"
                       f"{simd_report(info['simd_table'])}), {info['threads']} threads")


def simd_report(table: list[dict]) -> str:
    """What the CPU lacks of each instruction set it cannot run, from the extension's table of
    instruction sets (``_C.build_info()["simd_table"]``): ``"; avx512 lacks avx512f, ..."``."""
    parts = []
    for row in table:
        missing = [name for name, present in row["features"].items() if not present]
        if missing:
            parts.append(f"{row['name']} lacks {', '.join(missing)}")
    return "".join(f"; {p}" for p in parts)


def _probe_cuda() -> BackendInfo:
    from . import _cuda

    if _cuda.source_root() is None:
        return BackendInfo("cuda", False, "the CUDA sources (csrc/cuda) are not in the install")
    try:
        cupy = importlib.import_module("cupy")
    except Exception as exc:  # noqa: BLE001
        return BackendInfo("cuda", False, "CuPy is not installed or does not import "
                           f"({type(exc).__name__}: {exc}); pip install 'segkit[cuda]'")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 - CUDARuntimeError without a driver
        return BackendInfo("cuda", False, f"no usable CUDA GPU ({type(exc).__name__}: {exc})")
    if count < 1:
        return BackendInfo("cuda", False, "no CUDA GPU found")
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return BackendInfo("cuda", True, "", f"CuPy {cupy.__version__}, {count} GPU(s), {name}")


_PROBES: dict[str, Callable[[], BackendInfo]] = {
    "numpy": _probe_numpy, "numba": _probe_numba, "cpp": _probe_cpp, "cuda": _probe_cuda,
}


@functools.lru_cache(maxsize=None)
def backend_info(name: str) -> BackendInfo:
    """Availability of one backend (probed once, then cached)."""
    return _PROBES[name]()


def backends() -> dict[str, BackendInfo]:
    """Every backend with whether it is available here and, if not, why.

    >>> import segkit
    >>> segkit.backends()["numpy"].available
    True
    """
    return {name: backend_info(name) for name in BACKENDS}


def is_device_array(x: Any) -> bool:
    """True for arrays that live on a GPU (CuPy arrays, torch CUDA tensors, anything with
    ``__cuda_array_interface__``)."""
    if hasattr(x, "__cuda_array_interface__"):
        return True
    return type(x).__module__.startswith("torch") and bool(getattr(x, "is_cuda", False))


def resolve(backend: str, *arrays: Any, among: tuple[str, ...] = BACKENDS) -> str:
    """The backend a call with these arrays runs on, or a clear error.

    ``"auto"`` gives ``"cuda"`` when any array is on a GPU and the first available of
    ``_config.CPU_PREFERENCE`` otherwise. A named backend must be available; CPU backends
    refuse GPU arrays (copy them to the host first), the CUDA backend accepts host arrays
    (copied to the GPU and back). ``among``: the backends an op has (an op without a C++ or
    CUDA kernel names the ones it has; "auto" picks among them, a name outside them is refused).
    """
    if not isinstance(backend, str) or backend not in ("auto",) + tuple(among):
        raise InputError(f"backend must be one of 'auto', {', '.join(map(repr, among))}; "
                         f"got {backend!r}")
    on_device = any(is_device_array(a) for a in arrays)
    if backend == "auto":
        if on_device and "cuda" in among:
            backend = "cuda"
        elif on_device:
            raise InputError(f"this op runs on the host only ({', '.join(among)}) but the input "
                             "is on a GPU; copy it to the host first")
        else:
            return next(n for n in _config.CPU_PREFERENCE + ("numpy",)
                        if n in among and backend_info(n).available)
    info = backend_info(backend)
    if not info.available:
        raise BackendUnavailableError(f"backend={backend!r} is not available: {info.reason}")
    if on_device and backend != "cuda":
        raise InputError(f"backend={backend!r} runs on the CPU but the input is on a GPU; use "
                         "backend='cuda' or 'auto', or copy the input to the host first")
    return backend


def set_num_threads(n: int) -> None:
    """Threads for the CPU kernels (the C++ extension's OpenMP and Numba). ``0`` restores the
    default (all cores). Dataset jobs set 1 per worker process."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise InputError(f"n must be a non-negative integer, got {n!r}")
    if backend_info("cpp").available:
        from . import _C
        _C.set_num_threads(int(n))
    if backend_info("numba").available:
        import numba
        numba.set_num_threads(int(n) if n else numba.config.NUMBA_NUM_THREADS)


def get_num_threads() -> int:
    """Threads the CPU kernels use (as set by :func:`set_num_threads`)."""
    if backend_info("cpp").available:
        from . import _C
        return _C.get_num_threads()
    import os
    return os.cpu_count() or 1
