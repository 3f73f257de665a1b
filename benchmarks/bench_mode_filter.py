"""Mode filter: segkit's backends against PIL, scikit-image, a vectorised NumPy per-class box
sum and the original recipe's loop, in one run, on realistic masks (smooth class blobs with 5%
label noise, 11 classes). Throughput in Mpix/s is derived from extra_info['pixels']."""
from __future__ import annotations

import numpy as np
import pytest

import segkit
from segkit.reference.mode_filter import seed_mode_filter
from segkit.synthetic import blob_masks

from .conftest import require, simd, threads

SIZES = {"512": 512, "2048": 2048}
_MASKS: dict[int, np.ndarray] = {}


def masks(side: int) -> np.ndarray:
    if side not in _MASKS:
        _MASKS[side] = blob_masks(1, side, side, 11, noise=0.05, seed=side)[0]
    return _MASKS[side]


def box_sum_mode(mask: np.ndarray, num_classes: int = 11) -> np.ndarray:
    """Vectorised NumPy peer: per-class 3x3 box sums of one-hot planes, argmax (smallest label
    wins ties), centred window clipped at the border."""
    h, w = mask.shape
    best = np.zeros((h, w), np.uint8)
    best_count = np.zeros((h, w), np.uint8)
    padded = np.zeros((h + 2, w + 2), np.uint8)
    for k in range(num_classes):
        padded[1:-1, 1:-1] = mask == k
        rows = padded[:-2] + padded[1:-1] + padded[2:]
        count = rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]
        better = count > best_count
        best[better] = k
        best_count = np.maximum(best_count, count)
    return best


def _run(benchmark, fn, side, group_prefix="mode_filter"):
    benchmark.group = f"{group_prefix} {side}x{side}"
    benchmark.extra_info["pixels"] = side * side
    return benchmark(fn)


@pytest.mark.parametrize("side", list(SIZES.values()), ids=list(SIZES))
@pytest.mark.parametrize("isa", ["avx512", "avx2", "base"])
def test_segkit_cpp(benchmark, side, isa):
    m = masks(side)
    with simd(isa):
        out = _run(benchmark, lambda: segkit.mode_filter(m, backend="cpp"), side)
    benchmark.extra_info["impl"] = f"segkit cpp ({isa})"
    assert out.shape == m.shape


@pytest.mark.parametrize("side", list(SIZES.values()), ids=list(SIZES))
def test_segkit_cpp_1thread(benchmark, side):
    require("cpp")
    m = masks(side)
    with threads(1):
        _run(benchmark, lambda: segkit.mode_filter(m, backend="cpp"), side)
    benchmark.extra_info["impl"] = "segkit cpp (1 thread)"


@pytest.mark.parametrize("side", list(SIZES.values()), ids=list(SIZES))
def test_segkit_numba(benchmark, side):
    require("numba")
    m = masks(side)
    segkit.mode_filter(m, backend="numba")  # compile outside the timing
    _run(benchmark, lambda: segkit.mode_filter(m, backend="numba"), side)
    benchmark.extra_info["impl"] = "segkit numba"


@pytest.mark.parametrize("side", list(SIZES.values()), ids=list(SIZES))
def test_numpy_box_sum(benchmark, side):
    m = masks(side)
    out = _run(benchmark, lambda: box_sum_mode(m), side)
    benchmark.extra_info["impl"] = "NumPy per-class box sum"
    np.testing.assert_array_equal(out, segkit.mode_filter(m, ties="smallest"))


@pytest.mark.parametrize("side", list(SIZES.values()), ids=list(SIZES))
def test_pil_mode_filter(benchmark, side):
    from PIL import Image, ImageFilter

    img = Image.fromarray(masks(side))
    _run(benchmark, lambda: img.filter(ImageFilter.ModeFilter(3)), side)
    benchmark.extra_info["impl"] = "PIL ImageFilter.ModeFilter(3)"


@pytest.mark.parametrize("side", list(SIZES.values()), ids=list(SIZES))
def test_skimage_modal(benchmark, side):
    rank = pytest.importorskip("skimage.filters.rank")
    m = masks(side)
    fp = np.ones((3, 3), np.uint8)
    out = _run(benchmark, lambda: rank.modal(m, fp), side)
    benchmark.extra_info["impl"] = "skimage.filters.rank.modal"
    np.testing.assert_array_equal(out, segkit.mode_filter(m, ties="smallest"))


def test_seed_loop(benchmark):
    """The original recipe's per-window Counter loop, on 64x64 (per-pixel rate extrapolates)."""
    m = np.ascontiguousarray(masks(512)[:64, :64])
    benchmark.group = "mode_filter seed loop 64x64"
    benchmark.extra_info["pixels"] = 64 * 64
    benchmark.extra_info["impl"] = "original recipe loop (Counter per window)"
    out = benchmark.pedantic(seed_mode_filter, args=(m,), rounds=3, iterations=1)
    np.testing.assert_array_equal(out, segkit.mode_filter(m, anchor="topleft", ties="first"))


def test_segkit_cpp_seed_settings_64(benchmark):
    m = np.ascontiguousarray(masks(512)[:64, :64])
    benchmark.group = "mode_filter seed loop 64x64"
    benchmark.extra_info["pixels"] = 64 * 64
    benchmark.extra_info["impl"] = "segkit cpp (topleft, first)"
    benchmark(lambda: segkit.mode_filter(m, anchor="topleft", ties="first", backend="cpp"))
