"""Confusion matrix (the evaluation kernel): segkit backends against numpy's bincount (the
reference) and the memory floor (copying the same bytes), 11 classes."""
from __future__ import annotations

import numpy as np
import pytest

import segkit
from segkit.reference.confusion import confusion_matrix as reference

from .conftest import require

SIDES = [512, 2048]


def data(side):
    rng = np.random.default_rng(side)
    from segkit.synthetic import blob_masks

    gt = blob_masks(1, side, side, 11, noise=0.0, seed=side)[0]
    pred = np.where(rng.random(gt.shape) < 0.9, gt, rng.integers(0, 11, gt.shape)).astype(np.uint8)
    return pred, gt


def _setup(benchmark, side, impl):
    benchmark.group = f"confusion {side}x{side} u8"
    benchmark.extra_info["pixels"] = side * side
    benchmark.extra_info["impl"] = impl


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("backend", ["cpp", "numba"])
def test_segkit(benchmark, side, backend):
    require(backend)
    pred, gt = data(side)
    segkit.confusion_matrix(pred, gt, 11, backend=backend)
    _setup(benchmark, side, f"segkit {backend}")
    out = benchmark(lambda: segkit.confusion_matrix(pred, gt, 11, backend=backend))
    np.testing.assert_array_equal(out, reference(pred, gt, 11, 255)[0])


@pytest.mark.parametrize("side", SIDES)
def test_numpy_bincount(benchmark, side):
    pred, gt = data(side)
    _setup(benchmark, side, "numpy bincount (reference)")
    benchmark(lambda: reference(pred, gt, 11, 255))


@pytest.mark.parametrize("side", SIDES)
def test_memory_floor(benchmark, side):
    pred, gt = data(side)
    a, b = np.empty_like(pred), np.empty_like(gt)
    _setup(benchmark, side, "memory floor (copy both inputs)")
    benchmark(lambda: (np.copyto(a, pred), np.copyto(b, gt)))
