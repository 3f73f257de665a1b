"""ConvCRF: segkit's backends against the torch unfold reference (ConvCRF's own method, in
segkit.reference.convcrf) at 1 and 2 torch threads and, where it installs, pydensecrf2's
DenseCRF2D, on one 512x512 image with 11 classes (segkit.synthetic.crf_scene), in one run.

Settings: ConvCRF's default (k=11, blur 4, 5 iterations), k=7 blur 1 (5 iterations) and the
original recipe's "seed" preset (k=5, blur 1, 200 iterations, per image). The torch reference
runs the seed setting for 20 iterations and its time is scaled by 10 (its row says so): each
iteration costs the same, and 200 of them take minutes.

Memory: every implementation's peak is measured once, in a fresh subprocess
(`python benchmarks/bench_convcrf.py --peak IMPL SETTING`): inputs made and the code warmed up
on a small image first (compilation, thread pools), then the kernel's peak resident set size is
reset (/proc/self/clear_refs; freed heap memory is first returned to the system with malloc_trim)
and the peak (VmHWM) after one call minus the resident size before it is reported. It counts every allocation (NumPy, torch, the C++ workspace, the
output), but not memory that was already resident; the seed setting is measured with 3
iterations (memory does not grow with iterations).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import segkit

if __package__:
    from .conftest import require
else:  # run as a script for the memory measurement
    def require(name):  # pragma: no cover
        pass

SIDE, CLASSES = 512, 11
SETTINGS = {
    "default": dict(filter_size=11, blur=4, num_iter=5),
    "k7-blur1": dict(filter_size=7, blur=1, num_iter=5),
    "seed": dict(filter_size=5, blur=1, num_iter=200),
}
GROUPS = {
    "default": "convcrf 512x512, 11 classes: default (k=11, blur 4, 5 iterations)",
    "k7-blur1": "convcrf 512x512, 11 classes: k=7, blur 1, 5 iterations",
    "seed": "convcrf 512x512, 11 classes: seed preset (k=5, blur 1, 200 iterations), per image",
}
TORCH_SEED_ITERS = 20
_INPUTS: dict[int, tuple[np.ndarray, np.ndarray]] = {}
_PEAKS: dict[tuple[str, str], float | None] = {}


def inputs(side: int = SIDE):
    """(image (1, H, W, 3) uint8, logits (1, C, H, W) float32)."""
    if side not in _INPUTS:
        from segkit.synthetic import crf_scene

        image, _, logits = crf_scene(1, side, side, CLASSES, seed=side)
        _INPUTS[side] = (image, logits)
    return _INPUTS[side]


def torch_kwargs(setting: str, seed_iters: int = TORCH_SEED_ITERS) -> dict:
    kw = dict(SETTINGS[setting])
    if setting == "seed":
        kw["num_iter"] = seed_iters
    return kw


def make_call(impl: str, setting: str, image, logits, num_iter: int | None = None):
    """A no-argument callable running `impl` once on the inputs (threads set inside)."""
    kw = dict(SETTINGS[setting])
    if num_iter is not None:
        kw["num_iter"] = num_iter
    if impl.startswith("torch"):
        import torch

        from segkit.reference.convcrf import convcrf_torch

        threads = int(impl.split("-")[1][0])
        u = torch.from_numpy(logits)
        img = torch.from_numpy(np.ascontiguousarray(image.transpose(0, 3, 1, 2))).float()
        if num_iter is None:
            kw = torch_kwargs(setting)

        def call():
            torch.set_num_threads(threads)
            return convcrf_torch(u, img, **kw)
        return call
    if impl == "densecrf":
        import pydensecrf.densecrf as dcrf
        from pydensecrf.utils import unary_from_softmax

        p = np.exp(logits[0] - logits[0].max(0))
        p /= p.sum(0)
        energy = np.ascontiguousarray(unary_from_softmax(p))
        rgb = np.ascontiguousarray(image[0])

        def call():
            d = dcrf.DenseCRF2D(rgb.shape[1], rgb.shape[0], p.shape[0])
            d.setUnaryEnergy(energy)
            d.addPairwiseGaussian(sxy=3, compat=3)
            d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=rgb, compat=10)
            return np.array(d.inference(5))
        return call
    backend = impl.partition("-")[0]

    def call():
        return segkit.convcrf(logits, image, backend=backend, **kw)
    return call


def _peak_subprocess(impl: str, setting: str) -> None:  # pragma: no cover - run by measure()
    small_image, small_logits = inputs(64)
    image, logits = inputs()
    iters = 3 if setting == "seed" else None
    configure(impl)
    make_call(impl, setting, small_image, small_logits, num_iter=2)()  # compile, pools
    if impl.startswith("cpp"):
        from segkit import _C
        _C.convcrf_release_workspace()
    call = make_call(impl, setting, image, logits, num_iter=iters)
    import ctypes
    import gc
    gc.collect()
    try:  # hand freed heap memory back to the OS, so that reusing it shows in the peak
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass

    def status():
        d = {}
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmHWM", "VmRSS")):
                    key, value = line.split(":")
                    d[key] = int(value.split()[0]) * 1024
        return d

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status()["VmRSS"]
    out = call()
    after = status()["VmHWM"]
    del out
    print(json.dumps({"peak_MB": (after - before) / 2 ** 20}))


def configure(impl: str) -> None:
    """Threads and SIMD path for a segkit implementation name."""
    if not impl.startswith(("cpp", "numba")):
        return
    segkit.set_num_threads(1 if impl.endswith("1t") else 0)
    if impl.startswith("cpp"):
        from segkit import _C
        isa = {"cpp-avx2": "avx2", "cpp-base": "base"}.get(impl, _C.build_info()["simd_best"])
        _C.set_simd_isa(isa)


def measure_peak(impl: str, setting: str) -> float | None:
    """Peak memory (MB) of one call, measured in a fresh subprocess (see the module doc)."""
    if (impl, setting) not in _PEAKS:
        if not Path("/proc/self/clear_refs").exists():
            _PEAKS[impl, setting] = None
        else:
            env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
            res = subprocess.run([sys.executable, __file__, "--peak", impl, setting],
                                 capture_output=True, text=True, env=env, timeout=900)
            lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
            _PEAKS[impl, setting] = json.loads(lines[-1])["peak_MB"] if lines else None
    return _PEAKS[impl, setting]


def _label(benchmark, setting: str, label: str) -> None:
    """Group and name, set before the run (pytest-benchmark reads the group then)."""
    benchmark.group = GROUPS[setting]
    benchmark.extra_info["impl"] = label
    benchmark.extra_info["pixels"] = SIDE * SIDE


def _record(benchmark, impl: str, setting: str) -> None:
    """Peak memory, measured after the timing runs (in a subprocess)."""
    peak = measure_peak(impl, setting)
    if peak is not None:
        benchmark.extra_info["peak_MB"] = peak


SEGKIT_IMPLS = {
    "cpp": "segkit cpp (2 threads, {isa})",
    "cpp-1t": "segkit cpp (1 thread, {isa})",
    "cpp-avx2": "segkit cpp (2 threads, avx2)",
    "cpp-base": "segkit cpp (2 threads, base)",
    "numba": "segkit numba (2 threads)",
    "numba-1t": "segkit numba (1 thread)",
}


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("impl", list(SEGKIT_IMPLS))
def test_segkit(benchmark, impl, setting):
    require(impl.split("-")[0])
    from segkit import _C

    best = _C.build_info()["simd_best"]
    order = ["base", "avx2", "avx512"]
    if impl == "cpp-avx2" and order.index(best) < 1:
        pytest.skip("this CPU has no AVX2")
    if impl in ("cpp-avx2", "cpp-base") and setting == "seed":
        pytest.skip("SIMD variants are compared on the 5-iteration settings")
    image, logits = inputs()
    call = make_call(impl, setting, image, logits)
    _label(benchmark, setting, SEGKIT_IMPLS[impl].format(isa=best))
    configure(impl)
    try:
        call()  # compile / warm up (and fill the workspace cache, as a dataset job would)
        if setting == "seed":
            out = benchmark.pedantic(call, rounds=3, iterations=1)
        else:
            out = benchmark(call)
    finally:
        segkit.set_num_threads(0)
        _C.set_simd_isa(best)
    _record(benchmark, impl, setting)
    assert out.shape == logits.shape and np.isfinite(out).all()


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("threads", [1, 2])
def test_torch_unfold_reference(benchmark, threads, setting):
    torch = pytest.importorskip("torch")
    impl = f"torch-{threads}t"
    image, logits = inputs()
    call = make_call(impl, setting, image, logits)
    old = torch.get_num_threads()
    rounds = {"default": 3, "k7-blur1": 2, "seed": 1}[setting]
    label = f"torch unfold reference ({threads} thread{'s' if threads > 1 else ''})"
    if setting == "seed":
        benchmark.extra_info["scale"] = 200 / TORCH_SEED_ITERS
        label += f" [{TORCH_SEED_ITERS} iterations x {200 // TORCH_SEED_ITERS}]"
    _label(benchmark, setting, label)
    try:
        out = benchmark.pedantic(call, rounds=rounds, iterations=1).numpy()
    finally:
        torch.set_num_threads(old)
    _record(benchmark, impl, setting)
    # the same run checks that segkit computes the same thing
    ours = segkit.convcrf(logits, image, **torch_kwargs(setting))
    scale = float(np.abs(out).max())
    np.testing.assert_allclose(ours, out, rtol=1e-4, atol=1e-4 * scale)


def test_segkit_numpy_reference(benchmark):
    image, logits = inputs()
    call = make_call("numpy", "default", image, logits)
    _label(benchmark, "default", "segkit numpy (reference backend)")
    benchmark.pedantic(call, rounds=1, iterations=1)
    _record(benchmark, "numpy", "default")


def test_pydensecrf2(benchmark):
    pytest.importorskip("pydensecrf.densecrf", reason="pydensecrf2 is not installed "
                        "(pip install pydensecrf2; it builds from source)")
    image, logits = inputs()
    call = make_call("densecrf", "default", image, logits)
    call()
    _label(benchmark, "default", "pydensecrf2 DenseCRF2D (fully connected, 5 iterations, "
           "1 thread)")
    benchmark.pedantic(call, rounds=3, iterations=1)
    _record(benchmark, "densecrf", "default")


if __name__ == "__main__":  # pragma: no cover
    if len(sys.argv) == 4 and sys.argv[1] == "--peak":
        _peak_subprocess(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: python benchmarks/bench_convcrf.py --peak IMPL SETTING")
