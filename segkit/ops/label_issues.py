"""``segkit.label_issues`` and ``segkit.label_quality``: confident learning for segmentation,
equal to cleanlab 2.9's ``cleanlab.segmentation`` on its defaults.

``find_label_issues(labels, pred_probs)`` in cleanlab (with its defaults: no downsampling,
filter by low self-confidence, rank by self-confidence) does:

1. thresholds t_c: the mean self-confidence p_c of the pixels labelled c, clipped below at 2e-6;
2. the estimated number of issues T: pixels whose argmax a differs from the label and whose
   p_a >= t_a - 1e-6;
3. the T pixels of lowest self-confidence p_label over the whole dataset, of which those whose
   argmax differs from the label are flagged.

segkit computes the same in four stages (each in every backend): ``sums`` (step 1), ``scores``
(step 2, plus per-pixel scores and a 65536-bin histogram of their order keys), the cutoff (the
T-th lowest score, found from the histogram and the one bin it falls in) and ``flags`` (step 3).
The stages stream: the dataset job (:func:`segkit.audit`) runs them image by image.
On arrays, :func:`label_issues` with the cpp or numba backend runs stages 1 and 2 in one read
of the probabilities (:func:`fused_scores`: the first pass keeps argmax and top probability per
pixel, the count after the thresholds reads those).

Where equality with cleanlab is not exact (and by how much):

- equal scores at the cutoff: cleanlab takes T pixels with numpy's unstable ``argsort``, so
  among pixels whose score equals the T-th lowest it takes an unspecified subset; segkit takes
  them in flat index order (image, row, column). Only pixels with exactly that score can
  differ, and no more of them than are tied there;
- thresholds: cleanlab averages float32 per batch (then combines batches in float64); segkit
  sums in float64. They differ by about 1e-7 relative, so a pixel whose top probability lies
  within that of t_a - 1e-6 may be counted differently (moving T by one);
- a running mean that dips below 2e-6 in cleanlab's batch loop is clipped per batch; segkit
  clips once at the end (only classes whose pixels have self-confidence < 2e-6 on average);
- float16 probabilities are read exactly as float32; compare with cleanlab on ``probs.astype(
  float32)`` (cleanlab on float16 averages in float16).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..errors import InputError, InputTypeError
from .. import _backend, _validate

HIST_BINS = 1 << 16
#: cleanlab's constants (cleanlab.internal.constants)
FLOATING_POINT_COMPARISON = 1e-6
CONFIDENT_THRESHOLDS_LOWER_BOUND = 2e-6
METHODS = ("softmin",)


# ----------------------------------------------------------------------------- validation

def _prepare(labels: Any, probs: Any, ignore_index, name_l="labels", name_p="probs"):
    """(labels (N, H, W) native dtype, probs (N, C, H, W) float16/32 C-contiguous, squeezed,
    ignore_index)."""
    lab = np.asarray(labels)
    p = np.asarray(probs)
    _validate.label_ndim(name_l, lab.shape)
    squeeze = lab.ndim == 2
    if p.ndim != lab.ndim + 1:
        raise InputError(f"{name_p} must be {'(C, H, W)' if squeeze else '(N, C, H, W)'} for "
                         f"{name_l} of shape {lab.shape}; got shape {p.shape}")
    if squeeze:
        lab, p = lab[None], p[None]
    if p.shape[0] != lab.shape[0] or p.shape[2:] != lab.shape[1:]:
        raise InputError(f"{name_p} {p.shape} and {name_l} {lab.shape} differ in N, H or W")
    if p.shape[1] < 1:
        raise InputError(f"{name_p} needs at least one class; got shape {p.shape}")
    dtype = _validate.label_dtype(name_l, lab.dtype)
    if p.dtype not in (np.float16, np.float32):
        if p.dtype.kind != "f":
            raise InputTypeError(f"{name_p} must be float16 or float32 probabilities; got {p.dtype}")
        p = p.astype(np.float32)
    _validate.finite(name_p, p[0] if squeeze else p)  # every backend: checked before dispatch
    ignore_index = _validate.ignore_index(ignore_index, dtype)
    lab = np.ascontiguousarray(lab, dtype)
    p = np.ascontiguousarray(p)
    return lab, p, ignore_index, squeeze


def thresholds_from_sums(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per-class thresholds t_c = mean self-confidence (0 for unseen classes), clipped below at
    cleanlab's 2e-6."""
    sums, counts = np.asarray(sums, np.float64), np.asarray(counts, np.int64)
    t = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
    return np.clip(t, CONFIDENT_THRESHOLDS_LOWER_BOUND, None)


