"""``segkit.evaluate``: per-class IoU, mIoU and pixel accuracy of predictions against
ground-truth masks, streamed image by image (flat memory), with a JSON report and a plot."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError, PathNotFoundError
from ..io import atomic
from ..io.masks import read_mask
from ..io.store import META, SET_SEPARATOR, ConfidenceStore, open_store
from ..ops.confusion import confusion_matrix, iou_scores
from ._stores import StoreReader, mask_index
from .engine import map_items


@dataclass
class Evaluation:
    """Result of :func:`evaluate`."""
    confusion: np.ndarray
    class_names: list[str]
    images: int
    missing: list[str] = field(default_factory=list)

    @property
    def scores(self) -> dict:
        return iou_scores(self.confusion)

    @property
    def miou(self) -> float:
        return self.scores["miou"]

    @property
    def iou(self) -> np.ndarray:
        return self.scores["iou"]

    @property
    def pixel_acc(self) -> float:
        return self.scores["pixel_acc"]

    def to_dict(self) -> dict:
        s = self.scores
        return {"images": self.images, "missing": self.missing, "miou": s["miou"],
                "pixel_acc": s["pixel_acc"],
                "iou": {n: (None if np.isnan(v) else float(v))
                        for n, v in zip(self.class_names, s["iou"])},
                "confusion": self.confusion.tolist(), "classes": self.class_names}

    def table(self) -> str:
        s = self.scores
        lines = [f"{'class':16s} {'IoU':>7s} {'acc':>7s}"]
        for n, iou, acc in zip(self.class_names, s["iou"], s["class_acc"]):
            lines.append(f"{n[:16]:16s} {iou:7.4f} {acc:7.4f}")
        lines.append(f"{'mIoU':16s} {s['miou']:7.4f}")
        lines.append(f"{'pixel accuracy':16s} {s['pixel_acc']:7.4f}  ({self.images} images)")
        return "\n".join(lines)


class _PairCounter:
    """Picklable per-image function: the confusion matrix of one (prediction, gt) pair."""

    def __init__(self, num_classes, ignore_index, store: "StoreReader | None"):
        self.num_classes, self.ignore_index, self.store = num_classes, ignore_index, store

    def __call__(self, item):
        key, pred_path, gt_path = item
        gt = read_mask(gt_path)
        if self.store is not None:
            pred = np.asarray(self.store.read(key)[0]).argmax(0)
        else:
            pred = read_mask(pred_path)
        if pred.shape != gt.shape:
            raise InputError(f"prediction is {pred.shape[1]}x{pred.shape[0]} but the ground "
                             f"truth {gt_path} is {gt.shape[1]}x{gt.shape[0]}")
        dtype = np.promote_types(pred.dtype, gt.dtype)
        dtype = np.int32 if dtype not in (np.uint8, np.uint16, np.int64) else dtype
        return confusion_matrix(pred.astype(dtype), gt.astype(dtype), self.num_classes,
                                ignore_index=self.ignore_index)


def evaluate(pred: str | Path, gt: str | Path, num_classes: int, *, ignore_index: int | None = 255,
             class_names: Sequence[str] | None = None, out: str | Path | None = None,
             strict: bool = False, workers: int | None = None, engine: str = "local",
             progress: bool = True) -> Evaluation:
    """Evaluate predicted label maps against ground-truth masks.

    Parameters
    ----------
    pred : folder of label PNGs, or a confidence store folder (argmax of its probabilities),
        or a store set of fold stores joined with commas ("a_fold0,a_fold1")
    gt : folder of ground-truth label PNGs; files pair up by relative path without suffix
        ('dir/name' and the flattened 'dir+name' match)
    num_classes : int
    ignore_index : int or None, default 255 (ground-truth pixels not counted)
    class_names : names for the report (default: the store's classes, else '0', '1', ...)
    out : folder for ``eval.json`` and ``iou.png`` (per-class IoU bar chart)
    strict : raise if a ground-truth mask has no prediction (default: report them)

    Returns
    -------
    Evaluation with ``.confusion``, ``.iou``, ``.miou``, ``.pixel_acc``, ``.table()``.
    """
    pred, gt = Path(pred), Path(gt)
    if not gt.is_dir():
        raise PathNotFoundError(f"gt: no such folder {gt}")
    reader = None
    is_set = SET_SEPARATOR in str(pred) and not pred.is_dir()  # fold stores "a,b"
    if is_set or (pred / META).is_file():
        store = open_store(str(pred)) if is_set else ConfidenceStore(pred)
        reader = StoreReader([store])
        pred_keys = {s: None for s in store.stems()}
        if class_names is None:
            class_names = store.classes
    elif pred.is_dir():
        pred_keys = mask_index(pred)
    else:
        raise PathNotFoundError(f"pred: no such folder or confidence store {pred}")
    gt_keys = mask_index(gt)
    if not gt_keys:
        raise InputError(f"gt: no PNG masks in {gt}")
    missing = [k for k in gt_keys if k not in pred_keys]
    if missing and strict:
        raise InputError(f"{len(missing)} ground-truth masks have no prediction, e.g. "
                         f"{missing[0]!r}")
    items = [(k, pred_keys[k], gt_keys[k]) for k in gt_keys if k in pred_keys]
    if not items:
        raise InputError(f"no prediction in {pred} matches a mask in {gt}")
    counter = _PairCounter(num_classes, ignore_index, reader)
    cm = np.zeros((num_classes, num_classes), np.int64)
    for part in map_items(counter, items, workers=workers, engine=engine, desc="evaluate",
                          unit="image", progress=progress):
        cm += part
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise InputError(f"class_names has {len(names)} names for {num_classes} classes")
    result = Evaluation(cm, names, len(items), missing)
    if out is not None:
        out = Path(out)
        atomic.write_json(out / "eval.json", result.to_dict())
        from ..viz import bar_chart

        with atomic.atomic_path(out / "iou.png") as tmp:
            bar_chart({"IoU": result.iou}, names, f"per-class IoU (mIoU {result.miou:.4f})") \
                .save(tmp, format="PNG")
    return result


def load_evaluation(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
