"""Which backends exist, which each op has, and which one a call runs on.

Four backends exist: ``numpy`` (the reference: slow, obviously right), ``numba``, ``cpp`` (the
compiled extension, segkit._C) and ``cuda`` (CuPy, compiled at run time). Not every op has all
four: :data:`OPS` is the one table of which op has which, with its runner on each (an op
declares its row with :func:`register` in its module; ``segkit info``, ``backend=``, the
tests' parametrisation and the README's table read it, :data:`OP_BACKENDS` is its column of
names). ``backend="auto"`` picks ``cuda`` for GPU arrays (CuPy arrays, torch CUDA tensors) and
the fastest available CPU backend the op has otherwise. Asking for a backend that is not
available raises :class:`BackendUnavailableError` with the reason; nothing falls back
silently.

Every op runs a call the same way (:meth:`Op.call`, as scikit-image's rank filters share one
wrapper): resolve the backend among the op's own, run the whole call on the CUDA stream of
:func:`segkit._cuda.op_stream` when it is ``cuda``, convert the inputs to the backend's arrays
and the result back to the caller's kind.
"""
from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from .errors import InputError, UnavailableError
from . import _config

BACKENDS = ("numpy", "numba", "cpp", "cuda")


# ---- the one table: each op, its runner on each backend it has -----------------------------
@dataclass(frozen=True, eq=False)
class Op:
    """One row of :data:`OPS`: an op's name, its runner on each backend it has, and what the
    row alone does not say (`note`).

    A runner is what the op calls once the backend is resolved, on inputs the op has checked
    and converted (NumPy arrays for the CPU backends, CuPy arrays for ``cuda``): a function,
    or for an op that runs in stages (``label_issues``) a record of stage functions of one
    shape on every backend. Build rows with :func:`register`."""

    name: str
    runners: Mapping[str, Any]
    note: str = ""
    backends: tuple[str, ...] = field(init=False)
    #: The calls on the CPU backends: they hold no state (no stream, no conversion back), so
    #: :meth:`call` hands the same one out again (thread-safe).
    _host_calls: dict[str, "Call"] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "backends", tuple(b for b in BACKENDS if b in self.runners))

    def resolve(self, backend: str, *arrays: Any) -> str:
        """:func:`resolve` among this op's backends."""
        return resolve(backend, *arrays, among=self.backends)

    def call(self, backend: str, *arrays: Any) -> "Call":
        """One call of the op (``with op.call(backend, *arrays) as call: ...``): the backend
        resolved for `arrays` (the inputs that decide it: a GPU array among them means CUDA)."""
        name = resolve(backend, *arrays, among=self.backends)
        runner = self.runners[name]
        if name == "cuda":
            return Call(name, runner, arrays)
        call = self._host_calls.get(name)  # nothing to hold on the host: one stateless call
        if call is None or call.runner is not runner:
            call = self._host_calls[name] = Call(name, runner, ())
        return call


class Call:
    """One call of an op on its resolved backend, used as a context manager.

    - ``call.backend``: the backend's name; ``call.runner``: the op's runner on it.
    - The block runs on one CUDA stream when the backend is ``cuda``
      (:func:`segkit._cuda.op_stream` of the arrays given to :meth:`Op.call`: torch's current
      stream when one is a torch CUDA tensor, CuPy's otherwise); on the CPU backends entering
      it does nothing, and an op without a ``cuda`` runner may skip the ``with``.
    - :meth:`array` converts an input to the backend's array (NumPy for the CPU backends, a
      CuPy view or upload for ``cuda``); :meth:`back` converts a result to the kind of the
      first input converted (CuPy, torch, or NumPy for host input).

    >>> import numpy as np
    >>> from segkit import _backend
    >>> op = _backend.Op("double", {"numpy": lambda x: 2 * x})
    >>> with op.call("auto", [1, 2]) as call:
    ...     call.back(call.runner(call.array([1, 2])))
    array([2, 4])
    """

    __slots__ = ("backend", "runner", "_arrays", "_stream", "_back")

    def __init__(self, backend: str, runner: Any, arrays: tuple) -> None:
        self.backend, self.runner, self._arrays = backend, runner, arrays
        self._stream = self._back = None

    def __enter__(self) -> "Call":
        if self.backend == "cuda":
            from ._cuda import op_stream

            self._stream = op_stream(*self._arrays)
            self._stream.__enter__()
        return self

    def __exit__(self, *exc: Any) -> bool:
        if self._stream is None:  # the CPU backends (their calls are shared: nothing written)
            return False
        stream, self._stream = self._stream, None
        return bool(stream.__exit__(*exc))

    def array(self, x: Any) -> Any:
        """`x` as the backend's array: for ``cuda`` a CuPy view (CuPy arrays, torch CUDA
        tensors) or upload (host arrays); for the CPU backends ``numpy.asarray`` (torch CPU
        tensors without their autograd history). The first input converted sets the kind
        :meth:`back` returns."""
        if self.backend != "cuda":  # host results stay NumPy: nothing to convert back
            if type(x) is np.ndarray:
                return x
            if type(x).__module__.startswith("torch") and hasattr(x, "detach"):
                x = x.detach()
            return np.asarray(x)
        from ._cuda import as_cupy

        arr, back = as_cupy(x)
        if self._back is None:
            self._back = back
        return arr

    def back(self, out: Any) -> Any:
        """A result in the caller's kind (that of the first input :meth:`array` converted):
        CuPy stays CuPy, torch CUDA tensors get torch tensors, host inputs get NumPy."""
        return out if self._back is None else self._back(out)


