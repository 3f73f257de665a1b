"""segkit._C called directly with arrays it must refuse (csrc/bindings/checks.h).

The bindings hand raw pointers to the kernels, which read and write flat T[n] buffers. Every
array a binding reads, writes or indexes must be checked first: dtype (and byte order), shape or
length, C-contiguity, writeability. Each case below raises ValueError/TypeError naming the
argument, and leaves the memory around an output untouched (outputs are views into a larger
buffer filled with a sentinel, so that a write through a wrong stride or length shows).
"""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import require_backend

_C = None


@pytest.fixture(scope="module", autouse=True)
def _cpp():
    global _C
    require_backend("cpp")
    from segkit import _C as module
    _C = module


N, H, W, C = 2, 5, 6, 3
P = N * H * W
SENTINEL = 77


def guarded(shape, dtype, *, stride=1, readonly=False):
    """A view of `shape` inside a sentinel-filled buffer (every `stride`-th element)."""
    size = int(np.prod(shape))
    base = np.full(size * stride + 8, SENTINEL, dtype)
    view = base[4:4 + size * stride:stride].reshape(shape)
    if readonly:
        view.flags.writeable = False
    return base, view


def labels(dtype=np.uint8, shape=(N, H, W)):
    return (np.arange(int(np.prod(shape))) % C).astype(dtype).reshape(shape)


def probs(dtype=np.float32):
    p = np.random.default_rng(0).random((N, C, H, W)).astype(dtype)
    return p / p.sum(1, keepdims=True)


def fused_outputs():
    """label_issues_fused's outputs, computed once on valid input."""
    lab, p = labels(), probs()
    out = dict(sums=np.zeros(C), counts=np.zeros(C, np.int64), bad=np.zeros(1, np.int64),
               scores=np.empty(P, np.float32), candidates=np.empty(P, np.uint8),
               argmax=np.empty(P, np.int32), top=np.empty(P, np.float32),
               hist=np.zeros(65536, np.int64))
    _C.label_issues_fused(lab, p, C, None, *out.values())
    out["candidates"][:] = 1  # every pixel counts, so that every argmax is read
    return out


def expect(exc, match, fn, *args):
    with pytest.raises(exc, match=match):
        fn(*args)


# ---- label issues -----------------------------------------------------------------------------

@pytest.mark.parametrize("length", [0, 1, C - 1])
def test_count_refuses_short_thresholds(length):
    o = fused_outputs()
    o["argmax"][:] = C - 1
    expect(ValueError, "thresholds_adj", _C.label_issues_count, o["candidates"], o["argmax"],
           o["top"], np.zeros(length))


def test_count_refuses_negative_argmax():
    o = fused_outputs()
    o["argmax"][3] = -1
    expect(ValueError, "thresholds_adj.*-1", _C.label_issues_count, o["candidates"],
           o["argmax"], o["top"], np.zeros(C))


@pytest.mark.parametrize("arg", ["candidates", "argmax", "top"])
def test_count_refuses_strided_inputs(arg):
    o = fused_outputs()
    args = dict(candidates=o["candidates"], argmax=o["argmax"], top=o["top"])
    _, args[arg] = guarded((P,), args[arg].dtype, stride=2)
    args[arg][:] = 0
    expect(ValueError, f"{arg} must be C-contiguous", _C.label_issues_count, *args.values(),
           np.zeros(C))


@pytest.mark.parametrize("arg, dtype", [("argmax", np.int64), ("top", np.float64),
                                        ("candidates", np.bool_)])
def test_count_refuses_wrong_input_dtypes(arg, dtype):
    o = fused_outputs()
    args = dict(candidates=o["candidates"], argmax=o["argmax"], top=o["top"])
    args[arg] = args[arg].astype(dtype)
    expect(TypeError, arg, _C.label_issues_count, *args.values(), np.zeros(C))


def test_count_refuses_float32_thresholds():
    o = fused_outputs()
    expect(TypeError, "thresholds_adj must be float64", _C.label_issues_count,
           o["candidates"], o["argmax"], o["top"], np.zeros(C, np.float32))


SUMS_OUTPUTS = dict(sums=np.float64, counts=np.int64, bad=np.int64)
FUSED_OUTPUTS = dict(sums=np.float64, counts=np.int64, bad=np.int64, scores=np.float32,
                     candidates=np.uint8, argmax=np.int32, top=np.float32)
SIZES = dict(sums=C, counts=C, bad=1, scores=P, candidates=P, argmax=P, top=P)
WRONG_DTYPE = {np.float64: np.float32, np.int64: np.int32, np.float32: np.float64,
               np.uint8: np.int8, np.int32: np.int64}


def _outputs(spec, bad_arg=None, **kind):
    bases, outs = {}, {}
    for name, dtype in spec.items():
        if name == bad_arg:
            if "dtype" in kind:
                dtype = kind["dtype"]
            bases[name], outs[name] = guarded((SIZES[name] + kind.get("extra", 0),), dtype,
                                              stride=kind.get("stride", 1),
                                              readonly=kind.get("readonly", False))
        else:
            outs[name] = np.zeros(SIZES[name], dtype)
    return bases, outs


