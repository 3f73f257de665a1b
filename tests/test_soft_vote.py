"""segkit.soft_vote: every backend against the reference (labels and sums exactly equal),
hand-computed cases (ties, zero weights, float16 extremes, overflow), layouts (batches, empty,
strided, memory-mapped), and the errors."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import segkit
from segkit.reference.soft_vote import soft_vote as reference
from segkit.reference.soft_vote import weight_factors
from segkit.synthetic import model_probs

from .conftest import require_backend, to_host

ALL_BACKENDS = ("numpy", "numba", "cpp", "cuda")
F16 = np.float16
TINY = float(np.float16(2.0 ** -24))            # smallest float16 subnormal
BIG_SUB = float(np.float16(2.0 ** -14 - 2.0 ** -24))  # largest float16 subnormal
MAX16 = 65504.0
FMAX = float(np.finfo(np.float32).max)


@pytest.fixture(params=ALL_BACKENDS)
def backend(request):
    require_backend(request.param)
    return request.param


def vote(probs, weights=None, backend="numpy", **kw):
    """soft_vote with host results (CuPy results are copied back)."""
    out = segkit.soft_vote(probs, weights, backend=backend, return_probs=True, **kw)
    return tuple(to_host(o) for o in out)


def chw(*pixels_per_class, dtype=F16):
    """(C, 1, W) array from per-class rows: chw([a0, a1], [b0, b1]) has C=2, W=2."""
    return np.array([[row] for row in pixels_per_class], dtype=dtype)


# ---------------------------------------------------------------------------------------------
# Hand-computed cases: (models, weights, expected labels (1, W), expected mean (C, 1, W)).
# The values are exact in float16 and every product and sum below is exact in float32, so the
# expected means are worked out on paper.
# ---------------------------------------------------------------------------------------------
HAND = {
    # two classes exactly tied in every model: the smaller class wins
    "tie": ([chw([0.5], [0.5])], None, [[0]], chw([0.5], [0.5], dtype=np.float32)),
    # one model: its own argmax; 3 classes
    "one-model": ([chw([0.125, 0.5], [0.75, 0.25], [0.125, 0.25])], None, [[1, 0]],
                  chw([0.125, 0.5], [0.75, 0.25], [0.125, 0.25], dtype=np.float32)),
    # equal weights: (0.375, 0.625) -> 1; weights 3:1 give (0.5, 0.5) exactly -> tie -> 0
    "equal-weights": ([chw([0.625], [0.375]), chw([0.125], [0.875])], None, [[1]],
                      chw([0.375], [0.625], dtype=np.float32)),
    "weights-3-1-tie": ([chw([0.625], [0.375]), chw([0.125], [0.875])], [3, 1], [[0]],
                        chw([0.5], [0.5], dtype=np.float32)),
    "weights-unnormalised": ([chw([0.625], [0.375]), chw([0.125], [0.875])], [0.75, 0.25],
                             [[0]], chw([0.5], [0.5], dtype=np.float32)),
    # a model with weight 0 is not counted, however confident
    "zero-weight": ([chw([0.75], [0.25]), chw([0.0], [1.0]), chw([0.75], [0.25])], [1, 0, 1],
                    [[0]], chw([0.75], [0.25], dtype=np.float32)),
    # float16 extremes, two models, equal weights (factors 0.5):
    #   px0: subnormal vs 0 -> 0;  px1: 0 vs -0 -> tie -> 0;  px2: 65504 in both classes -> 0
    #   px3: 1 vs 1 - 2^-11 -> 0;  px4: largest subnormal vs smallest normal -> 1
    #   px5: the smallest subnormal, halved: 2^-25 in both classes -> tie -> 0
    "float16-extremes": (
        [chw([TINY, 0.0, MAX16, 1.0, BIG_SUB, TINY], [0.0, -0.0, MAX16, 1 - 2 ** -11, 2 ** -14, 0.0]),
         chw([TINY, 0.0, MAX16, 1.0, BIG_SUB, 0.0], [0.0, -0.0, MAX16, 1 - 2 ** -11, 2 ** -14, TINY])],
        None, [[0, 0, 0, 0, 1, 0]],
        chw([TINY, 0.0, MAX16, 1.0, BIG_SUB, TINY / 2],
            [0.0, 0.0, MAX16, 1 - 2 ** -11, 2 ** -14, TINY / 2], dtype=np.float32)),
    # float32 infinities and the largest float: inf ties go to the smaller class
    "float32-inf": ([chw([FMAX], [np.inf], [0.0], dtype=np.float32),
                     chw([FMAX], [0.0], [np.inf], dtype=np.float32)], None, [[1]],
                    chw([FMAX], [np.inf], [np.inf], dtype=np.float32)),
}


@pytest.mark.parametrize("case", sorted(HAND))
def test_hand_cases(backend, case):
    models, weights, expected, expected_mean = HAND[case]
    labels, mean = vote(models, weights, backend)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, np.array(expected))
    np.testing.assert_array_equal(mean, expected_mean)
    np.testing.assert_array_equal(np.signbit(mean), np.signbit(expected_mean))  # -0 sums to +0


def test_docstring_example():
    a = np.array([[[0.625]], [[0.375]]], np.float16)
    b = np.array([[[0.125]], [[0.875]]], np.float16)
    assert segkit.soft_vote([a, b], backend="numpy")[0, 0] == 1
    assert segkit.soft_vote([a, b], weights=[3, 1], backend="numpy")[0, 0] == 0


def test_labels_only_matches_return_probs(backend):
    probs = list(model_probs(3, 5, 9, 13, seed=4))
    labels = segkit.soft_vote(probs, [1, 2, 3], backend=backend)
    labels = to_host(labels)
    np.testing.assert_array_equal(labels, reference(probs, [1, 2, 3]))


# ---------------------------------------------------------------------------------------------
# Random inputs: labels and float32 sums exactly equal to the reference (not just within 1e-6:
# the arithmetic is fixed, see segkit/reference/soft_vote.py).
# ---------------------------------------------------------------------------------------------
SHAPES = [(11, 33, 70), (2, 5, 64, 64), (3, 1, 1), (4, 1, 17), (5, 17, 1), (1, 8, 9),
          (0, 3, 4, 5), (2, 3, 0, 5), (6, 2050, 1)]


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("m", [1, 2, 5])
def test_random_equals_reference(backend, dtype, shape, m):
    rng = np.random.default_rng(sum(shape) * 10 + m)
    probs = [rng.random(shape).astype(dtype) for _ in range(m)]
    weights = rng.random(m) * (rng.random(m) > 0.3)
    weights[rng.integers(m)] += 0.5  # at least one positive
    expected_labels, expected_mean = reference(probs, weights, return_probs=True)
    labels, mean = vote(probs, weights, backend)
    assert labels.shape == shape[:-3] + shape[-2:] and mean.shape == shape
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_array_equal(mean, expected_mean)


@pytest.mark.parametrize("weights", [None, [0.1, 0.7, 0.2, 0.3]], ids=["equal", "uneven"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_near_ties_agree_exactly(backend, dtype, weights):
    """Coarsely quantised probabilities make exact ties common (equal weights) and near-ties
    decided by the last bit (uneven weights, factors like 0.1/1.3 that round): any change of
    summation order or a fused multiply-add would flip some sums and labels."""
    rng = np.random.default_rng(7)
    probs = [(rng.integers(0, 5, (6, 40, 50)) / 4).astype(dtype) for _ in range(4)]
    expected_labels, expected_mean = reference(probs, weights, return_probs=True)
    labels, mean = vote(probs, weights, backend)
    np.testing.assert_array_equal(mean, expected_mean)
    np.testing.assert_array_equal(labels, expected_labels)
    top = np.sort(expected_mean, axis=0)
    close = top[-1] - top[-2] <= 4 * np.spacing(top[-1])
    assert close.mean() > 0.05  # the test really exercises ties and near-ties


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_simd_paths_agree(simd_isa, dtype):
    """Each SIMD path (AVX-512, AVX2 + F16C, baseline with the integer half conversion) on
    planar tiles with a ragged end, row tiles of strided views, and rows narrower than a
    vector (the scalar path)."""
    probs = model_probs(5, 11, 31, 90, seed=3).astype(dtype)
    cases = [list(probs), [p[:, :, 3:70] for p in probs], [p[:, :, :7] for p in probs]]
    for models in cases:
        expected = reference(models, [1, 2, 3, 4, 5], return_probs=True)
        for got, exp in zip(vote(models, [1, 2, 3, 4, 5], "cpp"), expected):
            np.testing.assert_array_equal(got, exp)


def test_many_classes_give_uint16(backend):
    rng = np.random.default_rng(0)
    probs = [rng.random((300, 4, 5)).astype(np.float32) for _ in range(2)]
    labels, mean = vote(probs, None, backend)
    assert labels.dtype == np.uint16
    np.testing.assert_array_equal(labels, reference(probs))
    assert labels.max() > 255


def test_whole_float16_range_converts_exactly(backend):
    """Every finite float16 bit pattern, as one model with weight 1: the mean is the exact
    float32 value (a single factor-1 product; the sum starts at +0, so -0 becomes +0)."""
    bits = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    values = bits.view(np.float16)
    finite = values[np.isfinite(values)]
    probs = np.stack([finite, np.zeros_like(finite)])[:, None, :]  # (2, 1, n)
    _, mean = vote([probs], None, backend)
    np.testing.assert_array_equal(mean[0, 0].view(np.uint32),
                                  (finite.astype(np.float32) + np.float32(0)).view(np.uint32))


# ---------------------------------------------------------------------------------------------
# Layouts: strided views, mixed layouts, negative strides, memory-mapped files, stacked input.
# ---------------------------------------------------------------------------------------------
def test_strided_and_mixed_layouts(backend):
    rng = np.random.default_rng(1)
    base = rng.random((2, 6, 40, 60)).astype(np.float16)
    models = [
        np.ascontiguousarray(base[0, :, :20, :30]),  # contiguous
        base[1, :, :20, :30],                        # row stride 60 (not planar)
        base[0, :, ::2, ::2],                        # column stride 2: copied for the kernels
        base[1, ::-1, 20:, 30:][::-1],               # negative then positive class stride
        np.asfortranarray(base[0, :, 20:, :30]),     # Fortran order
    ]
    for m in models:
        assert m.shape == (6, 20, 30)
    expected = reference(models, [1, 2, 3, 4, 5], return_probs=True)
    for got, exp in zip(vote(models, [1, 2, 3, 4, 5], backend), expected):
        np.testing.assert_array_equal(got, exp)
    assert np.shares_memory(models[1], base)  # the views were not copied by the test itself


def test_memory_mapped_inputs(backend, tmp_path):
    probs = model_probs(3, 4, 21, 35, seed=9).astype(np.float16)
    paths = []
    for i, p in enumerate(probs):
        np.save(tmp_path / f"{i}.npy", p)
        paths.append(tmp_path / f"{i}.npy")
    mapped = [np.load(p, mmap_mode="r") for p in paths]
    assert all(isinstance(m, np.memmap) for m in mapped)
    expected = reference(list(probs), [2, 1, 1], return_probs=True)
    for got, exp in zip(vote(mapped, [2, 1, 1], backend), expected):
        np.testing.assert_array_equal(got, exp)


def test_stacked_array_is_m_models():
    probs = model_probs(3, 4, 8, 8, seed=2)
    np.testing.assert_array_equal(segkit.soft_vote(probs), reference(list(probs)))
    np.testing.assert_array_equal(segkit.soft_vote(tuple(probs)), reference(list(probs)))


def test_torch_cpu_tensors():
    torch = pytest.importorskip("torch")
    probs = model_probs(2, 3, 10, 12, seed=5)
    out = segkit.soft_vote([torch.from_numpy(p) for p in probs], backend="cpp")
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, reference(list(probs)))


def test_weights_default_equal_and_factors():
    np.testing.assert_array_equal(weight_factors(None, 4), np.full(4, 0.25, np.float32))
    np.testing.assert_array_equal(weight_factors([2, 6], 2), np.array([0.25, 0.75], np.float32))


def test_inputs_are_not_modified(backend):
    probs = [p.copy() for p in model_probs(2, 3, 6, 7, seed=1)]
    before = [p.copy() for p in probs]
    vote(probs, [1, 3], backend)
    for p, b in zip(probs, before):
        np.testing.assert_array_equal(p, b)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=st.integers(1, 4), c=st.integers(1, 7), h=st.integers(1, 9), w=st.integers(1, 40),
       n=st.integers(0, 2), half=st.booleans(), seed=st.integers(0, 2**16),
       levels=st.sampled_from([2, 8, 1000]))
def test_hypothesis_cpp_numba(m, c, h, w, n, half, seed, levels):
    rng = np.random.default_rng(seed)
    shape = (c, h, w) if n == 0 else (n, c, h, w)
    dtype = np.float16 if half else np.float32
    probs = [(rng.integers(0, levels + 1, shape) / levels).astype(dtype) for _ in range(m)]
    weights = list(rng.integers(0, 4, m).astype(float))
    weights[0] += 1
    expected = reference(probs, weights, return_probs=True)
    for name in ("cpp", "numba"):
        for got, exp in zip(vote(probs, weights, name), expected):
            np.testing.assert_array_equal(got, exp)


# ---------------------------------------------------------------------------------------------
# Errors: each names the argument (and the model) and the bad value.
# ---------------------------------------------------------------------------------------------
def _p(shape=(3, 4, 5), dtype=np.float16, value=1 / 3):
    return np.full(shape, value, dtype)


BAD = [
    ("empty", [], None, ValueError, "at least one model"),
    ("not-a-sequence", 5, None, TypeError, "sequence of arrays"),
    ("string", "abc", None, TypeError, "sequence of arrays"),
    ("2-D", [_p((4, 5))], None, ValueError, r"probs\[0\] must be \(C, H, W\) or \(N, C, H, W\)"),
    ("shape", [_p(), _p((3, 4, 6))], None, ValueError,
     r"probs\[1\] has shape \(3, 4, 6\) but probs\[0\] has \(3, 4, 5\)"),
    ("classes", [_p(), _p((2, 4, 5))], None, ValueError,
     r"probs\[1\] has 2 classes but probs\[0\] has 3"),
    ("batched-vs-not", [_p(), _p((1, 3, 4, 5))], None, ValueError, "mix no batched"),
    ("float64", [_p(dtype=np.float64)], None, TypeError,
     r"probs\[0\] has dtype float64; expected float16 or float32"),
    ("int", [_p(), _p(dtype=np.int32)], None, TypeError, r"probs\[1\] has dtype int32"),
    ("mixed-dtypes", [_p(), _p(dtype=np.float32)], None, TypeError,
     r"probs\[1\] is float32 but probs\[0\] is float16"),
    ("zero-classes", [_p((0, 4, 5))], None, ValueError, "at least one class"),
    ("weights-count", [_p(), _p()], [1.0], ValueError, "weights has 1 values for 2 models"),
    ("weights-negative", [_p(), _p()], [1.0, -0.5], ValueError,
     r"weights\[1\] is -0.5; weights must be >= 0"),
    ("weights-nan", [_p(), _p()], [float("nan"), 1], ValueError, r"weights\[0\] is nan"),
    ("weights-inf", [_p(), _p()], [1, float("inf")], ValueError, r"weights\[1\] is inf"),
    ("weights-zero", [_p(), _p()], [0, 0], ValueError, "weights are all zero"),
    ("weights-text", [_p()], "1", TypeError, "weights must be a sequence of numbers"),
    ("weights-2d", [_p()], [[1]], ValueError, "weights must be a 1-D sequence"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input(backend, case):
    _, probs, weights, exc, match = case
    with pytest.raises(exc, match=match):
        segkit.soft_vote(probs, weights, backend=backend)


def test_nan_names_the_model(backend):
    probs = [_p(), _p(), _p()]
    probs[1] = probs[1].copy()
    probs[1][2, 1, 3] = np.nan
    with pytest.raises(ValueError, match=r"probs\[1\] contains NaN \(first at index "
                                         r"\(2, 1, 3\)\)"):
        segkit.soft_vote(probs, backend=backend)
    # a NaN in a model whose weight is 0 is never read
    labels = segkit.soft_vote(probs, [1, 0, 1], backend=backend)
    assert labels.shape == (4, 5)


def test_plus_and_minus_inf_give_nan_error(backend):
    a = np.full((2, 1, 1), np.inf, np.float32)
    b = np.full((2, 1, 1), -np.inf, np.float32)
    with pytest.raises(ValueError, match="no model holds a NaN"):
        segkit.soft_vote([a, b], backend=backend)


def test_bad_backend_and_flag():
    with pytest.raises(ValueError, match="backend must be one of"):
        segkit.soft_vote([_p()], backend="fortran")
    with pytest.raises(TypeError, match="return_probs must be True or False"):
        segkit.soft_vote([_p()], return_probs="yes")


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("shape, classes", [((0, 3, 4, 5), 3), ((2, 3, 0, 5), 3),
                                            ((3, 4, 0), 3), ((300, 0, 2), 300)])
def test_empty_inputs_keep_dtypes(backend, dtype, shape, classes):
    """Empty batches and images: labels of the class count's dtype, the mean in float32."""
    probs = [np.zeros(shape, dtype)] * 2
    labels, mean = (to_host(o) for o in segkit.soft_vote(probs, return_probs=True,
                                                         backend=backend))
    assert labels.dtype == (np.uint8 if classes <= 256 else np.uint16)
    assert labels.shape == shape[:-3] + shape[-2:] and labels.size == 0
    assert mean.dtype == np.float32 and mean.shape == shape
    assert to_host(segkit.soft_vote(probs, backend=backend)).dtype == labels.dtype
