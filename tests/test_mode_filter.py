"""segkit.mode_filter: every backend against the reference, hand-computed cases, errors."""
from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import segkit
from segkit import _backend
from segkit.reference.mode_filter import mode_filter as reference
from segkit.reference.mode_filter import seed_mode_filter
from segkit.synthetic import blob_masks

from .conftest import FAST_BACKENDS, require_backend, to_host

A = np.array  # brevity in the tables

# ---------------------------------------------------------------------------------------------
# Hand-computed cases: (input, keyword arguments, expected). Worked out on paper from the
# contract, not from any implementation.
# ---------------------------------------------------------------------------------------------
TIE_IMG = A([[5, 5, 9],
             [7, 1, 7],
             [9, 0, 0]])
HAND_CASES = {
    "outlier-removed": (A([[1, 1, 1], [1, 5, 1], [1, 1, 1]]), {}, A([[1, 1, 1]] * 3)),
    "ties-keep": (TIE_IMG, {"ties": "keep"}, A([[5, 5, 9], [5, 0, 0], [9, 0, 0]])),
    "ties-smallest": (TIE_IMG, {"ties": "smallest"}, A([[5, 5, 1], [5, 0, 0], [0, 0, 0]])),
    "ties-first": (TIE_IMG, {"ties": "first"}, A([[5, 5, 5], [5, 5, 0], [7, 7, 0]])),
    "topleft-keep": (TIE_IMG, {"anchor": "topleft", "ties": "keep"},
                     A([[5, 5, 9], [7, 0, 7], [9, 0, 0]])),
    "topleft-smallest": (TIE_IMG, {"anchor": "topleft", "ties": "smallest"}, A([[0] * 3] * 3)),
    "topleft-first": (TIE_IMG, {"anchor": "topleft", "ties": "first"}, A([[5] * 3] * 3)),
    "borders-no-ignore": (A([[0, 0, 1], [0, 1, 1], [0, 0, 1]]), {},
                          A([[0, 0, 1], [0, 0, 1], [0, 0, 1]])),
    "ignore-does-not-vote": (A([[0, 0, 1], [0, 1, 1], [0, 0, 1]]), {"ignore_index": 0},
                             A([[0, 0, 1], [0, 1, 1], [0, 0, 1]])),
    "all-ignore": (A([[7, 7], [7, 7]]), {"ignore_index": 7}, A([[7, 7], [7, 7]])),
    "ignore-pixel-unchanged": (A([[2, 2, 2], [2, 9, 2], [2, 2, 2]]), {"ignore_index": 9},
                               A([[2, 2, 2], [2, 9, 2], [2, 2, 2]])),
    "1x1": (A([[4]]), {}, A([[4]])),
    "1x1-size5": (A([[4]]), {"size": 5, "anchor": "topleft"}, A([[4]])),
    "1xN": (A([[1, 2, 1, 2, 2]]), {}, A([[1, 1, 2, 2, 2]])),
    "1xN-keep": (A([[3, 2, 3, 2]]), {"ties": "keep"}, A([[3, 3, 2, 2]])),
    "1xN-smallest": (A([[3, 2, 3, 2]]), {"ties": "smallest"}, A([[2, 3, 2, 2]])),
    "1xN-first": (A([[3, 2, 3, 2]]), {"ties": "first"}, A([[3, 3, 2, 3]])),
    "Nx1-first": (A([[3], [2], [3], [2]]), {"ties": "first"}, A([[3], [3], [2], [3]])),
    "2x2-keep": (A([[1, 2], [2, 1]]), {"ties": "keep"}, A([[1, 2], [2, 1]])),
    "2x2-smallest": (A([[1, 2], [2, 1]]), {"ties": "smallest"}, A([[1, 1], [1, 1]])),
    "2x2-first": (A([[2, 1], [1, 2]]), {"ties": "first"}, A([[2, 2], [2, 2]])),
    "smaller-than-window": (A([[3, 3, 4], [4, 4, 4]]), {"size": 5}, A([[4, 4, 4], [4, 4, 4]])),
    "size1-identity": (TIE_IMG, {"size": 1}, TIE_IMG),
}
# The tie image with labels mapped monotonically above 255 (uint16): same answers, mapped.
_U16 = {0: 256, 1: 300, 5: 500, 7: 700, 9: 65535}
_to16 = np.vectorize(_U16.get)
for key in ("ties-keep", "ties-smallest", "ties-first", "topleft-keep"):
    img, kw, exp = HAND_CASES[key]
    HAND_CASES[f"{key}-uint16"] = (_to16(img).astype(np.uint16), kw, _to16(exp).astype(np.uint16))


def _as_dtype(x, dtype):
    return x if x.dtype == np.uint16 else x.astype(dtype)


