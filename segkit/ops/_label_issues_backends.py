"""The runners of :mod:`segkit.ops.label_issues` (and ``label_quality``) on the four
backends, for its row of the table of backends (``segkit._backend.OPS``): on each backend a
:class:`Stages` record of the same stage functions (``sums``, ``scores``, ``softmin``,
``flags``; ``fused`` and ``count`` where one read of the probabilities does stages 1 and 2)
for the NumPy reference, Numba, C++ and CUDA, on arrays the public functions have already
checked (``fused`` checks the probabilities' finiteness itself, in its one read, and returns
the flat index of the first NaN or inf, or -1). The CUDA stages take host arrays and return
host results. ``STAGES`` maps a backend name to its record.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .label_issues_cutoff import HIST_BINS


@dataclass(frozen=True)
class Stages:
    """The runner of label_issues on one backend: one function per stage (the same arguments
    and results on every backend); `fused` and `count` (stages 1 and 2 in one read of the
    probabilities) where the backend has them, else None."""

    sums: Callable
    scores: Callable
    softmin: Callable
    flags: Callable
    fused: Callable | None = None
    count: Callable | None = None


def _numpy_sums(lab, p, c, ign):
    from ..reference.label_issues import sums

    return sums(lab, p, c, ign)


def _numpy_scores(lab, p, c, ign, thr_adj, hist):
    from ..reference.label_issues import scores

    return scores(lab, p, c, thr_adj, ign)


def _numpy_softmin(s, t):
    from ..reference.label_issues import softmin

    return softmin(s, t)


def _numpy_flags(s, c, key):
    from ..reference.label_issues import flags

    return flags(s, c, key)


def _numba_probs(p):
    return p.view(np.uint16) if p.dtype == np.float16 else p


def _numba_sums(lab, p, c, ign):
    from .._numba import label_issues as nb

    n, hw = lab.shape[0], int(np.prod(lab.shape[1:]))
    s, k, bad = nb.sums(lab.reshape(n, hw), _numba_probs(p).reshape(n, c, hw), c,
                        ign is not None,
                        ign if ign is not None else 0)
    return s, k, int(bad)


def _numba_scores(lab, p, c, ign, thr_adj, hist):
    from .._numba import label_issues as nb

    n, hw = lab.shape[0], int(np.prod(lab.shape[1:]))
    sc, cand, h, counted = nb.scores(lab.reshape(n, hw), _numba_probs(p).reshape(n, c, hw), c,
                                     ign is not None, ign if ign is not None else 0,
                                     np.ascontiguousarray(thr_adj, np.float64), bool(hist))
    return sc.reshape(lab.shape), cand.reshape(lab.shape).astype(bool), h, int(counted)


def _numba_fused(lab, p, c, ign):
    from .._numba import label_issues as nb

    n, hw = lab.shape[0], int(np.prod(lab.shape[1:]))
    s, k, bad, sc, cand, am, top, h, nonfinite = nb.fused(
        lab.reshape(n, hw), _numba_probs(p).reshape(n, c, hw), c, ign is not None,
        ign if ign is not None else 0, True)
    return (s, k, int(bad), sc.reshape(lab.shape), cand.reshape(lab.shape), am, top, h,
            int(nonfinite))


def _numba_count(cand, am, top, thr_adj):
    from .._numba import label_issues as nb

    return nb.count(cand.reshape(-1), am.reshape(-1), top.reshape(-1), thr_adj)


def _numba_softmin(s, t):
    from .._numba import label_issues as nb

    return nb.softmin(s, t)


def _numba_flags(s, c, key):
    from .._numba import label_issues as nb

    return nb.flags(s.ravel(), c.ravel(), np.uint32(key)).astype(bool)


def _cpp_sums(lab, p, c, ign):
    from .. import _C

    s = np.zeros(c, np.float64)
    k = np.zeros(c, np.int64)
    bad = np.zeros(1, np.int64)
    _C.label_issues_sums(lab, p, c, ign, s, k, bad)
    return s, k, int(bad[0])


def _cpp_scores(lab, p, c, ign, thr_adj, hist):
    from .. import _C

    sc = np.empty(lab.shape, np.float32)
    cand = np.empty(lab.shape, np.uint8)
    h = np.zeros(HIST_BINS, np.int64) if hist else None
    counted = _C.label_issues_scores(lab, p, c, ign, np.ascontiguousarray(thr_adj, np.float64),
                                     sc, cand, h)
    return sc, cand.view(bool), h, counted


def _cpp_fused(lab, p, c, ign):
    from .. import _C

    s = np.zeros(c, np.float64)
    k = np.zeros(c, np.int64)
    bad = np.zeros(1, np.int64)
    sc = np.empty(lab.shape, np.float32)
    cand = np.empty(lab.shape, np.uint8)
    am = np.empty(lab.shape, np.int32)
    top = np.empty(lab.shape, np.float32)
    h = np.zeros(HIST_BINS, np.int64)
    nonfinite = np.empty(1, np.int64)
    _C.label_issues_fused(lab, p, c, ign, s, k, bad, sc, cand, am, top, h, nonfinite)
    return s, k, int(bad[0]), sc, cand, am, top, h, int(nonfinite[0])


def _cpp_count(cand, am, top, thr_adj):
    from .. import _C

    return _C.label_issues_count(cand, am, top, thr_adj)


def _cpp_softmin(s, t):
    from .. import _C

    out = np.empty(len(s), np.float64)
    _C.label_issues_softmin(s, t, out)
    return out


def _cpp_flags(s, c, key):
    from .. import _C

    out = np.empty(s.shape, np.uint8)
    _C.label_issues_flags(s, c, key, out)
    return out.view(bool)


PROB_SUFFIX = {np.dtype(np.float16): "f16", np.dtype(np.float32): "f32"}


def cuda_sums_launch(lab, p, c, ign, sums, counts, bad):
    """(kernel name, work items, arguments) of the CUDA threshold sums."""
    from .._cuda import DTYPE_SUFFIX

    n = lab.shape[0]
    hw = int(np.prod(lab.shape[1:]))
    name = f"label_issues_sums_{PROB_SUFFIX[np.dtype(p.dtype)]}_{DTYPE_SUFFIX[np.dtype(lab.dtype)]}"
    args = (lab, p, np.int64(n), np.int64(hw), np.int32(c), np.int32(ign is not None),
            np.int64(ign if ign is not None else 0), sums, counts, bad)
    return name, n * hw, args


def cuda_scores_launch(lab, p, c, ign, thr_adj, scores, cand, hist, counted,
                       want_hist: bool = True):
    """(kernel name, work items, arguments) of the CUDA scoring pass (with `want_hist`
    False, `hist` is not written and may be any 1-element array)."""
    from .._cuda import DTYPE_SUFFIX

    n = lab.shape[0]
    hw = int(np.prod(lab.shape[1:]))
    name = (f"label_issues_scores_{PROB_SUFFIX[np.dtype(p.dtype)]}_"
            f"{DTYPE_SUFFIX[np.dtype(lab.dtype)]}")
    args = (lab, p, np.int64(n), np.int64(hw), np.int32(c), np.int32(ign is not None),
            np.int64(ign if ign is not None else 0), thr_adj, scores, cand, hist,
            np.int32(bool(want_hist)), counted)
    return name, n * hw, args


def _up(a):
    import cupy

    return cupy.ascontiguousarray(cupy.asarray(a))


def _cuda_sums(lab, p, c, ign):
    import cupy

    from .. import _cuda

    lg, pg = _up(lab), _up(p)
    s = cupy.zeros(c, cupy.float64)
    k = cupy.zeros(c, cupy.int64)
    bad = cupy.zeros(1, cupy.int64)
    name, total, args = cuda_sums_launch(lg, pg, c, ign, s, k, bad)
    _cuda.launch(_cuda.get_kernel("label_issues", name), total, args)
    return s.get(), k.get(), int(bad.get()[0])


def _cuda_scores(lab, p, c, ign, thr_adj, hist):
    import cupy

    from .. import _cuda

    lg, pg = _up(lab), _up(p)
    sc = cupy.empty(lab.shape, cupy.float32)
    cand = cupy.empty(lab.shape, cupy.uint8)
    h = cupy.zeros(HIST_BINS if hist else 1, cupy.int64)  # CuPy takes no null pointer
    counted = cupy.zeros(1, cupy.int64)
    name, total, args = cuda_scores_launch(lg, pg, c, ign, cupy.asarray(thr_adj, cupy.float64),
                                           sc, cand, h, counted, want_hist=hist)
    _cuda.launch(_cuda.get_kernel("label_issues", name), total, args)
    return sc.get(), cand.get().view(bool), h.get() if hist else None, int(counted.get()[0])


def _cuda_softmin(s, t):
    import cupy

    from .. import _cuda

    sg = _up(s)
    out = cupy.empty(len(s), cupy.float64)
    _cuda.launch(_cuda.get_kernel("label_issues", "label_issues_softmin_f32"), len(s),
                 (sg, np.int64(s.shape[0]), np.int64(s.shape[1]), np.float64(t), out))
    return out.get()


def _cuda_flags(s, c, key):
    import cupy

    from .. import _cuda

    sg, cg = _up(s), _up(c)
    out = cupy.empty(s.shape, cupy.uint8)
    _cuda.launch(_cuda.get_kernel("label_issues", "label_issues_flags_f32"), s.size,
                 (sg, cg, np.int64(s.size), np.uint32(key), out))
    return out.get().view(bool)


STAGES = {
    "numpy": Stages(_numpy_sums, _numpy_scores, _numpy_softmin, _numpy_flags),
    "numba": Stages(_numba_sums, _numba_scores, _numba_softmin, _numba_flags, _numba_fused,
                    _numba_count),
    "cpp": Stages(_cpp_sums, _cpp_scores, _cpp_softmin, _cpp_flags, _cpp_fused, _cpp_count),
    "cuda": Stages(_cuda_sums, _cuda_scores, _cuda_softmin, _cuda_flags),
}
