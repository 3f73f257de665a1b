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
The stages stream; the dataset-level steps (the tallies, thresholds, cutoff, tie order and
flags) have one home, the accumulator :class:`segkit.ops.label_inspector.LabelInspector`,
which :func:`label_issues` feeds the whole array and the dataset job (:func:`segkit.audit`)
feeds image by image.
On arrays, :func:`label_issues` with the cpp or numba backend runs stages 1 and 2 in one read
of the probabilities (:func:`fused_scores`: the first pass keeps argmax and top probability per
pixel, the count after the thresholds reads those). The cutoff arithmetic (thresholds, order
keys, histogram bins, ties) is in ``segkit/ops/label_issues_cutoff.py``, the four backends'
stages in ``segkit/ops/_label_issues_backends.py``.

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

from typing import Any

import numpy as np

from ..errors import InputError, InputTypeError
from .. import _backend, _validate
from ._label_issues_backends import STAGES as _STAGES
from .label_issues_cutoff import FLOATING_POINT_COMPARISON, in_bin, thresholds_from_sums

METHODS = ("softmin",)
#: label_issues and label_quality: their rows of the table of backends, the same stages on each
#: backend (a :class:`segkit.ops._label_issues_backends.Stages` record per backend; the rows
#: hold ``_STAGES`` itself, which the stages below read).
OP = _backend.register("label_issues", _STAGES)
QUALITY_OP = _backend.register("label_quality", _STAGES)

# ----------------------------------------------------------------------------- validation

def _prepare(labels: Any, probs: Any, ignore_index, name_l="labels", name_p="probs",
             check_finite: bool = True):
    """(labels (N, H, W) native dtype, probs (N, C, H, W) float16/32 C-contiguous, squeezed,
    ignore_index). `check_finite` False: the caller refuses NaN and inf itself (the fused
    pass does, in its one read of the probabilities)."""
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
    if check_finite:  # the stages of every backend: checked before dispatch
        _validate.finite(name_p, p[0] if squeeze else p)
    ignore_index = _validate.ignore_index(ignore_index, dtype)
    lab = np.ascontiguousarray(lab, dtype)
    p = np.ascontiguousarray(p)
    return lab, p, ignore_index, squeeze


# ----------------------------------------------------------------------------- stages

def confident_sums(labels, probs, *, ignore_index=None, backend: str = "auto"):
    """Stage 1: (sums float64 (C,), counts int64 (C,)) of the self-confidence per labelled class.

    Raises ValueError for labels outside 0..C-1 (other than `ignore_index`)."""
    lab, p, ign, _ = _prepare(labels, probs, ignore_index)
    name = OP.resolve(backend, labels, probs)
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
    name = OP.resolve(backend, labels, probs)
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
    name = OP.resolve(backend, pixel_scores)
    return _STAGES[name].softmin(s.reshape(len(s), int(np.prod(s.shape[1:]))), float(temperature))


def flag_pixels(pixel_scores, candidates, cutoff_key: int, *, backend: str = "auto"):
    """Stage 4: candidates whose score's order key is below `cutoff_key` (bool, same shape)."""
    s = np.ascontiguousarray(pixel_scores, np.float32)
    c = np.ascontiguousarray(candidates).astype(np.uint8, copy=False)
    if s.shape != c.shape:
        raise InputError(f"pixel_scores {s.shape} and candidates {c.shape} differ")
    name = OP.resolve(backend, pixel_scores)
    return _STAGES[name].flags(s, c, int(cutoff_key)).reshape(s.shape)


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
    lab, p, ign, squeeze = _prepare(labels, probs, ignore_index, check_finite=False)
    name = OP.resolve(backend, labels, probs)
    out = _inspect(lab, p, ign, name, squeeze)
    return out[0] if squeeze else out


def _inspect(lab: np.ndarray, p: np.ndarray, ign, backend: str, squeeze: bool) -> np.ndarray:
    """The flags of checked arrays (N, H, W) and (N, C, H, W): the whole dataset as one piece
    of a :class:`~segkit.ops.label_inspector.LabelInspector` (both passes in one read of the
    probabilities where the backend has a fused pass)."""
    from .label_inspector import LabelInspector

    inspector = LabelInspector(p.shape[1], ignore_index=ign, backend=backend)
    if _STAGES[backend].fused is not None:
        s, k, sc, cand, am, top, hist = _fused_pass(lab, p, ign, backend, squeeze)
        inspector.add_sums(s, k)
        inspector.add_scores(hist, _fused_count(backend, cand, am, top, inspector.thresholds))
    else:
        _validate.finite("probs", p[0] if squeeze else p)
        inspector.update_thresholds(lab, p)
        sc, cand, _, _ = inspector.update_scores(lab, p)
    flat = sc.reshape(-1)
    inspector.find_cutoff(lambda b: {0: flat[in_bin(flat, b)]})
    return inspector.issues(sc, cand.view(np.uint8), chunk=0)


def fused_scores(lab: np.ndarray, p: np.ndarray, ign, backend: str, squeeze: bool = False):
    """Stages 1 and 2 in one read of the probabilities (cpp and numba backends), for arrays
    already checked by ``_prepare`` (all but finiteness: the pass refuses NaN and inf itself,
    naming the first, as ``_prepare`` would; `squeeze`: name it in (C, H, W)): the result of
    :func:`score_pixels` with the thresholds of :func:`confident_sums`, i.e. (scores,
    candidates, hist, counted). The first pass keeps each pixel's argmax and top probability,
    so counting the issues once the thresholds are known reads 9 bytes per pixel instead of
    the C probabilities."""
    s, k, sc, cand, am, top, hist = _fused_pass(lab, p, ign, backend, squeeze)
    counted = _fused_count(backend, cand, am, top, thresholds_from_sums(s, k))
    return sc, cand, hist, counted


def _fused_pass(lab: np.ndarray, p: np.ndarray, ign, backend: str, squeeze: bool):
    """The one read of the fused pass: (sums, counts, scores, candidates (bool), argmax,
    top probability, hist); refuses NaN and inf, and labels out of range."""
    c = p.shape[1]
    s, k, bad, sc, cand, am, top, hist, nonfinite = _STAGES[backend].fused(lab, p, c, ign)
    if nonfinite >= 0:
        index = np.unravel_index(nonfinite, p.shape)[1 if squeeze else 0:]
        raise InputError(f"probs contains {p.reshape(-1)[nonfinite]} (first at index "
                         f"{tuple(int(i) for i in index)}); probabilities must be finite")
    if bad:
        _check_range(lab, c, ign)
    return s, k, sc, cand.view(bool), am, top, hist


def _fused_count(backend: str, cand, am, top, thresholds) -> int:
    """The estimated number of issues from the fused pass's argmax and top probability (9
    bytes per pixel) once the thresholds are known."""
    thr = np.ascontiguousarray(np.asarray(thresholds, np.float64) - FLOATING_POINT_COMPARISON)
    return int(_STAGES[backend].count(cand.view(np.uint8), am, top, thr))


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
