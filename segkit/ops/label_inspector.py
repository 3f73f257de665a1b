"""``LabelInspector``: confident learning for segmentation as one accumulator, fed a dataset in
pieces (images, batches, or one array), as cleanlab's ``LabelInspector``
(``cleanlab.experimental.label_issues_batched``) does for classification.

It is the one home of the dataset-level steps of :mod:`segkit.ops.label_issues`: the tallies
of the thresholds, the thresholds, the tallies of the scores (the estimated number of issues T
and the 65536-bin histogram of the scores' order keys), the cutoff of the T lowest scores, the
tie order at the cutoff and the flags. Both drivers use it: :func:`segkit.label_issues` (one
array in memory) and the audit job (:func:`segkit.audit`, images streamed from confidence
stores on a pool of workers); the per-pixel work stays in the backends' stages.

Two passes over the data, then the cutoff, then the flags::

    insp = LabelInspector(num_classes, ignore_index=255)
    for labels, probs in pieces:                 # pass 1
        insp.update_thresholds(labels, probs)
    scored = [insp.update_scores(labels, probs) for labels, probs in pieces]   # pass 2
    insp.find_cutoff(lambda b: {i: s.scores[in_bin(s.scores, b)]              # cutoff
                                for i, s in enumerate(scored)})
    flags = [insp.issues(s.scores, s.candidates, chunk=i) for i, s in enumerate(scored)]

Each ``update_*`` is a pure per-piece computation (:meth:`sums`, :meth:`score`) followed by a
merge (:meth:`add_sums`, :meth:`add_scores`): a job computes the first on its workers (with
:meth:`detached`, a copy without the tallies) and merges their results in the driver. The
result does not depend on how the dataset is cut into pieces, as long as the pieces are numbered
in flat order (image, row, column) when the cutoff is found: ties at the cutoff are taken in
that order. (The thresholds are float64 sums: another cut adds them in another order, which
can move a threshold by an ulp, as between backends; exact where the sums are, e.g. for
probabilities in multiples of a power of two, as the tests use.)
"""
from __future__ import annotations

import copy
from typing import Callable, Hashable, Mapping, NamedTuple

import numpy as np

from ..errors import InputError
from . import label_issues as _li
from .label_issues_cutoff import (FLOATING_POINT_COMPARISON, HIST_BINS, Cutoff, apply_ties,
                                  find_cutoff, order_keys, thresholds_from_sums)

#: The cutoff when no issue is estimated.
NO_CUTOFF = Cutoff(0, 0, 0, 0)


class PixelScores(NamedTuple):
    """What scoring one piece gives (a tuple: ``scores, candidates, hist, counted``)."""
    scores: np.ndarray       # float32, the labels' shape: self-confidence, NaN where ignored
    candidates: np.ndarray   # bool, the labels' shape: argmax != label
    hist: np.ndarray | None  # int64 (65536,): the scores' order keys (None without histogram)
    counted: int             # issues these pixels add to the estimate T