#: The one table of ops: name -> :class:`Op`, in the order ``segkit info`` and the README show
#: (the order ``segkit.ops`` imports the op modules in, each registering its row).
OPS: dict[str, Op] = {}


def register(name: str, runners: Mapping[str, Any], note: str = "") -> Op:
    """Declare op `name`'s row of :data:`OPS`: its runner on each backend it has (keys among
    :data:`BACKENDS`; the row holds this mapping itself, so rows of ops that run the same
    runners share it) and a note for what the row does not say; returns the :class:`Op`."""
    unknown = [b for b in runners if b not in BACKENDS]
    if unknown or not runners:
        raise InputError(f"op {name!r}: runners must be keyed by backends among {BACKENDS}; "
                         f"got {list(runners)}")
    op = Op(name, runners, note)
    OPS[name] = op
    return op


class _Column(Mapping):
    """A read-only column of :data:`OPS` (op name -> one attribute of its row)."""

    def __init__(self, attr: str) -> None:
        self._attr = attr

    def __getitem__(self, name: str) -> Any:
        return getattr(OPS[name], self._attr)

    def __iter__(self) -> Iterator[str]:
        return iter(OPS)

    def __len__(self) -> int:
        return len(OPS)

    def __repr__(self) -> str:
        return repr(dict(self.items()))


#: The backends of each public op (``backend=`` takes these and "auto"): the names column of
#: :data:`OPS`. The trainable ConvCRF (``segkit.torch.conv_crf`` / ``ConvCRF(trainable=True)``)
#: picks its kernels from the tensors' device; its NumPy reference
#: (``segkit.reference.convcrf_grad``) is for the tests only.
OP_BACKENDS: Mapping[str, tuple[str, ...]] = _Column("backends")


def backends_table() -> str:
    """:data:`OPS` as the Markdown table the README shows (a test keeps them equal)."""
    rows = ["| op | " + " | ".join(BACKENDS) + " | note |",
            "|---|" + ":---:|" * len(BACKENDS) + "---|"]
    for op in OPS.values():
        marks = " | ".join("yes" if b in op.backends else "-" for b in BACKENDS)
        rows.append(f"| `{op.name}` | {marks} | {op.note} |")
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
    if not isinstance(backend, str) or (backend != "auto" and backend not in among):
        raise InputError(f"backend must be one of 'auto', {', '.join(map(repr, among))}; "
                         f"got {backend!r}")
    on_device = False
    for a in arrays:
        if type(a) is not np.ndarray and is_device_array(a):
            on_device = True
            break
    if backend == "auto":
        if on_device and "cuda" in among:
            backend = "cuda"
        elif on_device:
            raise InputError(f"this op runs on the host only ({', '.join(among)}) but the input "
                             "is on a GPU; copy it to the host first")
        else:
            for name in _config.CPU_PREFERENCE + ("numpy",):
                if name in among and backend_info(name).available:
                    return name
            raise BackendUnavailableError(
                f"none of this op's CPU backends ({', '.join(among)}) is available here: "
                + "; ".join(f"{n}: {backend_info(n).reason}" for n in among if n != "cuda"))
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