def _call(fn, outs, h=None):
    lab, p = labels(), probs()
    if fn == "sums":
        return _C.label_issues_sums(lab, p, C, None, *outs.values())
    if fn == "scores":
        return _C.label_issues_scores(lab, p, C, None, np.zeros(C), *outs.values(), h)
    return _C.label_issues_fused(lab, p, C, None, *outs.values(), h)


LI_CASES = [("sums", SUMS_OUTPUTS), ("scores", dict(scores=np.float32, candidates=np.uint8)),
            ("fused", FUSED_OUTPUTS)]
LI_ARGS = [(fn, spec, arg) for fn, spec in LI_CASES for arg in spec]
# (a strided view of one element is still contiguous: "bad" has one)
LI_ARRAYS = [(fn, spec, arg) for fn, spec, arg in LI_ARGS if SIZES[arg] > 1]


@pytest.mark.parametrize("fn, spec, arg", LI_ARGS)
def test_label_issues_outputs_of_another_dtype_are_refused(fn, spec, arg):
    # py::array_t<T>& converted them into a temporary: the results were silently lost.
    bases, outs = _outputs(spec, arg, dtype=WRONG_DTYPE[spec[arg]])
    expect(TypeError, f"{arg} must be", _call, fn, outs)
    assert (bases[arg] == SENTINEL).all()


@pytest.mark.parametrize("fn, spec, arg", LI_ARRAYS)
def test_label_issues_strided_outputs_are_refused(fn, spec, arg):
    # a strided view passed as a flat buffer: the kernel wrote past the view, into its base
    bases, outs = _outputs(spec, arg, stride=2)
    expect(ValueError, f"{arg} must be C-contiguous", _call, fn, outs)
    assert (bases[arg] == SENTINEL).all()


@pytest.mark.parametrize("fn, spec, arg", LI_ARGS)
def test_label_issues_readonly_outputs_are_refused(fn, spec, arg):
    bases, outs = _outputs(spec, arg, readonly=True)
    expect(ValueError, f"{arg} must be writeable", _call, fn, outs)
    assert (bases[arg] == SENTINEL).all()


@pytest.mark.parametrize("fn, spec, arg", LI_ARGS)
def test_label_issues_outputs_of_another_size_are_refused(fn, spec, arg):
    bases, outs = _outputs(spec, arg, extra=1)
    expect(ValueError, f"{arg} has {SIZES[arg] + 1} entries, needs {SIZES[arg]}", _call, fn,
           outs)


@pytest.mark.parametrize("fn", ["scores", "fused"])
@pytest.mark.parametrize("hist", [np.zeros(65536, np.int32), np.zeros(65536, np.uint64),
                                  np.zeros(65536 * 2, np.int64)[::2], [0] * 65536],
                         ids=["int32", "uint64", "strided", "list"])
def test_label_issues_hist_is_checked(fn, hist):
    spec = dict(LI_CASES)[fn]
    _, outs = _outputs(spec)
    expect((TypeError, ValueError), "hist", _call, fn, outs, hist)


def test_label_issues_inputs_are_checked():
    outs = [np.zeros(C), np.zeros(C, np.int64), np.zeros(1, np.int64)]
    lab, p = labels(), probs()
    expect(TypeError, "labels must be uint8", _C.label_issues_sums, lab.astype(np.int8), p, C,
           None, *outs)
    expect(TypeError, "probs must be in the machine's byte order", _C.label_issues_sums, lab,
           p.astype(">f4"), C, None, *outs)
    expect(ValueError, "labels must be C-contiguous", _C.label_issues_sums,
           np.asfortranarray(lab[:, :, :5]), p[..., :5], C, None, *outs)
    expect(TypeError, "ignore_index must be None or an int", _C.label_issues_sums, lab, p, C,
           1.5, *outs)
    expect(ValueError, "num_classes must be >= 1", _C.label_issues_sums, lab, p[:, :0], 0,
           None, *outs[:0], np.zeros(0), np.zeros(0, np.int64), outs[2])


def test_label_issues_thresholds_adj_length_is_checked():
    _, outs = _outputs(dict(scores=np.float32, candidates=np.uint8))
    expect(ValueError, "thresholds_adj has 2 entries, needs 3", _C.label_issues_scores,
           labels(), probs(), C, None, np.zeros(C - 1), *outs.values(), None)


