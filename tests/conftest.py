"""Shared fixtures: backend parametrization and the needs_cuda / needs_nvcc marks.

CPU backends (numba, cpp) must be available wherever the tests run: a missing one fails the
test. The CUDA backend is skipped, with the reason, where CuPy or a GPU is missing.
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import segkit
from segkit import _backend

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

#: Every backend but the NumPy reference (the ops that have all four: segkit._backend.OPS).
FAST_BACKENDS = tuple(b for b in _backend.BACKENDS if b != "numpy")


def require_backend(name: str) -> None:
    info = _backend.backend_info(name)
    if info.available:
        return
    if name == "cuda":
        pytest.skip(f"cuda backend unavailable: {info.reason}")
    pytest.fail(f"{name} backend must be available for the tests: {info.reason}")


def pytest_collection_modifyitems(config, items):
    cuda = _backend.backend_info("cuda")
    nvcc = shutil.which("nvcc")
    for item in items:
        if "needs_cuda" in item.keywords and not cuda.available:
            item.add_marker(pytest.mark.skip(reason=f"needs a CUDA GPU: {cuda.reason}"))
        if "needs_nvcc" in item.keywords and nvcc is None:
            item.add_marker(pytest.mark.skip(reason="needs nvcc (CUDA toolkit) on PATH"))


def backends_of(op: str, *, reference: bool = True) -> list:
    """The backends of `op`'s row of the table (``segkit._backend.OPS``) as pytest parameters:
    ``@pytest.mark.parametrize("backend", backends_of("vote_confusion"))``. ``cuda`` carries
    the needs_cuda mark (skipped with the reason where there is no GPU); a missing CPU backend
    fails the test. `reference` False leaves the NumPy reference out."""
    return [pytest.param(b, id=b, marks=[pytest.mark.needs_cuda] if b == "cuda" else [])
            for b in _backend.OPS[op].backends if reference or b != "numpy"]


@pytest.fixture(params=FAST_BACKENDS)
def fast_backend(request):
    """Each non-reference backend in turn (cuda skipped with the reason where absent)."""
    require_backend(request.param)
    return request.param


def _simd_isas():
    info = _backend.backend_info("cpp")
    if not info.available:
        return ["base"]
    from segkit import _C
    order = ["base", "avx2", "avx512"]
    return order[: order.index(_C.build_info()["simd_best"]) + 1]


@pytest.fixture(params=_simd_isas())
def simd_isa(request):
    """Runs a test once per SIMD path of the C++ kernels this CPU has, restoring the best."""
    require_backend("cpp")
    from segkit import _C
    old = _C.set_simd_isa(request.param)
    yield request.param
    _C.set_simd_isa(old)


class _Probes(dict):
    """segkit's probe table; assigning a probe forgets the cached results."""

    def __setitem__(self, key, value):
        _backend._PROBES[key] = value
        _backend.backend_info.cache_clear()


@pytest.fixture
def backend_probes():
    """Lets a test replace backend probes; restores them and the cache afterwards."""
    saved = dict(_backend._PROBES)
    _backend.backend_info.cache_clear()
    yield _Probes()
    _backend._PROBES.clear()
    _backend._PROBES.update(saved)
    _backend.backend_info.cache_clear()




def to_host(x):
    """A NumPy copy of `x` wherever it lives: CuPy arrays (``.get()``), torch tensors on any
    device (``.detach().cpu().numpy()``), NumPy arrays and anything array-like (as is)."""
    if type(x).__module__.startswith("torch"):
        return x.detach().cpu().numpy()
    if hasattr(x, "get") and hasattr(x, "__cuda_array_interface__"):
        return x.get()
    return np.asarray(x)


@pytest.fixture(scope="session")
def emu_workdir(tmp_path_factory):
    """Where the host builds of the CUDA sources go (shared by the whole session)."""
    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("no C++ compiler for the host emulation of the CUDA kernels")
    return tmp_path_factory.mktemp("cuda_emu")


@pytest.fixture
def emulated_gpu(emu_workdir):
    """CuPy and torch's current stream replaced by the host emulation of tests/cuda_emu.py for
    one test: the ops' real CUDA runners launch the kernels compiled for the host, and every
    allocation, copy and launch is logged with its stream (``gpu.events``)."""
    from .cuda_emu import emulated_gpu as emulate

    with emulate(emu_workdir) as gpu:
        yield gpu


def chromium_path() -> str | None:
    """The headless browser the page tests use (make system-deps installs it), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray instance (2 CPUs) for the module's tests; skips, saying why, without one."""
    try:
        import ray
    except ImportError as exc:
        pytest.skip(f"Ray is not installed (pip install 'segkit[ray]'): {exc}")
    mp = pytest.MonkeyPatch()
    mp.delenv("RAY_ADDRESS", raising=False)
    if ray.is_initialized():
        ray.shutdown()
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 logging_level="WARNING")
    except Exception as exc:  # noqa: BLE001 - any failure to start is a reason to skip
        mp.undo()
        pytest.skip(f"a local Ray instance could not start here: {type(exc).__name__}: {exc}")
    yield ray
    ray.shutdown()
    mp.undo()


__all__ = ["backends_of", "chromium_path", "segkit", "require_backend", "to_host"]