# ----------------------------------------------------------------------------- stages

def confident_sums(labels, probs, *, ignore_index=None, backend: str = "auto"):
    """Stage 1: (sums float64 (C,), counts int64 (C,)) of the self-confidence per labelled class.

    Raises ValueError for labels outside 0..C-1 (other than `ignore_index`)."""
    lab, p, ign, _ = _prepare(labels, probs, ignore_index)
    name = _backend.resolve(backend, labels, probs)
    c = p.shape[1]
    s, k, bad = _STAGES[name].sums(lab, p, c, ign)
    if bad:
        _check_range(lab, c, ign)
    return s, k


def score_pixels(labels, probs, thresholds, *, ignore_index=None, histogram: bool = True,
                 backend: str = "auto"):
    """Stage 2: (scores float32 (N, H, W): self-confidence, NaN where ignored; candidates bool
    (N, H, W): argmax != label; hist int64 (65536,) of the scores' order keys (None without
    `histogram`); counted: the number of issues these pixels add to the estimate)."""
    lab, p, ign, squeeze = _prepare(labels, probs, ignore_index)
    name = _backend.resolve(backend, labels, probs)
    thr = np.asarray(thresholds, np.float64)
    if thr.shape != (p.shape[1],):
        raise InputError(f"thresholds must have one entry per class ({p.shape[1]}); got shape "
                         f"{thr.shape}")
    sc, cand, hist, counted = _STAGES[name].scores(lab, p, p.shape[1], ign,
                                                  thr - FLOATING_POINT_COMPARISON, histogram)
    if squeeze:
        sc, cand = sc[0], cand[0]
    return sc, cand, hist if histogram else None, int(counted)


def image_softmin(pixel_scores, temperature: float = 0.1, *, backend: str = "auto"):
    """Stage 3: cleanlab's softmin quality of each image of (N, H, W) float32 scores (NaN
    skipped; NaN for an image without scores)."""
    s = np.ascontiguousarray(pixel_scores, np.float32)
    if s.ndim == 2:
        s = s[None]
    name = _backend.resolve(backend, pixel_scores)
    return _STAGES[name].softmin(s.reshape(len(s), int(np.prod(s.shape[1:]))), float(temperature))


def flag_pixels(pixel_scores, candidates, cutoff_key: int, *, backend: str = "auto"):
    """Stage 4: candidates whose score's order key is below `cutoff_key` (bool, same shape)."""
    s = np.ascontiguousarray(pixel_scores, np.float32)
    c = np.ascontiguousarray(candidates).astype(np.uint8, copy=False)
    if s.shape != c.shape:
        raise InputError(f"pixel_scores {s.shape} and candidates {c.shape} differ")
    name = _backend.resolve(backend, pixel_scores)
    return _STAGES[name].flags(s, c, int(cutoff_key)).reshape(s.shape)


def order_keys(scores) -> np.ndarray:
    """uint32 keys ordered as the float32 `scores` (the kernels' ``order_key``)."""
    from ..reference.label_issues import order_keys as keys

    return keys(scores)


def in_bin(scores: np.ndarray, bin_: int) -> np.ndarray:
    """Boolean mask of the float32 `scores` whose order key falls in histogram bin `bin_`."""
    u = np.ascontiguousarray(scores, np.float32).view(np.uint32) >> np.uint32(16)
    target = bin_ - 0x8000 if bin_ >= 0x8000 else 0xFFFF - bin_
    return u == np.uint32(target)


