"""ConvCRF's CUDA backend.

* Everywhere: the CUDA kernels, compiled for the host by g++ (the exact source string CuPy
  compiles, with CUDA's thread indices emulated), driven by the backend's own launch sequence
  (`segkit.ops.convcrf_cuda.cuda_steps`) on a small grid, so that the grid-stride loops are split
  across emulated blocks and threads. This checks the kernels' logic without a GPU.
* With a GPU (needs_cuda): CuPy arrays and torch CUDA tensors against the torch reference,
  without copies, on torch's current stream.
"""
from __future__ import annotations

import numpy as np
import pytest

import segkit
from segkit.ops.convcrf import convcrf_params
from segkit.ops.convcrf_cuda import cuda_steps

from .conftest import to_host
from .cuda_emu import HostKernels
from .test_convcrf import CASES, assert_scores_match, scene, torch_reference


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    """(launch, empty) running csrc/cuda/convcrf.cu on the host: 3 blocks of 4 threads."""
    try:
        kernels = HostKernels("convcrf", tmp_path_factory.mktemp("cuda_emu"))
    except FileNotFoundError as exc:
        pytest.skip(str(exc))

    def launch(name, total, args):
        kernels.launch(name, args, grid=3, block=4)

    return launch, lambda shape: np.full(shape, np.nan, np.float32)


@pytest.mark.parametrize("n, c, h, w, k, blur, more", CASES)
def test_cuda_kernels_emulated_on_host(emulated, n, c, h, w, k, blur, more):
    launch, empty = emulated
    unary, image = scene(n, c, h, w, seed=n + c + h, kind=more.get("unary_kind", "logits"))
    kw = dict(filter_size=k, blur=blur, **more)
    ref = torch_reference(unary, image, **kw)
    scores = unary.copy()
    if scores.size:
        cuda_steps(scores, image.transpose(0, 3, 1, 2), convcrf_params(**kw), launch, empty)
    assert_scores_match(scores, ref)


def test_cuda_kernels_emulated_float_image_and_seed_preset(emulated):
    launch, empty = emulated
    unary, image = scene(1, 3, 12, 15, seed=7, kind="probs")
    ref = torch_reference(unary, image, preset="seed")
    scores = unary.copy()
    img = np.ascontiguousarray(image.transpose(0, 3, 1, 2)).astype(np.float32)
    cuda_steps(scores, img, convcrf_params("seed"), launch, empty)
    assert_scores_match(scores, ref)


# ---- on a GPU -----------------------------------------------------------------------------

@pytest.mark.needs_cuda
@pytest.mark.parametrize("n, c, h, w, k, blur, more", CASES)
def test_cupy_arrays_stay_on_device(n, c, h, w, k, blur, more):
    import cupy

    unary, image = scene(n, c, h, w, seed=n + c + h, kind=more.get("unary_kind", "logits"))
    kw = dict(filter_size=k, blur=blur, **more)
    ref = torch_reference(unary, image, **kw)
    out = segkit.convcrf(cupy.asarray(unary), cupy.asarray(image), **kw)
    assert isinstance(out, cupy.ndarray) and out.dtype == np.float32
    assert_scores_match(to_host(out), ref)


@pytest.mark.needs_cuda
@pytest.mark.parametrize("preset", ["convcrf", "seed"])
def test_cuda_presets_float16_and_layouts(preset):
    import cupy

    unary, image = scene(2, 5, 33, 47, seed=3, kind="probs", dtype=np.float16)
    kind = "logits" if preset == "seed" else "probs"
    ref = torch_reference(unary.astype(np.float32), image, preset=preset, unary_kind=kind)
    for img in (image, np.ascontiguousarray(image.transpose(0, 3, 1, 2))):
        out = segkit.convcrf(cupy.asarray(unary), cupy.asarray(img), preset=preset,
                             unary_kind=kind)
        assert_scores_match(to_host(out), ref)
    labels = segkit.convcrf_labels(cupy.asarray(unary), cupy.asarray(image), preset=preset,
                                   unary_kind=kind)
    assert isinstance(labels, cupy.ndarray) and labels.dtype == np.uint8
    np.testing.assert_array_equal(to_host(labels), ref.argmax(1))


@pytest.mark.needs_cuda
def test_torch_cuda_tensors_round_trip_on_the_current_stream():
    torch = pytest.importorskip("torch")
    from segkit.torch import ConvCRF

    unary, image = scene(3, 11, 64, 80, seed=5)
    ref = torch_reference(unary, image, filter_size=7, blur=2)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        u = torch.from_numpy(unary).cuda()
        img = torch.from_numpy(image).cuda()
        out = segkit.convcrf(u, img, filter_size=7, blur=2)
        mod = ConvCRF(filter_size=7, blur=2)(u, img)
    stream.synchronize()
    assert isinstance(out, torch.Tensor) and out.is_cuda and out.dtype == torch.float32
    assert_scores_match(to_host(out), ref)
    assert_scores_match(to_host(mod), ref)


@pytest.mark.needs_cuda
def test_cuda_backend_with_host_input_and_bad_values():
    unary, image = scene(1, 4, 20, 30, seed=6)
    ref = torch_reference(unary, image, blur=2)
    out = segkit.convcrf(unary, image, blur=2, backend="cuda")
    assert isinstance(out, np.ndarray)
    assert_scores_match(out, ref)
    unary[0, 1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        segkit.convcrf(unary, image, backend="cuda")