class LabelInspector:
    """Confident learning over a dataset seen in pieces (see the module docstring).

    Parameters
    ----------
    num_classes : int
        C: labels are 0..C-1 (besides `ignore_index`), probabilities (…, C, H, W).
    ignore_index : int, optional
        The label that is neither counted, scored nor flagged.
    backend : {"auto", "numpy", "numba", "cpp", "cuda"}
        The kernels' backend for the per-piece stages.

    Notes
    -----
    The steps must come in order: thresholds (pass 1) are frozen by the first read of
    :attr:`thresholds` (which scoring does), the tallies of pass 2 by :meth:`find_cutoff`, and
    :meth:`issues` needs the cutoff. Out of order, the methods raise RuntimeError.
    """

    def __init__(self, num_classes: int, *, ignore_index: int | None = None,
                 backend: str = "auto"):
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
                or num_classes < 1:
            raise InputError(f"num_classes must be a positive integer; got {num_classes!r}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.backend = backend
        self._sums: np.ndarray | None = np.zeros(self.num_classes, np.float64)
        self._counts: np.ndarray | None = np.zeros(self.num_classes, np.int64)
        self._thresholds: np.ndarray | None = None
        self._hist: np.ndarray | None = None
        self._estimated = 0
        self._cutoff: Cutoff | None = None
        self._tie_starts: dict[Hashable, int] = {}
        self._detached = False

    # ------------------------------------------------------------------ pass 1: thresholds
    def sums(self, labels, probs) -> tuple[np.ndarray, np.ndarray]:
        """One piece's tallies of the thresholds: (sums float64 (C,), counts int64 (C,)) of the
        self-confidence per labelled class. Pure: merge them with :meth:`add_sums`."""
        return _li.confident_sums(labels, probs, ignore_index=self.ignore_index,
                                  backend=self.backend)

    def add_sums(self, sums, counts) -> None:
        """Merge a piece's tallies of the thresholds (from :meth:`sums`)."""
        self._tallies("add_sums")
        if self._thresholds is not None:
            raise RuntimeError("add_sums after the thresholds were read: pass 1 is over")
        self._sums += np.asarray(sums, np.float64)
        self._counts += np.asarray(counts, np.int64)

    def update_thresholds(self, labels, probs) -> None:
        """Pass 1 on one piece: :meth:`sums`, then :meth:`add_sums`."""
        self.add_sums(*self.sums(labels, probs))

    @property
    def thresholds(self) -> np.ndarray:
        """Per-class thresholds t_c (float64 (C,)): the mean self-confidence of the pixels
        labelled c, clipped below at 2e-6 (cleanlab's rule). Reading them ends pass 1."""
        if self._thresholds is None:
            self._tallies("thresholds")
            self._thresholds = thresholds_from_sums(self._sums, self._counts)
        return self._thresholds

    # ------------------------------------------------------------------ pass 2: scores
    def score(self, labels, probs, *, histogram: bool = True) -> PixelScores:
        """One piece's pixel scores against the thresholds. Pure: merge its tallies with
        :meth:`add_scores`."""
        return PixelScores(*_li.score_pixels(labels, probs, self.thresholds,
                                             ignore_index=self.ignore_index,
                                             histogram=histogram, backend=self.backend))

    def add_scores(self, hist, counted: int, bins=None) -> None:
        """Merge a piece's tallies of the scores: its histogram (whole, or its non-zero
        `bins` and their counts `hist`) and the issues it adds to the estimate."""
        self._tallies("add_scores")
        if self._cutoff is not None:
            raise RuntimeError("add_scores after find_cutoff: pass 2 is over")
        if self._hist is None:
            self._hist = np.zeros(HIST_BINS, np.int64)
        if bins is None:
            self._hist += np.asarray(hist, np.int64)
        else:
            self._hist[np.asarray(bins)] += np.asarray(hist, np.int64)
        self._estimated += int(counted)

    def update_scores(self, labels, probs) -> PixelScores:
        """Pass 2 on one piece: :meth:`score`, then :meth:`add_scores`; returns the scores
        (the caller keeps them, or what it needs of them, for the cutoff and the flags)."""
        scored = self.score(labels, probs)
        self.add_scores(scored.hist, scored.counted)
        return scored

    @property
    def estimated(self) -> int:
        """T, the estimated number of issues so far (cleanlab's ``num_label_issues``)."""
        return self._estimated

    def reaches_threshold(self, pred, top) -> np.ndarray:
        """Where the predicted class `pred` is confident: its probability `top` reaches its
        threshold (t_pred - 1e-6, cleanlab's comparison); bool, the shape of `pred`."""
        t = self.thresholds
        return np.asarray(top, np.float64) >= t[np.asarray(pred)] - FLOATING_POINT_COMPARISON

    def quality(self, pixel_scores, temperature: float = 0.1) -> np.ndarray:
        """cleanlab's softmin quality of each image of (N, H, W) or (H, W) scores (float64
        (N,); NaN for an image without scores)."""
        return _li.image_softmin(pixel_scores, temperature, backend=self.backend)

    # ------------------------------------------------------------------ the cutoff
    def find_cutoff(self, gather: Callable[[int], Mapping[Hashable, np.ndarray]]) -> Cutoff:
        """The cutoff of the T lowest scores, and where each piece's tied scores start.

        `gather(b)` returns, for every piece in flat order (image, row, column), its key and
        the float32 scores it holds in histogram bin `b` (:func:`~segkit.ops.
        label_issues_cutoff.in_bin`), as a mapping ``{key: scores}``; the keys name the pieces
        in :meth:`issues`. It is called once, and only when T > 0."""
        self._tallies("find_cutoff")
        if self._cutoff is not None:
            raise RuntimeError("find_cutoff was already called")
        parts: dict[Hashable, np.ndarray] = {}

        def concatenated(b: int) -> np.ndarray:
            parts.update(gather(b))
            return np.concatenate(list(parts.values())) if parts else np.zeros(0, np.float32)

        hist = self._hist if self._hist is not None else np.zeros(HIST_BINS, np.int64)
        cut = find_cutoff(hist, self._estimated, concatenated) if self._estimated else NO_CUTOFF
        if cut.ties:
            seen = 0
            for key, vals in parts.items():  # flat order
                tied = int((order_keys(vals) == cut.tie_key).sum())
                if tied and seen < cut.ties:
                    self._tie_starts[key] = seen
                seen += tied
        self._cutoff = cut
        self._hist = None  # 512 KB no longer needed
        return cut

    @property
    def cutoff(self) -> Cutoff:
        """The cutoff found by :meth:`find_cutoff`."""
        if self._cutoff is None:
            raise RuntimeError("the cutoff is not known yet: call find_cutoff after pass 2")
        return self._cutoff

    # ------------------------------------------------------------------ the flags
    def issues(self, pixel_scores, candidates, chunk: Hashable = 0) -> np.ndarray:
        """The flags of one piece (bool, the shape of `pixel_scores`): candidates among the T
        lowest scores of the dataset. `candidates` may be any integer code (non-zero: a
        candidate); `chunk` is the piece's key in :meth:`find_cutoff`'s gather."""
        cut = self.cutoff
        if cut.count == 0:
            return np.zeros(np.shape(pixel_scores), bool)
        flags = _li.flag_pixels(pixel_scores, candidates, cut.key, backend=self.backend)
        if chunk in self._tie_starts:
            apply_ties(flags, pixel_scores, candidates, cut, self._tie_starts[chunk])
        return flags

    # ------------------------------------------------------------------ for workers
    def detached(self) -> "LabelInspector":
        """A copy without the tallies, small to send to workers: it scores (once the
        thresholds are known) and flags (once the cutoff is known), and merges nothing."""
        out = copy.copy(self)
        out._sums = out._counts = out._hist = None
        out._tie_starts = dict(self._tie_starts)
        out._detached = True
        return out

    def _tallies(self, what: str) -> None:
        if self._detached:
            raise RuntimeError(f"{what} on a detached LabelInspector (it holds no tallies): "
                               "merge in the inspector it was detached from")
