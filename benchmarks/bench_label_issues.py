"""Label issues: segkit's backends against cleanlab 2.9 (``cleanlab.segmentation``) on the same
arrays in one run, with equal output checked in every benchmark:

- ``find_label_issues`` vs ``segkit.label_issues`` and ``get_label_quality_scores`` (softmin)
  vs ``segkit.label_quality``, on 24 and 96 images of 256x256 with 11 classes, float32;
- peak memory of the whole audit from a confidence store of N float16 images (128x128, 11
  classes; small so that the 1000-image run fits this shared machine), N = 100 and 1000:
  ``segkit.audit`` (1 worker, in-process) against cleanlab on the (N, K, H, W) float32 array it
  needs (loaded from the same store). Each measurement runs in a fresh subprocess and reports
  its peak resident set (VmHWM of /proc/self/status)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import segkit

from .conftest import require, threads

CLASSES = 11
SETS = {"24x256": (24, 256), "96x256": (96, 256)}
_DATA: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def _cleanlab():
    try:
        from cleanlab.segmentation.filter import find_label_issues
        from cleanlab.segmentation.rank import get_label_quality_scores
    except ImportError as exc:
        pytest.skip(f"cleanlab not installed ({exc})")
    return find_label_issues, get_label_quality_scores


def make(n: int, side: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(labels uint8 (n, side, side), probs float32 (n, 11, side, side)): smooth fake
    predictions, labels their argmax with 10% of pixels relabelled at random."""
    from segkit.synthetic import model_probs

    rng = np.random.default_rng(seed)
    pool = model_probs(8, CLASSES, side, side, agreement=0.5, sharpness=2.0, seed=seed)
    probs = np.stack([pool[i % 8] for i in range(n)])
    probs = np.roll(probs, tuple(rng.integers(0, side, 2)), axis=(2, 3)) if n > 8 else probs
    labels = probs.argmax(1).astype(np.uint8)
    flip = rng.random(labels.shape) < 0.1
    labels[flip] = rng.integers(0, CLASSES, int(flip.sum()))
    return labels, np.ascontiguousarray(probs)


def data(key: str):
    if key not in _DATA:
        _DATA[key] = make(*SETS[key])
    return _DATA[key]


_REF: dict[str, np.ndarray] = {}


def reference(key: str) -> np.ndarray:
    if key not in _REF:
        find, _ = _cleanlab()
        labels, probs = data(key)
        _REF[key] = find(labels, probs, verbose=False, n_jobs=1)
    return _REF[key]


def _setup(benchmark, key, what):
    labels, probs = data(key)
    benchmark.group = f"{what}: {labels.shape[0]} images 256x256, 11 classes, float32"
    benchmark.extra_info["pixels"] = labels.size
    return labels, probs


@pytest.mark.parametrize("key", list(SETS))
def test_cleanlab_find(benchmark, key):
    find, _ = _cleanlab()
    labels, probs = _setup(benchmark, key, "find_label_issues")
    out = benchmark.pedantic(lambda: find(labels, probs, verbose=False, n_jobs=1), rounds=3)
    benchmark.extra_info["impl"] = "cleanlab 2.9 find_label_issues (n_jobs=1)"
    np.testing.assert_array_equal(out, reference(key))


@pytest.mark.parametrize("key", list(SETS))
@pytest.mark.parametrize("backend,n_threads", [("cpp", 0), ("cpp", 1), ("numba", 0),
                                               ("numpy", 0)])
def test_segkit_find(benchmark, key, backend, n_threads):
    require(backend)
    labels, probs = _setup(benchmark, key, "find_label_issues")
    with threads(n_threads):
        out = benchmark(lambda: segkit.label_issues(labels, probs, backend=backend))
    benchmark.extra_info["impl"] = f"segkit {backend}" + (" (1 thread)" if n_threads else
                                                         " (2 threads)")
    np.testing.assert_array_equal(out, reference(key))


@pytest.mark.parametrize("key", list(SETS))
def test_cleanlab_quality(benchmark, key):
    _, quality = _cleanlab()
    labels, probs = _setup(benchmark, key, "label quality (softmin)")
    img, _ = benchmark.pedantic(lambda: quality(labels, probs, verbose=False), rounds=3)
    benchmark.extra_info["impl"] = "cleanlab 2.9 get_label_quality_scores"
    mine, _ = segkit.label_quality(labels, probs)
    np.testing.assert_allclose(mine, img, atol=1e-5, rtol=0)


