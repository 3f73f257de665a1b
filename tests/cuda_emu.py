"""Run segkit's CUDA kernels on the host, without a GPU, and the CUDA runners that launch them.

Kernels: the exact source string CuPy compiles (`segkit._cuda.load_source`), compiled by g++
with CUDA's built-ins emulated, run block after block on exactly the grid and block shape of
the launch. Kernels of a source without `__syncthreads()` run their threads one after another
(then any order is a valid schedule); those of a source with it run every thread of a block at
once (one OS thread each), meeting at a real barrier, with real atomics. The launch is checked
as the hardware would, and against the block a kernel asks for: a kernel that needs one block
shape (a shared tile sized for it, a barrier pattern) says so with `__launch_bounds__(N)`, and
the emulation launches it only with blocks of exactly N threads (CUDA itself only refuses more);
then: a 1-D shape, at most 1024 threads per block, dynamic shared memory of
exactly `shared_mem` bytes (a write past it fails the launch), and every `__syncthreads()`
reached by every thread of the block (a divergent barrier fails the launch instead of
hanging). Static `__shared__` arrays become static variables: they keep their values from one
block to the next, which a kernel must not rely on (it does not on a GPU either). This checks a kernel's logic (indexing, grid-stride loops, block-strided shared
memory loops, tie rules, argument order); a GPU run is still needed for the rest.

Runners: :func:`emulated_gpu` (used by the `emulated_gpu` fixture of the tests) puts a small
stand-in for CuPy in ``sys.modules["cupy"]``: device arrays are NumPy arrays of a subclass
(host memory stands in for device memory, pointers are real host addresses), ``RawModule``
compiles its `code` with :class:`HostKernels`, streams are objects with a ``ptr``, and every
allocation, device-to-host copy and launch is logged with the stream that was current (or
given). :class:`TorchCudaTensor` stands in for a torch CUDA tensor (``is_cuda``, ``device``,
``__cuda_array_interface__``), and torch's current stream is replaced by one the test sets
(:meth:`EmulatedGpu.torch_stream`, the emulation's ``torch.cuda.stream(side)``). The ops then
run their real code (backend probe, `segkit._cuda.op_stream`, `as_cupy`, runners, kernel
lookup, launches); only the two libraries are stand-ins.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import re
import shutil
import subprocess
import sys
import threading
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segkit import _cuda

PRELUDE = r"""
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstring>
#include <mutex>
#include <type_traits>
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static
// the block a kernel asks for, kept where Python can read it: the section of its symbol
#define SEGKIT_EMU_STR(x) #x
#define SEGKIT_EMU_SECTION(x) SEGKIT_EMU_STR(x)
#define __launch_bounds__(threads, ...) \
  __attribute__((section("segkit_block_" SEGKIT_EMU_SECTION(threads))))