@pytest.mark.parametrize("case", sorted(HAND_CASES))
def test_reference_hand_cases(case):
    img, kw, expected = HAND_CASES[case]
    out = reference(_as_dtype(img, np.uint8), **kw)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.int64])
@pytest.mark.parametrize("case", sorted(HAND_CASES))
def test_hand_cases(fast_backend, case, dtype):
    img, kw, expected = HAND_CASES[case]
    img = _as_dtype(img, dtype)
    out = segkit.mode_filter(img, backend=fast_backend, **kw)
    out = to_host(out)
    assert out.dtype == img.dtype and out.shape == img.shape
    np.testing.assert_array_equal(out, expected)


# ---------------------------------------------------------------------------------------------
# The original recipe's loop.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(3, 3), (7, 11), (20, 30), (3, 40)])
def test_topleft_first_reproduces_seed_loop(shape):
    mask = blob_masks(1, *shape, num_classes=4, noise=0.3, scale=4, seed=sum(shape))[0]
    expected = seed_mode_filter(mask)
    np.testing.assert_array_equal(reference(mask, anchor="topleft", ties="first"), expected)
    for name in ("numba", "cpp"):
        out = segkit.mode_filter(mask, anchor="topleft", ties="first", backend=name)
        np.testing.assert_array_equal(out, expected)


def test_seed_loop_large_image_cpp():
    """Bit for bit on a full 128 x 160 mask (the SIMD path with overlapping tail blocks)."""
    mask = blob_masks(1, 128, 160, noise=0.2, seed=3)[0]
    out = segkit.mode_filter(mask, anchor="topleft", ties="first", backend="cpp")
    np.testing.assert_array_equal(out, seed_mode_filter(mask))


# ---------------------------------------------------------------------------------------------
# Random blobby masks with noise, every option, against the reference.
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _random_case(shape, dtype, num_classes, seed):
    masks = blob_masks(shape[0], shape[1], shape[2], num_classes, noise=0.15, scale=6,
                       seed=seed, dtype=np.int64)
    if np.dtype(dtype) == np.uint16:
        masks = masks * 997 % 65536  # labels above 255, order scrambled
    return masks.astype(dtype)


@functools.lru_cache(maxsize=None)
def _expected(shape, dtype, num_classes, seed, size, anchor, ties, ignore):
    return reference(_random_case(shape, dtype, num_classes, seed), size, anchor=anchor,
                     ties=ties, ignore_index=ignore)


RANDOM_SHAPES = [(1, 37, 53), (2, 20, 131), (3, 9, 70)]


@pytest.mark.parametrize("ignore", [None, 2])
@pytest.mark.parametrize("ties", ["keep", "smallest", "first"])
@pytest.mark.parametrize("anchor", ["center", "topleft"])
@pytest.mark.parametrize("shape", RANDOM_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_random_masks_size3(fast_backend, shape, anchor, ties, ignore):
    masks = _random_case(shape, np.uint8, 5, 1)
    expected = _expected(shape, np.uint8, 5, 1, 3, anchor, ties, ignore)
    out = segkit.mode_filter(masks, anchor=anchor, ties=ties, ignore_index=ignore,
                             backend=fast_backend)
    np.testing.assert_array_equal(to_host(out), expected)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64])
@pytest.mark.parametrize("ties", ["keep", "smallest", "first"])
@pytest.mark.parametrize("anchor", ["center", "topleft"])
def test_cpp_every_simd_path(simd_isa, dtype, anchor, ties):
    """Each SIMD variant (base, AVX2, AVX-512 where present) on every label type; widths that
    leave a partial last vector."""
    shape = (2, 20, 131)
    ignore = int(_random_case(shape, dtype, 5, 2)[0, 0, 0])
    for ign in (None, ignore):
        expected = _expected(shape, dtype, 5, 2, 3, anchor, ties, ign)
        out = segkit.mode_filter(_random_case(shape, dtype, 5, 2), anchor=anchor, ties=ties,
                                 ignore_index=ign, backend="cpp")
        np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("size", [5, 7])
@pytest.mark.parametrize("ties", ["keep", "smallest", "first"])
@pytest.mark.parametrize("anchor", ["center", "topleft"])
def test_random_masks_larger_windows(fast_backend, size, anchor, ties):
    shape = (1, 23, 31)
    for ignore in (None, 1):
        expected = _expected(shape, np.int32, 4, 3, size, anchor, ties, ignore)
        out = segkit.mode_filter(_random_case(shape, np.int32, 4, 3), size, anchor=anchor,
                                 ties=ties, ignore_index=ignore, backend=fast_backend)
        np.testing.assert_array_equal(to_host(out), expected)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_random_masks_larger_windows_small_dtypes(fast_backend, dtype):
    shape = (2, 15, 19)
    expected = _expected(shape, dtype, 6, 4, 5, "center", "keep", None)
    out = segkit.mode_filter(_random_case(shape, dtype, 6, 4), 5, backend=fast_backend)
    np.testing.assert_array_equal(to_host(out), expected)