def test_softmin_and_flags_are_checked():
    s = np.random.default_rng(1).random((N, H * W)).astype(np.float32)
    base, out = guarded((N,), np.float32)
    expect(TypeError, "out must be float64", _C.label_issues_softmin, s, 0.1, out)
    assert (base == SENTINEL).all()
    base, out = guarded((N,), np.float64, stride=2)
    expect(ValueError, "out must be C-contiguous", _C.label_issues_softmin, s, 0.1, out)
    assert (base == SENTINEL).all()
    expect(ValueError, "out has 3 entries, needs 2", _C.label_issues_softmin, s, 0.1,
           np.zeros(3))
    expect(TypeError, "scores must be float32", _C.label_issues_softmin, s.astype(np.float64),
           0.1, np.zeros(N))
    cand = np.ones(s.size, np.uint8)
    base, flags = guarded((s.size,), np.uint8, stride=2)
    expect(ValueError, "flags must be C-contiguous", _C.label_issues_flags, s.ravel(), cand,
           1 << 31, flags)
    assert (base == SENTINEL).all()
    expect(TypeError, "flags must be uint8", _C.label_issues_flags, s.ravel(), cand, 1 << 31,
           np.zeros(s.size, bool))
    expect(ValueError, "candidates must be C-contiguous", _C.label_issues_flags, s.ravel(),
           np.ones(2 * s.size, np.uint8)[::2], 1 << 31, np.zeros(s.size, np.uint8))


# ---- mode filter, confusion, soft vote, convcrf -------------------------------------------------

def test_mode_filter_checks():
    x = labels(np.uint16)
    expect(TypeError, "input must be in the machine's byte order", _C.mode_filter,
           x.astype(">u2"), np.zeros(x.shape, ">u2"), 3, 0, 0)
    expect(TypeError, "ignore_index must be None or an int", _C.mode_filter, x,
           np.zeros_like(x), 3, 0, 0, 1.5)
    expect(TypeError, "input must be uint8, uint16, int32 or int64", _C.mode_filter,
           np.zeros((0, 4, 4), np.int8), np.zeros((0, 4, 4), np.int8), 3, 0, 0)
    base, out = guarded(x.shape, np.uint16, stride=2)
    expect(ValueError, "output must be C-contiguous", _C.mode_filter, x, out, 3, 0, 0)
    assert (base == SENTINEL).all()
    base, out = guarded(x.shape, np.uint16, readonly=True)
    expect(ValueError, "output must be writeable", _C.mode_filter, x, out, 3, 0, 0)
    expect(ValueError, "output shape .* differs from input's", _C.mode_filter, x,
           np.zeros((N, H, W + 1), np.uint16), 3, 0, 0)


def test_confusion_checks():
    p = labels(np.int32).ravel()
    counts = np.zeros(C * C, np.int64)
    base, bad = guarded((2,), np.int64, stride=2)
    expect(ValueError, "bad must be C-contiguous", _C.confusion, p, p, C, None, counts, bad)
    assert (base == SENTINEL).all()
    expect(TypeError, "pred must be in the machine's byte order", _C.confusion, p.astype(">i4"),
           p.astype(">i4"), C, None, counts, np.zeros(2, np.int64))
    expect(TypeError, "counts must be int64", _C.confusion, p, p, C, None,
           np.zeros(C * C, np.uint64), np.zeros(2, np.int64))
    expect(ValueError, "gt has 59 entries, needs 60", _C.confusion, p, p[:-1], C, None, counts,
           np.zeros(2, np.int64))
    expect(TypeError, "ignore_index must be None or an int", _C.confusion, p, p, C, "1", counts,
           np.zeros(2, np.int64))
    expect(ValueError, "num_classes must be >= 1", _C.confusion, p, p, 0, None, counts[:0],
           np.zeros(2, np.int64))


def test_soft_vote_checks():
    a = probs()
    lab = np.zeros((N, H, W), np.uint8)
    w = np.ones(2, np.float32) / 2
    expect(TypeError, r"inputs\[1\] dtype >f4 differs from inputs\[0\]'s float32|inputs\[1\] "
           "must be in the machine's byte order", _C.soft_vote, [a, a.astype(">f4")], w, lab)
    expect(TypeError, r"inputs\[0\] must be in the machine's byte order", _C.soft_vote,
           [a.astype(">f4")], w[:1], lab)
    expect(TypeError, "probs must be None or a numpy array", _C.soft_vote, [a], w[:1], lab,
           [[0.0]])
    base, mean = guarded(a.shape, np.float32, stride=2)
    expect(ValueError, "probs must be C-contiguous", _C.soft_vote, [a], w[:1], lab, mean)
    assert (base == SENTINEL).all()
    expect(ValueError, "weights has 2 entries, needs 1", _C.soft_vote, [a], w, lab)


def test_convcrf_checks():
    params = _C.ConvCrfParams()
    params.num_iter = 1
    s = probs()
    img = np.zeros((N, 3, H, W), np.uint8)
    expect(TypeError, "image must be in the machine's byte order", _C.convcrf, s,
           img.astype(np.float32).astype(">f4"), params)
    expect(ValueError, "image shape .* needs 3 along axis 1", _C.convcrf, s,
           np.zeros((N, 4, H, W), np.uint8), params)
    expect(TypeError, "scores must be float32", _C.convcrf, s.astype(np.float64), img, params)
    expect(ValueError, "scores must be writeable", _C.convcrf,
           np.frombuffer(s.tobytes(), np.float32).reshape(s.shape), img, params)