@dataclass(frozen=True)
class Cutoff:
    """Where the T lowest scores end: every score with a key below `key` is in, and of the
    scores whose key equals `tie_key` the first `ties` in index order (0: none, `tie_key` is
    then unused)."""
    key: int
    tie_key: int
    ties: int
    count: int            # T, the estimated number of issues

    @property
    def tie_value(self) -> np.float32:
        k = np.uint32(self.tie_key)
        u = ~k if not (k & np.uint32(0x80000000)) else k & np.uint32(0x7FFFFFFF)
        return np.array([u], np.uint32).view(np.float32)[0]


def find_cutoff(hist: np.ndarray, count: int, gather: Callable[[int], np.ndarray]) -> Cutoff:
    """The cutoff of the `count` lowest scores, from their histogram and `gather(bin)`: the
    scores (float32, any order) that fall in one bin."""
    if count <= 0:
        return Cutoff(0, 0, 0, 0)
    hist = np.asarray(hist, np.int64)
    cum = np.cumsum(hist)
    if count > cum[-1]:
        raise InputError(f"count {count} exceeds the {int(cum[-1])} scored pixels")
    b = int(np.searchsorted(cum, count))
    before = int(cum[b] - hist[b])
    keys = order_keys(gather(b))
    if keys.size != hist[b]:
        raise RuntimeError(f"bin {b} holds {keys.size} scores, its histogram says {hist[b]}")
    r = count - before  # 1..hist[b]
    kth = int(np.partition(keys, r - 1)[r - 1])
    less = before + int((keys < kth).sum())
    equal = int((keys == kth).sum())
    ties = count - less
    if ties == equal:  # every tied score is in: no tie to break
        return Cutoff(kth + 1, 0, 0, count)
    return Cutoff(kth, kth, ties, count)


def apply_ties(flags: np.ndarray, pixel_scores: np.ndarray, candidates: np.ndarray,
               cutoff: Cutoff, start: int = 0) -> int:
    """Adds, in place, the tied pixels at the cutoff to `flags` (the first `cutoff.ties - start`
    pixels, in flat order, whose score has the tie key; flagged if candidates). Returns how many
    tied pixels this array held (to carry `start` on to the next image)."""
    if cutoff.ties <= start:
        return 0
    u = np.ascontiguousarray(pixel_scores, np.float32).view(np.uint32).ravel()
    want = np.uint32(cutoff.tie_key)
    bits = ~want if not (want & np.uint32(0x80000000)) else want & np.uint32(0x7FFFFFFF)
    idx = np.flatnonzero(u == bits)
    take = idx[:cutoff.ties - start]
    f = flags.reshape(-1)
    f[take] = np.asarray(candidates).reshape(-1)[take].astype(bool)
    return int(idx.size)


# ----------------------------------------------------------------------------- public ops

