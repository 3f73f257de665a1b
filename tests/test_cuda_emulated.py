"""The CUDA kernels' logic on the host (see tests/cuda_emu.py): each kernel against its
reference with the argument lists the CUDA backend builds; the emulation's own launch checks;
and every op's real CUDA runner on the emulated GPU: results, empty inputs, and the stream
rule (torch tensors on torch's current stream, everything else on CuPy's)."""
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
    for block in (256, 33):  # the runner's block, and one smaller than the 70^2 bins
        counts[:] = 0
        out_bad[:] = 0
        kernels["confusion"].launch(name, args, grid=3, block=block)  # threads at once
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
    kernels.launch(name, args, grid=3, block=256, shared_mem=shared)  # 256 threads at once
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


# ---- the emulation's launch checks ---------------------------------------------------------
import segkit  # noqa: E402
from segkit import _config  # noqa: E402

from .conftest import to_host  # noqa: E402
from .cuda_emu import LaunchError, TorchCudaTensor  # noqa: E402

_BLOCK_SOURCE = r"""
extern "C" __global__ void reverse_in_block(const int* in, int* out) {
  __shared__ int tile[1024];
  const int t = threadIdx.x, base = blockIdx.x * blockDim.x;
  tile[t] = in[base + t];
  __syncthreads();  // every thread reads another's value
  out[base + t] = tile[blockDim.x - 1 - t];
}
extern "C" __global__ void divergent_barrier(int* out) {
  if (threadIdx.x % 2) __syncthreads();
  out[threadIdx.x] = 1;
}
#define TILE 64  // a shared tile sized for the block: the kernel asks for blocks of TILE
#define TILE_SUM_KERNEL(NAME, T)                                                         \
  extern "C" __global__ void __launch_bounds__(TILE) NAME(const T* in, T* out) {         \
    __shared__ T tile[TILE];                                                             \
    tile[threadIdx.x] = in[blockIdx.x * TILE + threadIdx.x];                             \
    __syncthreads();                                                                     \
    if (threadIdx.x == 0) {                                                              \
      T s = 0;                                                                           \
      for (int i = 0; i < TILE; ++i) s += tile[i];                                       \
      out[blockIdx.x] = s;                                                               \
    }                                                                                    \
  }
TILE_SUM_KERNEL(tile_sum_i32, int)
extern "C" __global__ void dynamic_staging(int* out, int m) {
  extern __shared__ int staged[];
  for (int i = threadIdx.x; i < m; i += blockDim.x) staged[i] = i;
  __syncthreads();
  out[threadIdx.x] = staged[m - 1];
}
"""


@pytest.fixture(scope="module")
def block_kernels(tmp_path_factory):
    try:
        return HostKernels("blocks", tmp_path_factory.mktemp("cuda_emu_blocks"), _BLOCK_SOURCE)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("block", [1, 7, 256])
def test_threads_of_a_block_meet_at_the_barrier(block_kernels, block):
    src = np.arange(2 * block, dtype=np.int32)
    out = np.zeros_like(src)
    block_kernels.launch("reverse_in_block", (src, out), grid=(2,), block=(block,))
    np.testing.assert_array_equal(out, src.reshape(2, block)[:, ::-1].ravel())


def test_kernels_get_the_block_they_ask_for(block_kernels):
    assert block_kernels.blocks == {"tile_sum_i32": 64}
    src = np.arange(3 * 64, dtype=np.int32)
    out = np.zeros(3, np.int32)
    block_kernels.launch("tile_sum_i32", (src, out), grid=3, block=64)
    np.testing.assert_array_equal(out, src.reshape(3, 64).sum(1))
    for block in (32, 128):  # CUDA would run 32 (half the tile unread) and refuse 128
        with pytest.raises(LaunchError, match="asks for exactly 64"):
            block_kernels.launch("tile_sum_i32", (src, out), grid=3, block=block)