# ---------------------------------------------------------------------------------------------
# Layouts, batches and dtypes.
# ---------------------------------------------------------------------------------------------
def test_batches_of_zero_and_three(fast_backend):
    empty = np.zeros((0, 4, 5), np.uint8)
    out = segkit.mode_filter(empty, backend=fast_backend)
    assert out.shape == (0, 4, 5) and out.dtype == np.uint8
    masks = _random_case((3, 9, 70), np.uint8, 5, 1)
    out = segkit.mode_filter(masks, backend=fast_backend)
    out = to_host(out)
    for i in range(3):
        np.testing.assert_array_equal(out[i], reference(masks[i]))


@pytest.mark.parametrize("shape", [(0, 0), (0, 5), (5, 0)])
def test_empty_images(fast_backend, shape):
    out = segkit.mode_filter(np.zeros(shape, np.uint8), backend=fast_backend)
    assert out.shape == shape


def test_noncontiguous_and_fortran(fast_backend):
    masks = _random_case((1, 37, 53), np.uint8, 5, 1)[0]
    expected = reference(masks)
    big = np.zeros((74, 106), np.uint8)
    big[::2, ::2] = masks
    views = {"strided": big[::2, ::2], "fortran": np.asfortranarray(masks),
             "reversed": np.ascontiguousarray(masks[::-1])[::-1],
             "transposed": np.ascontiguousarray(masks.T).T}
    for name, view in views.items():
        out = segkit.mode_filter(view, backend=fast_backend)
        out = to_host(out)
        np.testing.assert_array_equal(out, expected, err_msg=name)


def test_row_padding_is_not_read(fast_backend):
    """Rows with padding between them (a view of a wider array): padding must not vote."""
    wide = np.full((20, 100), 9, np.uint8)
    wide[:, :70] = _random_case((1, 20, 70), np.uint8, 5, 5)[0]
    view = wide[:, :70]
    out = segkit.mode_filter(view, backend=fast_backend)
    np.testing.assert_array_equal(to_host(out), reference(view))


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.uint32])
def test_widened_dtypes(fast_backend, dtype):
    masks = _random_case((1, 12, 40), np.int32, 4, 6).astype(dtype)
    out = segkit.mode_filter(masks, backend=fast_backend)
    out = to_host(out)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, reference(masks))


def test_input_is_not_modified(fast_backend):
    masks = _random_case((1, 37, 53), np.uint8, 5, 1).copy()
    before = masks.copy()
    segkit.mode_filter(masks, backend=fast_backend)
    np.testing.assert_array_equal(masks, before)


def test_accepts_nested_lists():
    out = segkit.mode_filter([[1, 1, 1], [1, 5, 1], [1, 1, 1]], backend="cpp")
    assert out.dtype == np.int64 and (out == 1).all()


# ---------------------------------------------------------------------------------------------
# Property test: any small mask, any options, every backend equals the reference.
# ---------------------------------------------------------------------------------------------
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_property_all_backends_match_reference(data):
    h = data.draw(st.integers(1, 12), label="h")
    w = data.draw(st.integers(1, 40), label="w")
    n = data.draw(st.integers(1, 2), label="n")
    k = data.draw(st.integers(1, 4), label="classes")
    dtype = data.draw(st.sampled_from([np.uint8, np.uint16, np.int32, np.int64]), label="dtype")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    masks = np.random.default_rng(seed).integers(0, k, (n, h, w)).astype(dtype)
    size = data.draw(st.sampled_from([1, 3, 3, 5]), label="size")
    anchor = data.draw(st.sampled_from(["center", "topleft"]), label="anchor")
    ties = data.draw(st.sampled_from(["keep", "smallest", "first"]), label="ties")
    ignore = data.draw(st.one_of(st.none(), st.integers(0, k - 1)), label="ignore")
    expected = reference(masks, size, anchor=anchor, ties=ties, ignore_index=ignore)
    for name in FAST_BACKENDS:
        if name == "cuda" and not _backend.backend_info("cuda").available:
            continue
        out = segkit.mode_filter(masks, size, anchor=anchor, ties=ties, ignore_index=ignore,
                                 backend=name)
        out = to_host(out)
        np.testing.assert_array_equal(out, expected, err_msg=name)


