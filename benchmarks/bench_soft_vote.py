"""Soft voting: segkit's backends against np.average + argmax, np.tensordot + argmax and a
torch float32 weighted add + argmax, on 5 models x float16 (11, 512, 512) and (11, 1024,
1024), in one run; the memory-read floor (every input byte read once, 2 threads) is measured
on the same arrays. Then the whole `segkit.ensemble` job from .npy files in the page cache
against a straightforward NumPy loop. GB/s is derived from extra_info['bytes'] (input bytes)."""
from __future__ import annotations

import numpy as np
import pytest

import segkit
from segkit.synthetic import model_probs

from .conftest import require, simd, threads

SIDES = {"512": 512, "1024": 1024}
MODELS, CLASSES = 5, 11
WEIGHTS = [0.3, 0.2, 0.2, 0.15, 0.15]
_DATA: dict[int, list[np.ndarray]] = {}


def probs(side: int) -> list[np.ndarray]:
    """5 float16 (11, side, side) probability maps (separate arrays, as a store's files)."""
    if side not in _DATA:
        small = model_probs(MODELS, CLASSES, 256, 256, agreement=0.7, seed=side)
        reps = side // 256
        _DATA[side] = [np.ascontiguousarray(np.tile(p, (1, reps, reps)).astype(np.float16))
                       for p in small]
    return _DATA[side]


def _setup(benchmark, side):
    xs = probs(side)
    benchmark.group = f"soft_vote 5 x (11, {side}, {side}) float16"
    benchmark.extra_info["bytes"] = sum(x.nbytes for x in xs)
    return xs


# ---- segkit ------------------------------------------------------------------------------------
@pytest.mark.parametrize("side", list(SIDES.values()), ids=list(SIDES))
@pytest.mark.parametrize("isa", ["avx512", "avx2", "base"])
def test_segkit_cpp(benchmark, side, isa):
    with simd(isa):
        xs = _setup(benchmark, side)
        out = benchmark(lambda: segkit.soft_vote(xs, WEIGHTS, backend="cpp"))
    benchmark.extra_info["impl"] = f"segkit cpp ({isa})"
    np.testing.assert_array_equal(out[:64], segkit.soft_vote([x[:, :64] for x in xs], WEIGHTS,
                                                             backend="numpy"))


@pytest.mark.parametrize("side", list(SIDES.values()), ids=list(SIDES))
def test_segkit_cpp_1thread(benchmark, side):
    require("cpp")
    xs = _setup(benchmark, side)
    with threads(1):
        benchmark(lambda: segkit.soft_vote(xs, WEIGHTS, backend="cpp"))
    benchmark.extra_info["impl"] = "segkit cpp (1 thread)"


@pytest.mark.parametrize("side", list(SIDES.values()), ids=list(SIDES))
def test_segkit_cpp_with_probs(benchmark, side):
    require("cpp")
    xs = _setup(benchmark, side)
    benchmark(lambda: segkit.soft_vote(xs, WEIGHTS, return_probs=True, backend="cpp"))
    benchmark.extra_info["impl"] = "segkit cpp (+ float32 mean written)"


@pytest.mark.parametrize("side", list(SIDES.values()), ids=list(SIDES))
def test_segkit_numba(benchmark, side):
    require("numba")
    xs = _setup(benchmark, side)
    segkit.soft_vote([x[:, :8, :8] for x in xs], backend="numba")  # compile outside the timer
    benchmark(lambda: segkit.soft_vote(xs, WEIGHTS, backend="numba"))
    benchmark.extra_info["impl"] = "segkit numba"


def test_segkit_numpy_reference(benchmark):
    xs = _setup(benchmark, 512)
    benchmark(lambda: segkit.soft_vote(xs, WEIGHTS, backend="numpy"))
    benchmark.extra_info["impl"] = "segkit numpy (reference)"


# ---- peers -------------------------------------------------------------------------------------
@pytest.mark.parametrize("side", list(SIDES.values()), ids=list(SIDES))
def test_np_average(benchmark, side):
    xs = _setup(benchmark, side)
    stacked = np.stack(xs)  # the peer needs one (M, C, H, W) array; stacking is not timed
    out = benchmark(lambda: np.average(stacked, axis=0, weights=WEIGHTS).argmax(0))
    benchmark.extra_info["impl"] = "np.average + argmax"
    agree = (out == segkit.soft_vote(xs, WEIGHTS)).mean()
    assert agree > 0.999  # float64 sums: differs only at near-ties
    benchmark.extra_info["agreement"] = float(agree)


@pytest.mark.parametrize("side", list(SIDES.values()), ids=list(SIDES))
def test_np_tensordot(benchmark, side):
    xs = _setup(benchmark, side)
    stacked = np.stack(xs)
    w = np.asarray(WEIGHTS, np.float32)
    benchmark(lambda: np.tensordot(w, stacked, axes=1).argmax(0))
    benchmark.extra_info["impl"] = "np.tensordot + argmax"