def test_launches_a_gpu_refuses_fail(block_kernels):
    out = np.zeros(2048, np.int32)
    with pytest.raises(LaunchError, match="at most 1024"):
        block_kernels.launch("reverse_in_block", (out, out), grid=1, block=2048)
    with pytest.raises(LaunchError, match="index x only"):
        block_kernels.launch("reverse_in_block", (out, out), grid=1, block=(4, 2, 1))
    with pytest.raises(LaunchError, match="not reached by every thread"):
        block_kernels.launch("divergent_barrier", (out,), grid=1, block=4)
    block_kernels.launch("dynamic_staging", (out, np.int32(10)), grid=1, block=4, shared_mem=40)
    assert (out[:4] == 9).all()
    with pytest.raises(LaunchError, match="past its 36 bytes of dynamic shared memory"):
        block_kernels.launch("dynamic_staging", (out, np.int32(10)), grid=1, block=4,
                             shared_mem=36)


# ---- the ops' CUDA runners on the emulated GPU -----------------------------------------------
_RNG = np.random.default_rng(14)
MASKS = blob_masks(2, 9, 13, 5, noise=0.3, seed=14)
PROBS = [_RNG.dirichlet(np.ones(4), (2, 5, 8)).transpose(0, 3, 1, 2).astype(np.float16)
         for _ in range(3)]
UNARY = _RNG.standard_normal((1, 3, 10, 12)).astype(np.float32)
IMAGE = _RNG.integers(0, 256, (1, 10, 12, 3)).astype(np.uint8)

#: op -> call(make input, backend): every op once, inputs made by `make`
OPS = {
    "mode_filter": lambda a, b: segkit.mode_filter(a(MASKS), ties="first", ignore_index=0,
                                                   backend=b),
    "mode_filter_widened": lambda a, b: segkit.mode_filter(a(MASKS.astype(np.int8)),
                                                           backend=b),
    "confusion_matrix": lambda a, b: segkit.confusion_matrix(a(MASKS), a(MASKS[::-1].copy()),
                                                             5, backend=b),
    "soft_vote": lambda a, b: segkit.soft_vote([a(p) for p in PROBS], [1, 2, 3],
                                               return_probs=True, backend=b),
    "convcrf": lambda a, b: segkit.convcrf(a(UNARY), a(IMAGE), blur=2, num_iter=2, backend=b),
    "convcrf_labels": lambda a, b: segkit.convcrf_labels(a(UNARY), a(IMAGE), num_iter=2,
                                                         filter_size=5, blur=1, backend=b),
}
SIDE = 0x51DE0  # the emulation's `side = torch.cuda.Stream()`


def _assert_same(out, expected, op):
    outs = out if isinstance(out, tuple) else (out,)
    exps = expected if isinstance(expected, tuple) else (expected,)
    for o, e in zip(outs, exps, strict=True):
        o = to_host(o)
        assert o.dtype == e.dtype and o.shape == e.shape
        if op == "convcrf":
            from .test_convcrf import assert_scores_match
            assert_scores_match(o, e)
        else:
            np.testing.assert_array_equal(o, e)


def _expected(op):
    return OPS[op](lambda x: x, "numpy")


@pytest.mark.parametrize("op", OPS)
def test_torch_tensors_run_on_torch_current_stream(emulated_gpu, op):
    """Under `torch.cuda.stream(side)` every allocation, copy and launch of the op is on
    `side`, although CuPy's own current stream is another one, which the op leaves current."""
    gpu = emulated_gpu
    cupy = gpu.module
    with cupy.cuda.Stream() as cupy_stream, gpu.torch_stream(SIDE):
        gpu.clear()
        out = OPS[op](TorchCudaTensor, "auto")
        assert cupy.cuda.get_current_stream() == cupy_stream
    assert gpu.launches() and {e.kind for e in gpu.events} >= {"alloc", "launch"}
    assert gpu.streams() == {SIDE}, gpu.events
    _assert_same(out, _expected(op), op)


@pytest.mark.parametrize("op", OPS)
def test_cupy_and_host_inputs_run_on_cupy_current_stream(emulated_gpu, op):
    gpu = emulated_gpu
    cupy = gpu.module
    for make, backend in ((cupy.asarray, "auto"), (lambda x: x, "cuda")):
        with cupy.cuda.Stream() as cupy_stream, gpu.torch_stream(SIDE):
            gpu.clear()
            out = OPS[op](make, backend)
        assert gpu.launches() and gpu.streams() == {cupy_stream.ptr}, gpu.events
        if backend == "cuda":  # host input: host output
            for o in (out if isinstance(out, tuple) else (out,)):
                assert type(o) is np.ndarray
        _assert_same(out, _expected(op), op)


