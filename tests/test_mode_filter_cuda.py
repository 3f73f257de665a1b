"""The CUDA backend on device arrays: CuPy arrays and torch CUDA tensors, without copies.
These need a GPU; elsewhere they are skipped with the reason (the sources are still compiled
by test_cuda_sources.py)."""
from __future__ import annotations

import numpy as np
import pytest

import segkit
from segkit.reference.mode_filter import mode_filter as reference
from segkit.synthetic import blob_masks

from .conftest import to_host

pytestmark = pytest.mark.needs_cuda


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64])
@pytest.mark.parametrize("ties", ["keep", "smallest", "first"])
@pytest.mark.parametrize("anchor", ["center", "topleft"])
def test_cupy_arrays_stay_on_device(dtype, anchor, ties):
    import cupy

    masks = blob_masks(2, 33, 70, 5, noise=0.2, scale=6, seed=7).astype(dtype)
    expected = reference(masks, anchor=anchor, ties=ties, ignore_index=1)
    out = segkit.mode_filter(cupy.asarray(masks), anchor=anchor, ties=ties, ignore_index=1)
    assert isinstance(out, cupy.ndarray) and out.dtype == dtype
    np.testing.assert_array_equal(to_host(out), expected)


def test_torch_cuda_tensors_round_trip():
    torch = pytest.importorskip("torch")
    masks = blob_masks(3, 40, 50, 6, noise=0.1, seed=8)
    t = torch.from_numpy(masks.astype(np.int64)).cuda()
    out = segkit.mode_filter(t)
    assert isinstance(out, torch.Tensor) and out.is_cuda and out.dtype == torch.int64
    np.testing.assert_array_equal(to_host(out), reference(masks.astype(np.int64)))


def test_strided_cupy_view():
    import cupy

    masks = blob_masks(1, 30, 80, 5, noise=0.2, seed=9)[0]
    big = cupy.zeros((60, 160), cupy.uint8)
    big[::2, ::2] = cupy.asarray(masks)
    np.testing.assert_array_equal(to_host(segkit.mode_filter(big[::2, ::2])), reference(masks))


def test_host_input_with_cuda_backend_returns_numpy():
    masks = blob_masks(1, 20, 20, 4, seed=10)[0]
    out = segkit.mode_filter(masks, backend="cuda")
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, reference(masks))
