"""`segkit tune`'s pixel data: the settled/kept pixels of the search images (the fast path of
the weight and bias search) and the per-image confusion of full ensemble settings (the path
the held-out measurement takes, the same code `segkit ensemble --tuned` runs).

**Settled pixels** are those no weight/bias candidate can relabel: every model's top class is
the same one, with a probability more than ``ratio = exp(2 * bias_bound)`` times every other
class's (:func:`segkit.ops.vote_confusion.settled_pixels`). With weights >= 0 and
``|bias_c| <= bias_bound`` such a pixel's label is that class for every candidate, so it is
counted once into a confusion matrix; the other (**kept**) pixels stay in memory, float16,
models x classes each, and a candidate is one pass of :func:`segkit.vote_confusion`'s fused
kernel over them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .._backend import OP_BACKENDS, resolve
from ..errors import InputError
from ..ops.confusion import iou_scores
from ..ops.soft_vote import check_weights
from ..ops.vote_confusion import (bias_scale, confusion_of_pixels, settled_pixels,
                                  vote_confusion)
from ._stores import StoreReader, image_of, mask_of
from ._tune_crf import FitImage
from .engine import map_items
from .settings import EnsembleSetting


def valid_labels(stem: str, path: str, gt: np.ndarray, num_classes: int,
                 ignore_index: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(labels int64 flat, valid pixels) of a mask; InputError for a label outside 0..C-1."""
    g = gt.astype(np.int64).ravel()
    valid = np.ones(g.shape, bool) if ignore_index is None else g != ignore_index
    bad = valid & ((g < 0) | (g >= num_classes))
    if bad.any():
        raise InputError(f"{stem}: mask {path} has label {int(g[bad][0])} outside "
                         f"0..{num_classes - 1} (and not ignore_index {ignore_index})")
    return g, valid