@pytest.mark.parametrize("key", list(SETS))
@pytest.mark.parametrize("backend", ["cpp", "numba"])
def test_segkit_quality(benchmark, key, backend):
    require(backend)
    labels, probs = _setup(benchmark, key, "label quality (softmin)")
    img, _ = benchmark(lambda: segkit.label_quality(labels, probs, backend=backend))
    benchmark.extra_info["impl"] = f"segkit {backend} (2 threads)"
    _, quality = _cleanlab()
    np.testing.assert_allclose(img, quality(labels, probs, verbose=False)[0], atol=1e-5, rtol=0)


# ---- peak memory: the whole audit from a store, 100 vs 1000 images -------------------------

MEMORY_SIDE = 128
_STORES: dict[int, Path] = {}

_CHILD = r"""
import json, sys, time
import numpy as np
impl, store, gt, out = sys.argv[1:5]
t0 = time.perf_counter()
if impl == "segkit":
    import segkit
    r = segkit.audit([store], gt, out, top=0, workers=1, progress=False)
    flagged = r.issues
else:
    from cleanlab.segmentation.filter import find_label_issues
    from cleanlab.segmentation.rank import get_label_quality_scores
    from segkit.io.masks import read_mask
    from segkit.io.store import ConfidenceStore
    st = ConfidenceStore(store)
    stems = sorted(st.stems())
    probs = np.stack([np.asarray(st.read(s), np.float32) for s in stems])
    labels = np.stack([read_mask(f"{gt}/{s}.png") for s in stems])
    issues = find_label_issues(labels, probs, verbose=False, n_jobs=1)
    get_label_quality_scores(labels, probs, verbose=False)
    flagged = int(issues.sum())
# VmHWM: this process's peak resident set (ru_maxrss would carry the parent's over exec)
with open("/proc/self/status") as f:
    peak = next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024
print(json.dumps({"peak_MB": peak, "seconds": time.perf_counter() - t0, "flagged": flagged}))
"""


def memory_store(n: int, root: Path) -> tuple[Path, Path]:
    """A float16 store and a mask folder of n 128x128 images (built once per session)."""
    from segkit.io.masks import write_mask
    from segkit.io.store import ConfidenceStore

    base = root / f"mem{n}"
    if not (base / "store" / "meta.json").exists():
        labels, probs = make(16, MEMORY_SIDE, seed=3)
        store = ConfidenceStore.create(base / "store", [f"c{i}" for i in range(CLASSES)])
        (base / "gt").mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(n)
        for i in range(n):
            k = i % 16
            shift = tuple(rng.integers(0, MEMORY_SIDE, 2))
            store.write(f"im{i:05d}", np.roll(probs[k], shift, (1, 2)).astype(np.float16))
            write_mask(base / "gt" / f"im{i:05d}.png", np.roll(labels[k], shift, (0, 1)))
    return base / "store", base / "gt"


_PEAKS: dict[tuple[str, int], dict] = {}


def peak(impl: str, n: int, root: Path) -> dict:
    if (impl, n) not in _PEAKS:
        store, gt = memory_store(n, root)
        res = subprocess.run([sys.executable, "-c", _CHILD, impl, str(store), str(gt),
                              str(root / f"out_{impl}_{n}")], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent.parent)
        if res.returncode != 0:
            raise RuntimeError(res.stderr[-2000:])
        _PEAKS[impl, n] = json.loads(res.stdout.strip().splitlines()[-1])
    return _PEAKS[impl, n]


@pytest.fixture(scope="module")
def mem_root(tmp_path_factory):
    return tmp_path_factory.mktemp("label_issues_memory")


@pytest.mark.parametrize("n", [100, 1000])
@pytest.mark.parametrize("impl", ["segkit", "cleanlab"])
def test_peak_memory(benchmark, mem_root, impl, n):
    if impl == "cleanlab":
        _cleanlab()
    result = benchmark.pedantic(lambda: peak(impl, n, mem_root), rounds=1, iterations=1)
    benchmark.group = f"audit from a store, peak memory: N images 128x128, 11 classes"
    name = "segkit.audit (1 worker)" if impl == "segkit" else \
        "cleanlab 2.9 (stacked float32 array)"
    benchmark.extra_info["impl"] = f"{name}, N={n}"
    benchmark.extra_info["pixels"] = n * MEMORY_SIDE ** 2
    benchmark.extra_info["peak_MB"] = result["peak_MB"]
    benchmark.extra_info["flagged"] = result["flagged"]
    if impl == "cleanlab":
        mine = peak("segkit", n, mem_root)
        # same data, same flags up to pixels tied at the cutoff (float16 scores tie often)
        assert abs(mine["flagged"] - result["flagged"]) <= max(10, result["flagged"] // 1000)
