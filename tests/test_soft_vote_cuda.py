"""The CUDA soft vote on device arrays: CuPy arrays and torch CUDA tensors, read in place.
These need a GPU; elsewhere they are skipped with the reason (the source is still compiled by
test_cuda_sources.py). Labels and float32 sums must equal the reference exactly."""
from __future__ import annotations

import numpy as np
import pytest

import segkit
from segkit.reference.soft_vote import soft_vote as reference
from segkit.synthetic import model_probs

from .conftest import to_host

pytestmark = pytest.mark.needs_cuda


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("batched", [False, True])
def test_cupy_arrays_stay_on_device(dtype, batched):
    import cupy

    probs = model_probs(5, 11, 64, 96, seed=1).astype(dtype)
    if batched:
        probs = np.stack([probs, probs[::-1]], axis=1)  # (M, N=2, C, H, W)
    weights = [0.1, 0.4, 0.0, 0.3, 0.2]
    exp_labels, exp_mean = reference(list(probs), weights, return_probs=True)
    labels, mean = segkit.soft_vote([cupy.asarray(p) for p in probs], weights,
                                    return_probs=True)
    assert isinstance(labels, cupy.ndarray) and labels.dtype == np.uint8
    assert isinstance(mean, cupy.ndarray) and mean.dtype == np.float32
    np.testing.assert_array_equal(to_host(labels), exp_labels)
    np.testing.assert_array_equal(to_host(mean), exp_mean)


def test_near_ties_and_uint16_labels():
    import cupy

    rng = np.random.default_rng(3)
    probs = [(rng.integers(0, 5, (300, 17, 33)) / 4).astype(np.float16) for _ in range(3)]
    weights = [0.1, 0.7, 0.2]
    exp_labels, exp_mean = reference(probs, weights, return_probs=True)
    labels, mean = segkit.soft_vote([cupy.asarray(p) for p in probs], weights,
                                    return_probs=True)
    assert labels.dtype == np.uint16
    np.testing.assert_array_equal(to_host(labels), exp_labels)
    np.testing.assert_array_equal(to_host(mean), exp_mean)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("width", [64, 61, 4, 1])
def test_vector_and_scalar_paths(dtype, width):
    """Widths that are multiples of the vector length take the 16-byte-load kernels; others,
    and views starting at an odd column (misaligned), take the per-pixel kernel."""
    import cupy

    probs = model_probs(3, 5, 9, width + 1, seed=width).astype(dtype)
    for models in ([p[:, :, :width] for p in probs], [p[:, :, 1:] for p in probs]):
        host = [np.ascontiguousarray(m) for m in models]
        exp_labels, exp_mean = reference(host, [1, 2, 3], return_probs=True)
        labels, mean = segkit.soft_vote([cupy.asarray(np.ascontiguousarray(m)) for m in models],
                                        [1, 2, 3], return_probs=True)
        np.testing.assert_array_equal(to_host(labels), exp_labels)
        np.testing.assert_array_equal(to_host(mean), exp_mean)
        big = [cupy.asarray(p) for p in probs]  # device views: strided rows, odd offsets
        views = [b[:, :, :width] for b in big] if models[0].shape[2] == width else \
            [b[:, :, 1:] for b in big]
        np.testing.assert_array_equal(to_host(segkit.soft_vote(views, [1, 2, 3])), exp_labels)


def test_strided_views_use_the_general_path():
    import cupy

    base = cupy.asarray(model_probs(2, 6, 80, 120, seed=2).astype(np.float16))
    models = [base[0, :, :40, :60], cupy.ascontiguousarray(base[1, :, 40:, 60:]),
              base[1, :, ::2, ::2]]  # different strides: no "uniform" fast path; the last is copied
    host = [to_host(m) for m in models]
    np.testing.assert_array_equal(to_host(segkit.soft_vote(models, [1, 2, 3])),
                                  reference(host, [1, 2, 3]))


def test_torch_cuda_tensors_round_trip():
    torch = pytest.importorskip("torch")
    probs = model_probs(3, 4, 50, 70, seed=4).astype(np.float16)
    tensors = [torch.from_numpy(p).cuda() for p in probs]
    labels, mean = segkit.soft_vote(tensors, [1, 1, 2], return_probs=True)
    assert isinstance(labels, torch.Tensor) and labels.is_cuda and labels.dtype == torch.uint8
    exp_labels, exp_mean = reference(list(probs), [1, 1, 2], return_probs=True)
    np.testing.assert_array_equal(to_host(labels), exp_labels)
    np.testing.assert_array_equal(to_host(mean), exp_mean)


def test_nan_is_reported_with_the_model():
    import cupy

    probs = [cupy.full((3, 8, 8), 1 / 3, cupy.float16) for _ in range(2)]
    probs[1][1, 2, 3] = cupy.nan
    with pytest.raises(ValueError, match=r"probs\[1\] contains NaN \(first at index \(1, 2, 3\)\)"):
        segkit.soft_vote(probs)


def test_empty_batch_and_host_input():
    import cupy

    empty = [cupy.zeros((0, 3, 5, 5), cupy.float32)] * 2
    assert segkit.soft_vote(empty).shape == (0, 5, 5)
    probs = model_probs(2, 3, 9, 11, seed=5)
    out = segkit.soft_vote(list(probs), backend="cuda")
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, reference(list(probs)))