class PixelReader:
    """Reads one image of every model and its mask (picklable: one per tune run).

    Called on a stem it returns ``(stem, settled confusion (C, C), kept pixels (M, C, P)
    float16 bits, their labels (P,))``.
    """

    def __init__(self, stores: StoreReader | Sequence, masks: dict[str, str], num_classes: int,
                 ignore_index: int | None, ratio: float, backend: str = "auto"):
        self.stores = stores if isinstance(stores, StoreReader) else StoreReader(stores)
        self.masks, self.num_classes = masks, num_classes
        self.ignore_index, self.ratio = ignore_index, ratio
        self.backend = backend  # of settled_pixels (numpy or numba; "auto": numba)

    def read(self, stem: str) -> tuple[list[np.ndarray], np.ndarray]:
        """Every model's (C, H, W) probabilities of `stem` and its mask (checked sizes)."""
        probs = self.stores.read(stem)
        return probs, mask_of(stem, self.masks[stem], probs[0].shape)

    def labels(self, stem: str, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(flat labels, valid pixels) of `stem`'s mask `gt`."""
        return valid_labels(stem, self.masks[stem], gt, self.num_classes, self.ignore_index)

    def __call__(self, stem: str):
        probs, gt = self.read(stem)
        return self.compact(stem, probs, gt, *self.labels(stem, gt))

    def compact(self, stem: str, probs: list[np.ndarray], gt: np.ndarray, g: np.ndarray,
                valid: np.ndarray):
        """The settled confusion and the kept pixels of one read image (see the class)."""
        c = self.num_classes
        planes = [np.ascontiguousarray(p).reshape(c, -1) for p in probs]
        settled = valid.copy()
        first = None
        for plane in planes:  # every model: the same top class, far ahead
            top, far_ahead = settled_pixels(plane, self.ratio, backend=self.backend)
            settled &= far_ahead
            if first is None:
                first = top
            else:
                settled &= top == first
        planes = [plane.view(np.uint16) if plane.dtype == np.float16 else plane
                  for plane in planes]
        cm = np.bincount(g[settled] * c + first[settled], minlength=c * c).reshape(c, c)
        keep = valid & ~settled
        data = np.stack([np.compress(keep, plane, axis=1) for plane in planes])
        labels = g[keep].astype(np.uint8 if c <= 256 else np.uint16)
        return stem, cm.astype(np.int64), data, labels


class SearchReader:
    """The one read of each image tune needs before the search (picklable): its settled
    confusion and kept pixels (:class:`PixelReader`) and, for the CRF fit's images, the fit's
    input as read (:class:`segkit.jobs._tune_crf.FitImage`). Returns (pixel part, FitImage or
    None)."""

    def __init__(self, reader: PixelReader, images: str | None, fit_stems: Sequence[str]):
        self.reader, self.images, self.fit_stems = reader, images, frozenset(fit_stems)

    def __call__(self, stem: str):
        probs, gt = self.reader.read(stem)
        g, valid = self.reader.labels(stem, gt)
        fit = FitImage.of(stem, probs, g, valid, self.images, gt.shape) \
            if stem in self.fit_stems else None
        return self.reader.compact(stem, probs, gt, g, valid), fit


@dataclass
class PixelSet:
    """The settled pixels' confusion plus the kept pixels of some images; `backend` is the
    vote_confusion kernel's (numpy: the reference; numba or "auto": the fused kernel)."""
    settled: np.ndarray       # (C, C) int64
    data: np.ndarray          # (M, C, P) uint16 (float16 bits)
    gt: np.ndarray            # (P,)
    stems: list[str]
    backend: str = "auto"

    @classmethod
    def join(cls, parts: list[tuple], m: int, c: int, backend: str = "auto") -> "PixelSet":
        """The PixelSet of :class:`PixelReader` results (any order)."""
        parts = sorted(parts, key=lambda r: r[0])
        settled = np.zeros((c, c), np.int64)
        for r in parts:
            settled += r[1]
        data = np.concatenate([r[2] for r in parts], axis=2) if parts else \
            np.zeros((m, c, 0), np.uint16)
        gt = np.concatenate([r[3] for r in parts]) if parts else np.zeros(0, np.uint8)
        return cls(settled, np.ascontiguousarray(data), gt, [r[0] for r in parts], backend)

    def __add__(self, other: "PixelSet") -> "PixelSet":
        """These images and `other`'s (in this order), as one set."""
        return PixelSet(self.settled + other.settled,
                        np.ascontiguousarray(np.concatenate([self.data, other.data], 2)),
                        np.concatenate([self.gt, other.gt]), self.stems + other.stems,
                        self.backend)

    @property
    def kept(self) -> int:
        return int(self.gt.size)

    @property
    def pixels(self) -> int:
        return int(self.settled.sum()) + self.kept

    def confusion(self, weights, bias) -> np.ndarray:
        """(C, C) counts of the vote with `weights` and `bias` (no CRF) over these images."""
        if resolve(self.backend, among=OP_BACKENDS["vote_confusion"]) == "numpy":
            # the op's reference on the kept pixels as M images (C, 1, P)
            half = self.data.view(np.float16) if self.data.dtype == np.uint16 else self.data
            return self.settled + vote_confusion(list(half[:, :, None, :]), self.gt[None],
                                                 weights, bias, ignore_index=None,
                                                 backend="numpy")
        m, c = self.data.shape[:2]
        factors = check_weights(weights, m)
        scale = bias_scale(None if bias is None else np.asarray(bias, np.float64), c)
        return self.settled + confusion_of_pixels(self.data, self.gt, factors, scale, None)


class SettingCounts:
    """Confusion matrices of one image under full ensemble settings, each applied by its
    :class:`segkit.jobs.settings.EnsembleSetting` (what `ensemble --tuned` applies).
    An item is (stem, [setting index, ...]); the image is read and voted once per weights.
    `backend`: the soft vote's and the ConvCRF's."""

    def __init__(self, reader: PixelReader, images: str | None,
                 settings: list[EnsembleSetting], backend: str = "auto"):
        self.reader, self.images, self.settings = reader, images, settings
        self.backend = backend

    def __call__(self, item) -> list[tuple[int, np.ndarray]]:
        stem, which = item
        probs, gt = self.reader.read(stem)
        c = self.reader.num_classes
        g, valid = self.reader.labels(stem, gt)
        image, means, out = None, {}, []
        for k in which:
            setting = self.settings[k]
            if setting.weights not in means:
                means[setting.weights] = setting.vote(probs, return_probs=True,
                                                      backend=self.backend)[1]
            if setting.crf is not None and image is None:
                image = image_of(stem, self.images, gt.shape)
            labels = setting.labels(means[setting.weights], image,
                                    backend=self.backend).ravel()
            out.append((k, np.bincount(g[valid] * c + labels[valid],
                                       minlength=c * c).reshape(c, c)))
        return out


def setting_confusions(reader: PixelReader, images: str | None, stems: Sequence[str],
                       settings: list[EnsembleSetting], *, workers: int, engine: str,
                       progress: bool, desc: str, backend: str = "auto") -> list[np.ndarray]:
    """(C, C) counts of every setting over `stems`: one parallel pass, each task one image
    under all settings (soft vote and ConvCRF on `backend`)."""
    c = reader.num_classes
    cms = [np.zeros((c, c), np.int64) for _ in settings]
    if not settings or not stems:
        return cms
    items = [(s, list(range(len(settings)))) for s in stems]
    counter = SettingCounts(reader, images, list(settings), backend)
    for part in map_items(counter, items, workers=min(workers, len(items)), engine=engine,
                          desc=desc, unit="image", progress=progress):
        for k, cm in part:
            cms[k] += cm
    return cms


def miou_of(cm: np.ndarray) -> float:
    """mIoU of a confusion matrix (classes absent from truth and prediction left out)."""
    return float(iou_scores(cm)["miou"])


def scores_dict(cm: np.ndarray, classes: list[str]) -> dict:
    """mIoU, pixel accuracy and per-class IoU (None where undefined) of a confusion matrix."""
    s = iou_scores(cm)
    return {"miou": s["miou"], "pixel_acc": s["pixel_acc"],
            "iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(classes, s["iou"])}}