def label_issues(labels: Any, probs: Any, *, ignore_index: int | None = None,
                 backend: str = "auto") -> np.ndarray:
    """Pixels whose label is likely wrong: cleanlab's confident learning for segmentation.

    Equal to ``cleanlab.segmentation.filter.find_label_issues(labels, probs)`` on its
    defaults (see the module docstring for the algorithm and the only differences: the order
    among pixels of equal score at the cutoff, and float rounding of the thresholds).

    Parameters
    ----------
    labels : array of int, (N, H, W) or (H, W)
        Given labels in 0..C-1 (uint8, uint16, int32 or int64; narrower ints are widened).
    probs : array of float, (N, C, H, W) or (C, H, W)
        Out-of-fold predicted probabilities (float16 or float32; float64 is converted).
    ignore_index : int, optional
        Pixels with this label are neither counted, scored nor flagged (cleanlab has no such
        option: None reproduces it).
    backend : {"auto", "numpy", "numba", "cpp", "cuda"}
        Host (NumPy) arrays only: ``"cuda"`` copies them to the GPU and the results back.

    Returns
    -------
    numpy.ndarray of bool, the shape of `labels`
        True where the label is flagged as an issue.

    Raises
    ------
    ValueError
        Labels outside 0..C-1 (except `ignore_index`), or shapes that do not match.

    Examples
    --------
    >>> import numpy as np, segkit
    >>> labels = np.array([[0, 0, 1, 1]])
    >>> probs = np.array([[[.9, .8, .1, .9]], [[.1, .2, .9, .1]]], np.float32)
    >>> segkit.label_issues(labels, probs)
    array([[False, False, False,  True]])
    """
    lab, p, ign, squeeze = _prepare(labels, probs, ignore_index)
    name = _backend.resolve(backend, labels, probs)
    stages = _STAGES[name]
    if hasattr(stages, "fused"):  # one read of probs, then passes over a few bytes per pixel
        sc, cand, hist, counted = fused_scores(lab, p, ign, name)
    else:
        s, k = confident_sums(lab, p, ignore_index=ign, backend=name)
        thr = thresholds_from_sums(s, k)
        sc, cand, hist, counted = score_pixels(lab, p, thr, ignore_index=ign, backend=name)
    flat = sc.reshape(-1)
    cut = find_cutoff(hist, counted, lambda b: flat[in_bin(flat, b)])
    if cut.count == 0:
        out = np.zeros(lab.shape, bool)
    else:
        out = stages.flags(flat, cand.reshape(-1).view(np.uint8), int(cut.key)).reshape(lab.shape)
        out = out.view(bool) if out.dtype == np.uint8 else out.astype(bool)
        apply_ties(out, sc, cand, cut)
    return out[0] if squeeze else out


def fused_scores(lab: np.ndarray, p: np.ndarray, ign, backend: str):
    """Stages 1 and 2 in one read of the probabilities (cpp and numba backends), for arrays
    already checked by ``_prepare``: the result of :func:`score_pixels` with the thresholds of
    :func:`confident_sums`, i.e. (scores, candidates, hist, counted). The first pass keeps each
    pixel's argmax and top probability, so counting the issues once the thresholds are known
    reads 9 bytes per pixel instead of the C probabilities."""
    c = p.shape[1]
    stages = _STAGES[backend]
    s, k, bad, sc, cand, am, top, hist = stages.fused(lab, p, c, ign)
    if bad:
        _check_range(lab, c, ign)
    thr = thresholds_from_sums(s, k)
    counted = stages.count(cand, am, top, np.ascontiguousarray(thr - FLOATING_POINT_COMPARISON))
    return sc, cand.view(bool), hist, int(counted)


def label_quality(labels: Any, probs: Any, method: str = "softmin", temperature: float = 0.1,
                  *, ignore_index: int | None = None, backend: str = "auto"):
    """Per-image label quality and per-pixel scores, as cleanlab's
    ``cleanlab.segmentation.rank.get_label_quality_scores(labels, probs, method="softmin")``.

    The pixel score is the self-confidence p_label; the image score is their softmin:
    ``sum s w / sum w`` with ``w = exp((min s - s) / T)`` (T = `temperature`, at least 1e-6),
    computed in float64. Lower is worse.

    Parameters
    ----------
    labels, probs : as in :func:`label_issues`.
    method : {"softmin"}
    temperature : float > 0, default 0.1
    ignore_index : int, optional
        Pixels with this label get the score NaN and do not enter the image score (an image
        of ignored pixels only scores NaN).
    backend : {"auto", "numpy", "numba", "cpp", "cuda"}

    Returns
    -------
    image_scores : numpy.ndarray of float64, (N,) (a float for (H, W) input)
    pixel_scores : numpy.ndarray of float32, the shape of `labels`
        (cleanlab returns float64 of the same values.)

    Examples
    --------
    >>> import numpy as np, segkit
    >>> labels = np.array([[0, 1]])
    >>> probs = np.array([[[.9, .6]], [[.1, .4]]], np.float32)
    >>> img, px = segkit.label_quality(labels, probs)
    >>> round(float(img), 4), px.tolist()
    (0.4033, [[0.8999999761581421, 0.4000000059604645]])
    """
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(map(repr, METHODS))}; got "
                         f"{method!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.floating)) \
            or not temperature > 0:
        raise InputError(f"temperature must be a positive number; got {temperature!r}")
    lab, p, ign, squeeze = _prepare(labels, probs, ignore_index)
    c = p.shape[1]
    _check_range(lab, c, ign)
    sc, _, _, _ = score_pixels(lab, p, np.full(c, np.inf), ignore_index=ign, histogram=False,
                               backend=backend)
    img = image_softmin(sc, temperature, backend=backend)
    return (float(img[0]), sc[0]) if squeeze else (img, sc)