@pytest.mark.parametrize("side", list(SIDES.values()), ids=list(SIDES))
def test_torch_float32_add(benchmark, side):
    torch = pytest.importorskip("torch")
    xs = _setup(benchmark, side)
    ts = [torch.from_numpy(x) for x in xs]

    def vote():
        acc = ts[0].float() * WEIGHTS[0]
        for w, t in zip(WEIGHTS[1:], ts[1:]):
            acc += t.float() * w
        return acc.argmax(0)

    benchmark(vote)
    benchmark.extra_info["impl"] = f"torch float32 add + argmax ({torch.get_num_threads()} threads)"


# ---- the memory floor: read every input byte once (same arrays, 2 threads) ---------------------
def _xor_reader():
    from numba import njit, prange

    @njit(parallel=True, cache=True)
    def xor_words(a):
        chunks = 64
        out = np.zeros(chunks, np.uint64)
        n = a.size
        for k in prange(chunks):
            s = np.uint64(0)
            for i in range(k * n // chunks, (k + 1) * n // chunks):
                s ^= a[i]
            out[k] = s
        return out

    return xor_words


@pytest.mark.parametrize("side", list(SIDES.values()), ids=list(SIDES))
@pytest.mark.parametrize("threads", [2, 1])
def test_floor_read(benchmark, side, threads):
    require("numba")
    import numba

    xs = _setup(benchmark, side)
    words = [x.reshape(-1).view(np.uint64) for x in xs]
    reader = _xor_reader()
    reader(words[0][:64])
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        benchmark(lambda: [reader(w) for w in words])
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    benchmark.extra_info["impl"] = (f"floor {threads} thread{'s' * (threads > 1)}: read "
                                    "every byte once (numba XOR)")


@pytest.mark.parametrize("side", list(SIDES.values()), ids=list(SIDES))
def test_floor_memcpy(benchmark, side):
    xs = _setup(benchmark, side)
    dst = [np.empty_like(x) for x in xs]
    benchmark(lambda: [np.copyto(d, x) for d, x in zip(dst, xs)])
    benchmark.extra_info["impl"] = "floor 1 thread: np.copyto (read + write)"


# ---- the whole job from files in the page cache ---------------------------------------------------
JOB_IMAGES, JOB_STORES, JOB_SIDE = 20, 3, 512


@pytest.fixture(scope="module")
def job_stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    classes = [f"class{k}" for k in range(CLASSES)]
    stores = [segkit.ConfidenceStore.create(root / f"m{m}", classes) for m in range(JOB_STORES)]
    base = [x[:, :JOB_SIDE, :JOB_SIDE] for x in probs(512)]
    for i in range(JOB_IMAGES):
        for m, store in enumerate(stores):
            store.write(f"batch+{i:04d}", np.roll(base[(m + i) % MODELS], i, axis=2),
                        check=False)
    for store in stores:  # into the page cache
        for stem in store.stems():
            store.path(stem).read_bytes()
    return [s.root for s in stores]


def _job_setup(benchmark):
    benchmark.group = (f"ensemble job: {JOB_IMAGES} images x {JOB_STORES} stores, "
                       f"{JOB_SIDE}x{JOB_SIDE} float16, from page cache")
    benchmark.extra_info["bytes"] = JOB_IMAGES * JOB_STORES * CLASSES * JOB_SIDE ** 2 * 2


@pytest.mark.parametrize("workers", [1, 2])
def test_job_segkit(benchmark, job_stores, tmp_path, workers):
    _job_setup(benchmark)
    benchmark.pedantic(lambda: segkit.ensemble(job_stores, [2, 1, 1], tmp_path / "out",
                                               resume=False, workers=workers, progress=False),
                       rounds=3, warmup_rounds=1)
    benchmark.extra_info["impl"] = f"segkit.ensemble ({workers} worker{'s' * (workers > 1)})"


def test_job_numpy_loop(benchmark, job_stores, tmp_path):
    from PIL import Image

    _job_setup(benchmark)
    stems = segkit.ConfidenceStore(job_stores[0]).stems()
    w = np.array([2, 1, 1], np.float64) / 4
    (tmp_path / "np").mkdir()

    def loop():
        for stem in stems:
            maps = [np.load(root / f"{stem}.npy") for root in job_stores]
            acc = sum(wm * m.astype(np.float32) for wm, m in zip(w, maps))
            Image.fromarray(acc.argmax(0).astype(np.uint8)).save(tmp_path / "np" / f"{stem}.png")

    benchmark.pedantic(loop, rounds=3, warmup_rounds=1)
    benchmark.extra_info["impl"] = "NumPy loop (np.load, float32 weighted sum, argmax, PNG)"