struct SegkitDim3 { unsigned x = 0, y = 0, z = 0; };
static thread_local SegkitDim3 blockIdx, blockDim, gridDim, threadIdx;
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
static inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
// the IEEE single operations CUDA never contracts (built with -ffp-contract=off here)
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
// atomics: real ones, the threads of a block run at once
template <typename T, typename F> static inline T emu_atomic(T* p, F f) {
  T old, desired;
  __atomic_load(p, &old, __ATOMIC_SEQ_CST);
  do { desired = f(old); } while (!__atomic_compare_exchange(p, &old, &desired, false,
                                                             __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
  return old;
}
template <typename T> static inline T atomicAdd(T* p, T v) {
  return emu_atomic(p, [v](T o) { return static_cast<T>(o + v); });
}
static inline int atomicOr(int* p, int v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }
static inline int atomicMax(int* p, int v) { return emu_atomic(p, [v](int o) { return v > o ? v : o; }); }
// one block at a time: its threads, its barrier, its dynamic shared memory
static std::mutex emu_mu;
static std::condition_variable emu_cv;
static unsigned emu_expected = 1, emu_arrived = 0, emu_done = 0, emu_generation = 0;
static int emu_concurrent = 0, emu_failure = 0;
static void* emu_dynamic_shared = nullptr;
static inline void emu_release() { emu_arrived = 0; ++emu_generation; emu_cv.notify_all(); }
static inline void __syncthreads() {
  std::unique_lock<std::mutex> lock(emu_mu);
  if (!emu_concurrent) { emu_failure = 3; return; }
  if (emu_failure) return;
  const unsigned gen = emu_generation;
  if (++emu_arrived + emu_done == emu_expected) {
    if (emu_done) emu_failure = 1;  // some threads left without reaching this barrier
    emu_release();
    return;
  }
  if (!emu_cv.wait_for(lock, std::chrono::seconds(30), [&] { return emu_generation != gen; })) {
    emu_failure = 2;
    emu_release();
  }
}
extern "C" void emu_block(unsigned threads, int concurrent, void* dynamic_shared) {
  std::lock_guard<std::mutex> lock(emu_mu);
  emu_expected = threads; emu_arrived = emu_done = 0; emu_concurrent = concurrent;
  emu_dynamic_shared = dynamic_shared;
}
extern "C" void emu_set(unsigned grid, unsigned block, unsigned bid, unsigned tid) {
  gridDim.x = grid; blockDim.x = block; blockIdx.x = bid; threadIdx.x = tid;
  gridDim.y = gridDim.z = blockDim.y = blockDim.z = 1;
}
extern "C" void emu_thread_done() {
  std::lock_guard<std::mutex> lock(emu_mu);
  ++emu_done;
  if (emu_arrived && emu_arrived + emu_done == emu_expected) { emu_failure = 1; emu_release(); }
}
extern "C" int emu_take_failure() {
  std::lock_guard<std::mutex> lock(emu_mu);
  const int f = emu_failure; emu_failure = 0; return f;
}
"""
# dynamic shared memory (`extern __shared__ T name[];`) points at the launch's own buffer
_EXTERN_SHARED = re.compile(r"extern\s+__shared__\s+([\w\s]+?)\s+(\w+)\s*\[\s*\]\s*;")
_FAILURES = {1: "a __syncthreads() was not reached by every thread of the block",
             2: "a __syncthreads() waited 30 s for the rest of the block",
             3: "a __syncthreads() in a source the emulation runs one thread at a time"}
#: CUDA's limits that a launch must respect (compute capability 7.0 and later).
MAX_THREADS_PER_BLOCK = 1024
MAX_GRID_X = 2 ** 31 - 1
MAX_DYNAMIC_SHARED = 48 * 1024  # without cudaFuncSetAttribute, which segkit never calls
_GUARD = 64


class LaunchError(RuntimeError):
    """A launch the hardware would refuse, or a kernel that broke the block's rules."""


class HostKernels:
    """Kernels of csrc/cuda/<op>.cu (or of the source `code`) compiled for the host."""

    def __init__(self, op: str, workdir: Path, code: str | None = None):
        cxx = shutil.which("g++") or shutil.which("c++")
        if cxx is None:
            raise FileNotFoundError("no C++ compiler for the host emulation of the CUDA kernels")
        source = _cuda.load_source(op) if code is None else code
        #: True when the threads of a block must run at once (the source meets at barriers)
        self.cooperative = "__syncthreads" in source
        src = _EXTERN_SHARED.sub(r"\1* \2 = static_cast<\1*>(emu_dynamic_shared);", source)
        path = Path(workdir) / f"{op}_{hashlib.sha1(src.encode()).hexdigest()[:12]}_emu.cpp"
        path.write_text(PRELUDE + src)
        lib = path.with_suffix(".so")
        if not lib.exists():
            result = subprocess.run([cxx, "-O1", "-std=c++17", "-ffp-contract=off", "-shared",
                                     "-fPIC", "-pthread", str(path), "-o", str(lib)],
                                    capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(f"host build of {op}.cu failed:\n{result.stderr[-3000:]}")
        self.lib = ctypes.CDLL(str(lib))
        #: kernel name -> the block it asks for with __launch_bounds__(N)
        self.blocks = self._launch_bounds(lib) if "__launch_bounds__" in source else {}
        self.lib.emu_block.argtypes = [ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
        self.lib.emu_set.argtypes = [ctypes.c_uint] * 4

    @staticmethod
    def _launch_bounds(lib: Path) -> dict[str, int]:
        objdump = shutil.which("objdump")
        if objdump is None:
            raise FileNotFoundError("objdump (binutils) is needed to read the __launch_bounds__ "
                                    "of the host build of the CUDA kernels")
        table = subprocess.run([objdump, "-t", str(lib)], capture_output=True, text=True,
                               check=True).stdout
        blocks = {}
        for section, name in re.findall(r"\s(segkit_block_\S+)\s+[0-9a-f]+\s+(\w+)$", table,
                                        re.MULTILINE):
            value = section[len("segkit_block_"):]
            if not value.isdigit():
                raise RuntimeError(f"{name}: __launch_bounds__({value}) must be an integer (or a "
                                   "macro of one) for the emulation to read it")
            blocks[name] = int(value)
        return blocks

    @staticmethod
    def _arg(a):
        if isinstance(a, np.ndarray):
            return ctypes.c_void_p(a.ctypes.data)
        if a is None:  # CuPy passes None as 0xffffffff, not NULL (cupy issue 9046)
            raise LaunchError("kernel argument None: CuPy does not pass it as a null pointer "
                              "(cupy issue 9046); pass np.uint64(0)")
        conv = {np.int64: ctypes.c_longlong, np.int32: ctypes.c_int, np.uint64: ctypes.c_ulonglong,
                np.float32: ctypes.c_float}
        if type(a) not in conv:
            raise LaunchError(f"kernel argument {a!r} ({type(a).__name__}): pass NumPy scalars "
                              "of a fixed width, as CuPy needs them")
        return conv[type(a)](a.item())

    @staticmethod
    def _shape(value, what: str) -> int:
        dims = tuple(value) if isinstance(value, (tuple, list)) else (value,)
        if not 1 <= len(dims) <= 3 or any(int(d) < 1 for d in dims):
            raise LaunchError(f"{what} {value!r}: 1 to 3 positive extents")
        if any(int(d) != 1 for d in dims[1:]):
            raise LaunchError(f"{what} {value!r}: segkit's kernels index x only; a y or z "
                              "extent would run the same work several times")
        return int(dims[0])

    def launch(self, name: str, args: tuple, *, grid=3, block=4, shared_mem: int = 0) -> None:
        """Run kernel `name` on `grid` blocks of `block` threads (ints or CuPy-style tuples)
        with `shared_mem` bytes of dynamic shared memory; raises :class:`LaunchError` where a
        GPU would refuse the launch or the kernel broke the block's rules."""
        kernel = getattr(self.lib, name)
        g, b = self._shape(grid, "grid"), self._shape(block, "block")
        if b > MAX_THREADS_PER_BLOCK:
            raise LaunchError(f"{name}: block of {b} threads; CUDA allows at most "
                              f"{MAX_THREADS_PER_BLOCK}")
        asks = self.blocks.get(name)
        if asks is not None and b != asks:
            raise LaunchError(f"{name}: block of {b} threads, but the kernel asks for exactly "
                              f"{asks} (__launch_bounds__({asks}))")
        if g > MAX_GRID_X:
            raise LaunchError(f"{name}: grid of {g} blocks; CUDA allows at most {MAX_GRID_X}")
        if not 0 <= shared_mem <= MAX_DYNAMIC_SHARED:
            raise LaunchError(f"{name}: {shared_mem} bytes of dynamic shared memory; at most "
                              f"{MAX_DYNAMIC_SHARED} without opting in")
        cargs = [self._arg(a) for a in args]
        shared = np.full(shared_mem + _GUARD + 16, 0xA5, np.uint8)
        start = -shared.ctypes.data % 16
        base = shared.ctypes.data + start
        for bid in range(g):
            shared[:] = 0xA5  # each block's shared memory starts undefined: a known pattern
            self.lib.emu_block(b, int(self.cooperative), ctypes.c_void_p(base))
            if self.cooperative:
                def thread(tid, bid=bid):
                    self.lib.emu_set(g, b, bid, tid)
                    kernel(*cargs)
                    self.lib.emu_thread_done()

                threads = [threading.Thread(target=thread, args=(t,)) for t in range(b)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            else:
                for tid in range(b):
                    self.lib.emu_set(g, b, bid, tid)
                    kernel(*cargs)
            failure = self.lib.emu_take_failure()
            if failure:
                raise LaunchError(f"{name} (grid {g}, block {b}), block {bid}: "
                                  f"{_FAILURES[failure]}")
            guard = shared[start + shared_mem:start + shared_mem + _GUARD]
            if (guard != 0xA5).any():
                raise LaunchError(f"{name}: wrote past its {shared_mem} bytes of dynamic shared "
                                  "memory")


# ---- stand-ins for CuPy and torch, for the runners ---------------------------------------
@dataclass(frozen=True)
class Event:
    """One logged device operation: what ("alloc", "to_host", "launch"), on which stream and
    device, and for launches the kernel and its shape."""

    kind: str
    stream: int
    device: int
    name: str = ""
    grid: tuple = ()
    block: tuple = ()
    shared_mem: int = 0


class _Memory:
    def __init__(self, ptr: int):
        self.ptr = ptr


class EmulatedGpu:
    """The state behind the stand-in ``cupy`` module: streams, devices, the event log."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.events: list[Event] = []
        self._local = threading.local()
        self.torch_current = 0  # torch's current stream (its legacy default stream: 0)
        self.module = self._make_cupy()

    # -- what the tests look at
    def clear(self) -> None:
        self.events.clear()

    def launches(self) -> list[Event]:
        return [e for e in self.events if e.kind == "launch"]

    def streams(self) -> set[int]:
        """The streams every logged operation used."""
        return {e.stream for e in self.events}

    @contextlib.contextmanager
    def torch_stream(self, ptr: int):
        """The emulation's ``with torch.cuda.stream(side):``: torch's current stream is `ptr`."""
        old, self.torch_current = self.torch_current, ptr
        try:
            yield
        finally:
            self.torch_current = old

    def torch_current_stream(self, device=None):
        return types.SimpleNamespace(cuda_stream=self.torch_current, device=device)

    # -- CuPy's current stream and device (per host thread, as in CuPy)
    def _stack(self, what: str) -> list:
        if not hasattr(self._local, what):
            setattr(self._local, what, [])
        return getattr(self._local, what)

    def current_stream(self):
        stack = self._stack("streams")
        return stack[-1] if stack else self.module.cuda.Stream.null

    def current_device(self) -> int:
        stack = self._stack("devices")
        return stack[-1] if stack else 0

    def log(self, kind: str, **kw) -> None:
        self.events.append(Event(kind, self.current_stream().ptr, self.current_device(), **kw))

    def _make_cupy(self) -> types.ModuleType:
        gpu = self
        cupy = types.ModuleType("cupy")
        cupy.__version__ = "host emulation"

        class ndarray(np.ndarray):
            """A device array: host memory standing in for device memory."""

            def __array_finalize__(self, obj):
                if self.flags.owndata or (type(self.base) is np.ndarray
                                          and self.base.flags.owndata):
                    gpu.log("alloc")

            @property
            def data(self):
                return _Memory(self.ctypes.data)

            @property
            def device(self):
                return cupy.cuda.Device(0)

            @property
            def __cuda_array_interface__(self):
                return _interface(self)

            def get(self, stream=None):
                if stream is not None:
                    with stream:
                        return self.get()
                gpu.log("to_host")
                return np.array(self.view(np.ndarray), copy=True)

        def device_array(res):
            return res.view(ndarray) if type(res) is np.ndarray else res

        def asarray(a, dtype=None, order=None):
            if isinstance(a, ndarray):
                return a if dtype is None or np.dtype(dtype) == a.dtype else a.astype(dtype)
            if hasattr(a, "__cuda_array_interface__"):  # zero-copy, like CuPy
                view = np.asarray(_HostView(a.__cuda_array_interface__)).view(ndarray)
                return view if dtype is None else view.astype(dtype)
            return device_array(np.array(a, dtype=dtype, order=order or "K", copy=True))

        def asnumpy(a, stream=None):
            return a.get(stream) if isinstance(a, ndarray) else np.asarray(a)

        def wrap(fn):
            def call(*args, **kwargs):
                return device_array(fn(*args, **kwargs))
            call.__name__ = getattr(fn, "__name__", "numpy_function")
            return call

        def getattr_(name):
            value = getattr(np, name)
            if isinstance(value, type) or not callable(value):
                return value
            return wrap(value)

        cupy.ndarray = ndarray
        cupy.asarray = asarray
        cupy.asnumpy = asnumpy
        cupy.__getattr__ = getattr_  # empty, zeros, ascontiguousarray, array, isnan, dtypes...

        class Stream:
            _next = [0x5000]

            def __init__(self, null=False, non_blocking=False, ptr=None):
                if ptr is None:
                    ptr = 0 if null else Stream._next[0]
                    Stream._next[0] += 0x100
                self.ptr = ptr

            def __enter__(self):
                gpu._stack("streams").append(self)
                return self

            def __exit__(self, *exc):
                gpu._stack("streams").pop()

            def __eq__(self, other):
                return isinstance(other, Stream) and other.ptr == self.ptr

            def __hash__(self):
                return hash(self.ptr)

            def __repr__(self):
                return f"<emulated stream {self.ptr:#x}>"

        class ExternalStream(Stream):
            def __init__(self, ptr, device_id=-1):
                super().__init__(ptr=int(ptr))
                self.device_id = device_id

        Stream.null = Stream(null=True)

        class Device:
            def __init__(self, device=None):
                self.id = gpu.current_device() if device is None else int(device)

            def __enter__(self):
                gpu._stack("devices").append(self.id)
                return self

            def __exit__(self, *exc):
                gpu._stack("devices").pop()

        class RawModule:
            def __init__(self, code: str, options=(), **_):
                self.kernels = HostKernels("module", gpu.workdir, code=code)

            def get_function(self, name: str):
                getattr(self.kernels.lib, name)  # AttributeError for an unknown kernel
                return _Kernel(gpu, self.kernels, name)

        runtime = types.SimpleNamespace(getDeviceCount=lambda: 1,
                                        getDeviceProperties=lambda i: {"name": b"host emulation"})
        cupy.cuda = types.SimpleNamespace(
            Stream=Stream, ExternalStream=ExternalStream, Device=Device, RawModule=RawModule,
            runtime=runtime, get_current_stream=lambda: gpu.current_stream())
        cupy.RawModule = RawModule
        return cupy


class _Kernel:
    """A RawKernel: ``kernel(grid, block, args, shared_mem=0, stream=None)`` as in CuPy."""

    def __init__(self, gpu: EmulatedGpu, kernels: HostKernels, name: str):
        self.gpu, self.kernels, self.name = gpu, kernels, name

    def __call__(self, grid, block, args, *, shared_mem=0, stream=None):
        with stream if stream is not None else contextlib.nullcontext():
            self.gpu.log("launch", name=self.name, grid=tuple(grid), block=tuple(block),
                         shared_mem=int(shared_mem))
        self.kernels.launch(self.name, tuple(args), grid=grid, block=block,
                            shared_mem=int(shared_mem))


def _interface(a: np.ndarray) -> dict:
    return {"shape": a.shape, "typestr": a.dtype.str, "data": (a.ctypes.data, False),
            "strides": a.strides, "version": 2}


class _HostView:
    """Reads a ``__cuda_array_interface__`` as NumPy's array interface (same host memory)."""

    def __init__(self, cai: dict):
        self.__array_interface__ = {"shape": tuple(cai["shape"]), "typestr": cai["typestr"],
                                    "data": cai["data"], "strides": cai.get("strides"),
                                    "version": 3}


class TorchCudaTensor:
    """Stands in for a torch CUDA tensor (what segkit reads of one: ``is_cuda``, ``device``,
    ``__cuda_array_interface__``, ``detach()``), over a NumPy array's memory."""

    __module__ = "torch"
    is_cuda = True

    def __init__(self, array: np.ndarray, device: int = 0):
        self.array = array
        self.device = types.SimpleNamespace(type="cuda", index=device)

    @property
    def __cuda_array_interface__(self):
        return _interface(self.array)

    def detach(self):
        return self


@contextlib.contextmanager
def emulated_gpu(workdir: Path):
    """CuPy replaced by the emulation (and torch's current stream by the emulation's) for the
    block; segkit's memoised kernels and backend probes are forgotten on entry and exit."""
    from segkit import _backend

    try:
        import torch
    except ImportError:  # the runners then meet no torch tensors
        torch = None
    gpu = EmulatedGpu(workdir)
    saved = sys.modules.get("cupy")
    saved_stream = torch.cuda.current_stream if torch is not None else None
    sys.modules["cupy"] = gpu.module
    if torch is not None:
        torch.cuda.current_stream = gpu.torch_current_stream
    _cuda._module.cache_clear()
    _backend.backend_info.cache_clear()
    try:
        yield gpu
    finally:
        if saved is None:
            sys.modules.pop("cupy", None)
        else:
            sys.modules["cupy"] = saved
        if torch is not None:
            torch.cuda.current_stream = saved_stream
        _cuda._module.cache_clear()
        _backend.backend_info.cache_clear()