# ---------------------------------------------------------------------------------------------
# Bad input: clear errors that name the argument and the value.
# ---------------------------------------------------------------------------------------------
GOOD = np.zeros((4, 4), np.uint8)
BAD_INPUTS = [
    ({"labels": np.zeros((4, 4), np.float32)}, TypeError, r"labels .*float32"),
    ({"labels": np.zeros((4, 4), bool)}, TypeError, r"labels .*bool"),
    ({"labels": np.zeros((4, 4), np.uint64)}, TypeError, r"labels .*uint64"),
    ({"labels": np.zeros(4, np.uint8)}, ValueError, r"labels must be 2-D .*\(4,\)"),
    ({"labels": np.zeros((1, 1, 4, 4), np.uint8)}, ValueError, r"labels must be .*\(1, 1, 4, 4\)"),
    ({"size": 4}, ValueError, r"size must be odd; got 4"),
    ({"size": 0}, ValueError, r"size must be >= 1; got 0"),
    ({"size": -3}, ValueError, r"size must be >= 1; got -3"),
    ({"size": 3.0}, TypeError, r"size must be an integer; got 3.0"),
    ({"size": True}, TypeError, r"size must be an integer; got True"),
    ({"anchor": "middle"}, ValueError, r"anchor must be one of 'center', 'topleft'; got 'middle'"),
    ({"ties": "max"}, ValueError, r"ties must be one of .*; got 'max'"),
    ({"backend": "gpu"}, ValueError, r"backend must be one of .*; got 'gpu'"),
    ({"ignore_index": 256}, ValueError, r"ignore_index=256 is out of range for uint8"),
    ({"ignore_index": -1}, ValueError, r"ignore_index=-1 is out of range for uint8"),
    ({"ignore_index": 1.5}, TypeError, r"ignore_index must be an integer; got 1.5"),
]


@pytest.mark.parametrize("backend", ["numpy", "numba", "cpp"])
@pytest.mark.parametrize("kwargs,exc,match", BAD_INPUTS, ids=[m for _, _, m in BAD_INPUTS])
def test_bad_input(kwargs, exc, match, backend):
    args = {"labels": GOOD, "backend": backend, **kwargs}
    labels = args.pop("labels")
    with pytest.raises(exc, match=match):
        segkit.mode_filter(labels, **args)


def test_uint16_ignore_range():
    with pytest.raises(ValueError, match=r"ignore_index=65536 is out of range for uint16"):
        segkit.mode_filter(np.zeros((3, 3), np.uint16), ignore_index=65536)
    out = segkit.mode_filter(np.zeros((3, 3), np.uint16), ignore_index=65535)
    assert (out == 0).all()


def test_smallest_ties_equal_skimage_modal():
    """An independent implementation: skimage's rank.modal is the centred, clipped mode filter
    with smallest-label ties."""
    rank = pytest.importorskip("skimage.filters.rank", reason="scikit-image (dev extra) missing")
    masks = blob_masks(2, 61, 97, 11, noise=0.2, scale=8, seed=11)
    for mask in masks:
        expected = rank.modal(mask, np.ones((3, 3), np.uint8))
        for name in ("numba", "cpp"):
            np.testing.assert_array_equal(segkit.mode_filter(mask, ties="smallest", backend=name),
                                          expected)
        expected5 = rank.modal(mask, np.ones((5, 5), np.uint8))
        np.testing.assert_array_equal(segkit.mode_filter(mask, 5, ties="smallest"), expected5)


def test_mode_params_checks_settings_without_running():
    from segkit.ops.mode_filter import ModeParams, mode_params

    p = mode_params(5, anchor="topleft", ties="first", ignore_index=np.int64(255))
    assert p == ModeParams(5, "topleft", "first", 255) and type(p.ignore_index) is int
    assert p.codes() == (5, 1, 2, 255)
    assert mode_params(ignore_index=70000).ignore_index == 70000  # no dtype: any integer
    for kwargs, exc, match in [({"size": 0}, ValueError, "size must be >= 1; got 0"),
                               ({"size": 2}, ValueError, "size must be odd; got 2"),
                               ({"ties": "max"}, ValueError, "ties must be one of"),
                               ({"anchor": 1}, ValueError, "anchor must be one of"),
                               ({"ignore_index": "0"}, TypeError, "ignore_index must be an"),
                               ({"ignore_index": 300, "dtype": np.uint8}, ValueError,
                                "ignore_index=300 is out of range for uint8")]:
        with pytest.raises(exc, match=match):
            mode_params(**kwargs)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64, np.int8, np.uint32])
@pytest.mark.parametrize("shape", [(0, 4, 5), (0, 0), (3, 0), (2, 0, 7)])
def test_empty_inputs_keep_dtype(fast_backend, shape, dtype):
    out = to_host(segkit.mode_filter(np.zeros(shape, dtype), backend=fast_backend))
    assert out.shape == shape and out.dtype == dtype