def _check_range(lab: np.ndarray, c: int, ign) -> None:
    lo, hi = (int(lab.min()), int(lab.max())) if lab.size else (0, 0)
    if lo >= 0 and hi < c:
        return
    v = lab.astype(np.int64).ravel()
    bad = (v < 0) | (v >= c)
    if ign is not None:
        bad &= v != ign
    if bad.any():
        raise InputError(f"labels has {int(bad.sum())} pixels outside 0..{c - 1} (e.g. "
                         f"{int(v[bad][0])}); set ignore_index or fix them")


# ----------------------------------------------------------------------------- backends

class _Numpy:
    @staticmethod
    def sums(lab, p, c, ign):
        from ..reference.label_issues import sums

        return sums(lab, p, c, ign)

    @staticmethod
    def scores(lab, p, c, ign, thr_adj, hist):
        from ..reference.label_issues import scores

        return scores(lab, p, c, thr_adj, ign)

    @staticmethod
    def softmin(s, t):
        from ..reference.label_issues import softmin

        return softmin(s, t)

    @staticmethod
    def flags(s, c, key):
        from ..reference.label_issues import flags

        return flags(s, c, key)


def _numba_probs(p):
    return p.view(np.uint16) if p.dtype == np.float16 else p


class _Numba:
    @staticmethod
    def sums(lab, p, c, ign):
        from .._numba import label_issues as nb

        n, hw = lab.shape[0], int(np.prod(lab.shape[1:]))
        s, k, bad = nb.sums(lab.reshape(n, hw), _numba_probs(p).reshape(n, c, hw), c,
                            ign is not None,
                            ign if ign is not None else 0)
        return s, k, int(bad)

    @staticmethod
    def scores(lab, p, c, ign, thr_adj, hist):
        from .._numba import label_issues as nb

        n, hw = lab.shape[0], int(np.prod(lab.shape[1:]))
        sc, cand, h, counted = nb.scores(lab.reshape(n, hw), _numba_probs(p).reshape(n, c, hw), c,
                                         ign is not None, ign if ign is not None else 0,
                                         np.ascontiguousarray(thr_adj, np.float64), bool(hist))
        return sc.reshape(lab.shape), cand.reshape(lab.shape).astype(bool), h, int(counted)

    @staticmethod
    def fused(lab, p, c, ign):
        from .._numba import label_issues as nb

        n, hw = lab.shape[0], int(np.prod(lab.shape[1:]))
        s, k, bad, sc, cand, am, top, h = nb.fused(
            lab.reshape(n, hw), _numba_probs(p).reshape(n, c, hw), c, ign is not None,
            ign if ign is not None else 0, True)
        return (s, k, int(bad), sc.reshape(lab.shape), cand.reshape(lab.shape), am, top, h)

    @staticmethod
    def count(cand, am, top, thr_adj):
        from .._numba import label_issues as nb

        return nb.count(cand.reshape(-1), am.reshape(-1), top.reshape(-1), thr_adj)

    @staticmethod
    def softmin(s, t):
        from .._numba import label_issues as nb

        return nb.softmin(s, t)

    @staticmethod
    def flags(s, c, key):
        from .._numba import label_issues as nb

        return nb.flags(s.ravel(), c.ravel(), np.uint32(key)).astype(bool)


