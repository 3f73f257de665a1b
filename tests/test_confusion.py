"""segkit.confusion_matrix and the IoU metrics: every backend against numpy's bincount."""
from __future__ import annotations

import numpy as np
import pytest

import segkit
from segkit.ops.confusion import iou_scores
from segkit.reference.confusion import confusion_matrix as reference

from .conftest import to_host


def test_hand_case(fast_backend):
    gt = np.array([[0, 0, 1], [1, 2, 255]], np.uint8)
    pred = np.array([[0, 1, 1], [1, 0, 2]], np.uint8)
    expected = np.array([[1, 1, 0],   # class 0: one right, one predicted as 1
                         [0, 2, 0],   # class 1: both right
                         [1, 0, 0]])  # class 2: predicted as 0; the 255 pixel is ignored
    np.testing.assert_array_equal(segkit.confusion_matrix(pred, gt, 3, backend=fast_backend),
                                  expected)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64])
@pytest.mark.parametrize("shape", [(0,), (1,), (7, 13), (3, 64, 65), (1000003,)])
def test_random_against_reference(fast_backend, dtype, shape):
    rng = np.random.default_rng(sum(shape) + np.dtype(dtype).itemsize)
    c = 11
    gt = rng.integers(0, c, shape).astype(dtype)
    gt[rng.random(shape) < 0.1] = 255
    pred = rng.integers(0, c, shape).astype(dtype)
    expected, bad = reference(pred, gt, c, 255)
    assert bad == (0, 0)
    out = segkit.confusion_matrix(pred, gt, c, backend=fast_backend)
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.int64 and out.sum() == (gt != 255).sum()


def test_no_ignore_and_noncontiguous(fast_backend):
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 4, (40, 60)).astype(np.uint8)
    pred = rng.integers(0, 4, (40, 60)).astype(np.uint8)
    expected, _ = reference(pred[:, ::2], gt[:, ::2], 4, None)
    out = segkit.confusion_matrix(pred[:, ::2], gt[:, ::2], 4, ignore_index=None,
                                  backend=fast_backend)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("backend", ["numpy", "numba", "cpp"])
def test_errors(backend):
    gt = np.array([0, 1, 7], np.uint8)
    with pytest.raises(ValueError, match=r"gt has 1 labels outside 0..2 \(e.g. 7\)"):
        segkit.confusion_matrix(np.array([0, 1, 2], np.uint8), gt, 3, backend=backend)
    with pytest.raises(ValueError, match=r"pred has 1 labels outside 0..2 \(e.g. 9\)"):
        segkit.confusion_matrix(np.array([0, 9, 2], np.uint8), np.array([0, 1, 2], np.uint8), 3,
                                backend=backend)
    with pytest.raises(ValueError, match=r"same shape"):
        segkit.confusion_matrix(np.zeros(3, np.uint8), np.zeros(4, np.uint8), 3, backend=backend)
    with pytest.raises(TypeError, match=r"same dtype"):
        segkit.confusion_matrix(np.zeros(3, np.uint8), np.zeros(3, np.int32), 3, backend=backend)
    with pytest.raises(TypeError, match=r"pred must be an integer label array"):
        segkit.confusion_matrix(np.zeros(3, np.float32), np.zeros(3, np.float32), 3,
                                backend=backend)
    with pytest.raises(ValueError, match=r"num_classes must be >= 1; got 0"):
        segkit.confusion_matrix(np.zeros(3, np.uint8), np.zeros(3, np.uint8), 0, backend=backend)


def test_iou_scores():
    cm = np.array([[3, 1, 0], [1, 5, 0], [0, 0, 0]])
    s = iou_scores(cm)
    np.testing.assert_allclose(s["iou"][:2], [3 / 5, 5 / 7])
    assert np.isnan(s["iou"][2])  # absent from both: not counted in the mean
    assert s["miou"] == pytest.approx((3 / 5 + 5 / 7) / 2)
    assert s["pixel_acc"] == pytest.approx(8 / 10)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64, np.int8])
@pytest.mark.parametrize("shape", [(0,), (0, 5), (3, 0, 2)])
def test_empty_inputs_give_int64_zeros(fast_backend, dtype, shape):
    out = segkit.confusion_matrix(np.zeros(shape, dtype), np.zeros(shape, dtype), 4,
                                  backend=fast_backend)
    assert type(out) is np.ndarray and out.dtype == np.int64 and out.shape == (4, 4)
    assert not out.any()