def test_convcrf_module_runs_on_torch_current_stream(emulated_gpu):
    from segkit.torch import ConvCRF

    gpu = emulated_gpu
    with gpu.torch_stream(SIDE):
        out = ConvCRF(blur=2, num_iter=2)(TorchCudaTensor(UNARY), TorchCudaTensor(IMAGE))
    assert gpu.launches() and gpu.streams() == {SIDE}
    _assert_same(out, _expected("convcrf"), "convcrf")


def test_torch_tensor_on_a_second_device(emulated_gpu):
    gpu = emulated_gpu
    with gpu.torch_stream(SIDE):
        out = segkit.mode_filter(TorchCudaTensor(MASKS, device=1))
    assert {(e.stream, e.device) for e in gpu.events} == {(SIDE, 1)}
    np.testing.assert_array_equal(to_host(out), mode_reference(MASKS))


@pytest.mark.parametrize("block", [1024, 33])
def test_runners_work_with_any_block_cuda_allows(emulated_gpu, monkeypatch, block):
    monkeypatch.setattr(_config, "CUDA_BLOCK", block)
    for op in ("confusion_matrix", "soft_vote", "mode_filter"):
        emulated_gpu.clear()
        _assert_same(OPS[op](emulated_gpu.module.asarray, "cuda"), _expected(op), op)
        assert {e.block for e in emulated_gpu.launches()} == {(block,)}


def test_runners_refuse_blocks_cuda_refuses(emulated_gpu, monkeypatch):
    monkeypatch.setattr(_config, "CUDA_BLOCK", 2048)
    with pytest.raises(LaunchError, match="at most 1024"):
        OPS["soft_vote"](emulated_gpu.module.asarray, "cuda")


EMPTY = {  # op -> (call on empty inputs made by `make`, expected dtypes)
    "mode_filter": (lambda a, b: segkit.mode_filter(a(np.zeros((0, 4, 5), np.uint16)),
                                                    backend=b), (np.uint16,)),
    "mode_filter_image": (lambda a, b: segkit.mode_filter(a(np.zeros((3, 0), np.int8)),
                                                          backend=b), (np.int8,)),
    "confusion_matrix": (lambda a, b: segkit.confusion_matrix(
        a(np.zeros(0, np.int32)), a(np.zeros(0, np.int32)), 3, backend=b), (np.int64,)),
    "soft_vote": (lambda a, b: segkit.soft_vote(
        [a(np.zeros((0, 3, 4, 5), np.float16))] * 2, return_probs=True, backend=b),
        (np.uint8, np.float32)),
    "soft_vote_many_classes": (lambda a, b: segkit.soft_vote(
        [a(np.zeros((300, 0, 5), np.float32))], backend=b), (np.uint16,)),
    "convcrf": (lambda a, b: segkit.convcrf(a(np.zeros((0, 3, 6, 7), np.float32)),
                                            a(np.zeros((0, 6, 7, 3), np.uint8)), backend=b),
                (np.float32,)),
    "convcrf_labels": (lambda a, b: segkit.convcrf_labels(
        a(np.zeros((0, 3, 6, 7), np.float16)), a(np.zeros((0, 6, 7, 3), np.uint8)), backend=b),
        (np.uint8,)),
}


@pytest.mark.parametrize("op", EMPTY)
def test_empty_inputs_keep_shapes_and_dtypes(emulated_gpu, op):
    call, dtypes = EMPTY[op]
    expected = call(lambda x: x, "numpy")
    expected = expected if isinstance(expected, tuple) else (expected,)
    assert tuple(e.dtype for e in expected) == tuple(np.dtype(d) for d in dtypes)
    for make in (TorchCudaTensor, emulated_gpu.module.asarray):
        out = call(make, "auto")
        out = out if isinstance(out, tuple) else (out,)
        for o, e in zip(out, expected, strict=True):
            o = to_host(o)
            assert o.dtype == e.dtype and o.shape == e.shape and o.size == e.size
            np.testing.assert_array_equal(o, e)