class _Cpp:
    @staticmethod
    def sums(lab, p, c, ign):
        from .. import _C

        s = np.zeros(c, np.float64)
        k = np.zeros(c, np.int64)
        bad = np.zeros(1, np.int64)
        _C.label_issues_sums(lab, p, c, ign, s, k, bad)
        return s, k, int(bad[0])

    @staticmethod
    def scores(lab, p, c, ign, thr_adj, hist):
        from .. import _C

        sc = np.empty(lab.shape, np.float32)
        cand = np.empty(lab.shape, np.uint8)
        h = np.zeros(HIST_BINS, np.int64) if hist else None
        counted = _C.label_issues_scores(lab, p, c, ign, np.ascontiguousarray(thr_adj, np.float64),
                                         sc, cand, h)
        return sc, cand.view(bool), h, counted

    @staticmethod
    def fused(lab, p, c, ign):
        from .. import _C

        s = np.zeros(c, np.float64)
        k = np.zeros(c, np.int64)
        bad = np.zeros(1, np.int64)
        sc = np.empty(lab.shape, np.float32)
        cand = np.empty(lab.shape, np.uint8)
        am = np.empty(lab.shape, np.int32)
        top = np.empty(lab.shape, np.float32)
        h = np.zeros(HIST_BINS, np.int64)
        _C.label_issues_fused(lab, p, c, ign, s, k, bad, sc, cand, am, top, h)
        return s, k, int(bad[0]), sc, cand, am, top, h

    @staticmethod
    def count(cand, am, top, thr_adj):
        from .. import _C

        return _C.label_issues_count(cand, am, top, thr_adj)

    @staticmethod
    def softmin(s, t):
        from .. import _C

        out = np.empty(len(s), np.float64)
        _C.label_issues_softmin(s, t, out)
        return out

    @staticmethod
    def flags(s, c, key):
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


class _Cuda:
    @staticmethod
    def _up(a):
        import cupy

        return cupy.ascontiguousarray(cupy.asarray(a))

    @classmethod
    def sums(cls, lab, p, c, ign):
        import cupy

        from .. import _cuda

        lg, pg = cls._up(lab), cls._up(p)
        s = cupy.zeros(c, cupy.float64)
        k = cupy.zeros(c, cupy.int64)
        bad = cupy.zeros(1, cupy.int64)
        name, total, args = cuda_sums_launch(lg, pg, c, ign, s, k, bad)
        _cuda.launch(_cuda.get_kernel("label_issues", name), total, args)
        return s.get(), k.get(), int(bad.get()[0])

    @classmethod
    def scores(cls, lab, p, c, ign, thr_adj, hist):
        import cupy

        from .. import _cuda

        lg, pg = cls._up(lab), cls._up(p)
        sc = cupy.empty(lab.shape, cupy.float32)
        cand = cupy.empty(lab.shape, cupy.uint8)
        h = cupy.zeros(HIST_BINS if hist else 1, cupy.int64)  # CuPy takes no null pointer
        counted = cupy.zeros(1, cupy.int64)
        name, total, args = cuda_scores_launch(lg, pg, c, ign, cupy.asarray(thr_adj, cupy.float64),
                                               sc, cand, h, counted, want_hist=hist)
        _cuda.launch(_cuda.get_kernel("label_issues", name), total, args)
        return sc.get(), cand.get().view(bool), h.get() if hist else None, int(counted.get()[0])

    @classmethod
    def softmin(cls, s, t):
        import cupy

        from .. import _cuda

        sg = cls._up(s)
        out = cupy.empty(len(s), cupy.float64)
        _cuda.launch(_cuda.get_kernel("label_issues", "label_issues_softmin_f32"), len(s),
                     (sg, np.int64(s.shape[0]), np.int64(s.shape[1]), np.float64(t), out))
        return out.get()

    @classmethod
    def flags(cls, s, c, key):
        import cupy

        from .. import _cuda

        sg, cg = cls._up(s), cls._up(c)
        out = cupy.empty(s.shape, cupy.uint8)
        _cuda.launch(_cuda.get_kernel("label_issues", "label_issues_flags_f32"), s.size,
                     (sg, cg, np.int64(s.size), np.uint32(key), out))
        return out.get().view(bool)


_STAGES = {"numpy": _Numpy, "numba": _Numba, "cpp": _Cpp, "cuda": _Cuda}
