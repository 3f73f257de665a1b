"""The CUDA kernels' logic on the host (see tests/cuda_emu.py): the mode filter and the
confusion matrix against their references, with the argument lists the CUDA backend builds."""
from __future__ import annotations

import numpy as np
import pytest

from segkit.ops.confusion import cuda_launch as confusion_launch
from segkit.ops.mode_filter import ANCHORS, TIES
from segkit.ops.mode_filter import cuda_launch as mode_launch
from segkit.reference.confusion import confusion_matrix as confusion_reference
from segkit.reference.mode_filter import mode_filter as mode_reference
from segkit.synthetic import blob_masks

from .cuda_emu import HostKernels


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    d = tmp_path_factory.mktemp("cuda_emu")
    try:
        return {op: HostKernels(op, d) for op in ("mode_filter", "confusion")}
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64])
@pytest.mark.parametrize("size", [1, 3, 5])
@pytest.mark.parametrize("ties", TIES)
@pytest.mark.parametrize("anchor", ANCHORS)
def test_mode_filter_kernel(kernels, dtype, size, ties, anchor):
    masks = blob_masks(2, 11, 13, 4, noise=0.3, scale=4, seed=size).astype(dtype)
    if np.dtype(dtype) == np.uint16:
        masks = (masks * 300).astype(dtype)
    for ignore in (None, int(masks[0, 0, 0])):
        expected = mode_reference(masks, size, anchor=anchor, ties=ties, ignore_index=ignore)
        view = np.zeros((2, 11, 20), dtype)[:, :, 2:15]  # strided rows: the kernel's ld
        view[...] = masks
        out = np.full(masks.shape, 77, dtype)
        name, total, args = mode_launch(view, out, size, ANCHORS.index(anchor),
                                        TIES.index(ties), ignore)
        kernels["mode_filter"].launch(name, args, grid=3, block=5)
        np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("num_classes", [3, 11, 70])  # 70^2 bins: past the shared histogram
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64])
def test_confusion_kernel(kernels, dtype, num_classes):
    rng = np.random.default_rng(num_classes)
    gt = rng.integers(0, num_classes, 997).astype(dtype)
    pred = rng.integers(0, num_classes, 997).astype(dtype)
    gt[::7] = 255 if np.dtype(dtype).itemsize > 1 or num_classes < 255 else gt[::7]
    pred[5] = num_classes + 1  # one out-of-range prediction
    expected, bad = confusion_reference(pred, gt, num_classes, 255)
    counts = np.zeros(num_classes * num_classes, np.int64)
    out_bad = np.zeros(2, np.int64)
    name, total, args = confusion_launch(pred, gt, num_classes, 255, counts, out_bad)
    kernels["confusion"].launch(name, args, grid=3, block=1)  # shared memory: 1 thread/block
    np.testing.assert_array_equal(counts.reshape(num_classes, num_classes), expected)
    assert tuple(out_bad) == bad


# ---- soft vote ---------------------------------------------------------------------------
from segkit.ops.soft_vote import cuda_plan as soft_vote_plan  # noqa: E402
from segkit.reference.soft_vote import soft_vote as soft_vote_reference  # noqa: E402


@pytest.fixture(scope="module")
def vote_kernels(tmp_path_factory):
    try:
        return HostKernels("soft_vote", tmp_path_factory.mktemp("cuda_emu_vote"))
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def _host_vote(kernels, arrays, weights, want_probs):
    n, c, h, w = arrays[0].shape
    factors = np.asarray(weights, np.float64) / np.sum(weights)
    labels = np.full((n, h, w), 99, np.uint8)
    mean = np.full((n, c, h, w), np.nan, np.float32) if want_probs else None
    flag = np.zeros(1, np.int32)
    name, total, args, shared = soft_vote_plan(arrays, factors, labels, mean, flag,
                                               lambda a: a.ctypes.data, np.asarray)
    kernels.launch(name, args, grid=3, block=1)  # shared memory staging: 1 thread per block
    return name, labels, mean, bool(flag[0])


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("width", [16, 13])  # 16: the vector kernels, 13: per-pixel ones
def test_soft_vote_kernels(vote_kernels, dtype, width):
    rng = np.random.default_rng(width)
    m, n, c, h = 3, 2, 5, 6
    arrays = [rng.dirichlet(np.ones(c), (n, h, width)).transpose(0, 3, 1, 2).astype(dtype)
              for _ in range(m)]
    arrays = [np.ascontiguousarray(a) for a in arrays]
    weights = [0.5, 0.3, 0.2]
    name, labels, mean, nan = _host_vote(vote_kernels, arrays, weights, True)
    assert name.startswith("soft_vote_v") == (width % (8 if dtype == np.float16 else 4) == 0)
    exp_labels, exp_mean = soft_vote_reference(arrays, weights, return_probs=True)
    np.testing.assert_array_equal(labels, exp_labels)
    np.testing.assert_array_equal(mean, exp_mean)  # same arithmetic, bit for bit
    assert not nan


def test_soft_vote_kernel_mixed_strides_and_nan(vote_kernels):
    rng = np.random.default_rng(1)
    base = rng.dirichlet(np.ones(4), (1, 5, 7)).transpose(0, 3, 1, 2).astype(np.float32)
    wide = np.zeros((1, 4, 5, 11), np.float32)
    wide[..., :7] = base[::-1]
    arrays = [np.ascontiguousarray(base), wide[..., :7]]  # different row strides
    name, labels, _, nan = _host_vote(vote_kernels, arrays, [1.0, 1.0], False)
    assert not name.startswith("soft_vote_v")
    np.testing.assert_array_equal(labels, soft_vote_reference(arrays, [1.0, 1.0]))
    arrays[0] = arrays[0].copy()
    arrays[0][0, 2, 3, 4] = np.nan
    assert _host_vote(vote_kernels, arrays, [1.0, 1.0], False)[3]
