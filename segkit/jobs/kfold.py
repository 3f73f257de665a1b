"""``segkit.kfold``: k-fold splits of a COCO dataset, balanced by instances per class;
``kfold_masks``: of a folder of PNG masks, balanced by the images that hold each class.

Two methods:

- ``"greedy"``: the original recipe's algorithm (GUIDE section 6), seeded. Rounds visit the
  folds in a random order; each fold in turn takes the class with the largest relative
  shortfall of instances (``(target - have) / target``, target = total / k) among the classes
  that remaining images still hold, and receives the remaining image with the most instances
  of that class (ties: the first in a seeded random order of the images). When no remaining
  image holds any instance (images without annotations), the fold takes the next remaining
  image in that order. Every fold receives one image per round, so fold sizes differ by at
  most one. Unlike the original, every image is kept (the original dropped unannotated ones).
- ``"multilabel"``: iterative stratification on which classes each image contains
  (``iterstrat.ml_stratifiers.MultilabelStratifiedKFold``, shuffled with the seed).

Outputs per fold ``i`` in OUT: ``fold{i}/train.json`` and ``fold{i}/val.json`` (COCO files with
the same categories and other top-level keys), ``fold{i}/train.txt`` and ``fold{i}/val.txt``
(mmseg split files: one image stem per line, in the annotation file's order), and
``folds.json`` (method, seed, the validation file names of each fold and the table). The stem
is the mask file's path relative to the mask folder without ``.png``, as
``segkit.coco_to_masks`` writes it: ``batch_01_vt/0002`` by default, ``batch_01_vt+0002``
with ``flatten=True``; use the same `flatten` for both.

A mask folder (:func:`kfold_masks`) gives each image a row of 0/1 class presence (ignore pixels
count for no class), and the same two methods split it; it writes ``fold{i}/train.txt`` and
``val.txt`` (mask stems) and ``folds.json``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import InputError, MissingPackageError
from .. import _validate
from ..io.atomic import write_json, write_text
from ..io.coco import ON_INVALID, CocoFindings, CocoIndex
from ..io.names import stem_of

METHODS = ("greedy", "multilabel")


@dataclass
class KFoldResult:
    """Folds of a dataset. ``fold_of[i]``: the validation fold of image ``i`` (file order);
    ``counts[f, c]``: instances of class ``classes[c]`` in validation fold ``f``."""

    method: str
    seed: int
    k: int
    file_names: list[str] = field(repr=False)
    fold_of: np.ndarray = field(repr=False)
    counts: np.ndarray
    classes: list[str]
    out: Path | None = None
    findings: CocoFindings = field(default_factory=CocoFindings, repr=False)
    #: what ``counts`` counts: instances (COCO) or images holding the class (mask folder)
    unit: str = "instances"

    @property
    def folds(self) -> list[list[str]]:
        """Validation file names of each fold, in file order."""
        return [[n for n, f in zip(self.file_names, self.fold_of) if f == fold]
                for fold in range(self.k)]

    @property
    def images_per_fold(self) -> np.ndarray:
        return np.bincount(self.fold_of, minlength=self.k)

    def imbalance(self) -> np.ndarray:
        """Per class: the largest |fold count - total/k| / (total/k) over folds (0 for classes
        without instances)."""
        total = self.counts.sum(0)
        target = total / self.k
        with np.errstate(divide="ignore", invalid="ignore"):
            dev = np.abs(self.counts - target) / target
        return np.where(total > 0, dev.max(0), 0.0)

    def table(self) -> str:
        k = self.k
        dev = self.imbalance()
        width = max(14, *(len(c) for c in self.classes))
        head = f"{'class':{width}s} {'total':>7s}" + "".join(f" {'fold' + str(f):>7s}"
                                                            for f in range(k)) + "  max dev"
        lines = [f"k-fold ({self.method}, seed {self.seed}): {self.unit} per class in each "
                 "validation fold", head]
        for c, name in enumerate(self.classes):
            row = self.counts[:, c]
            lines.append(f"{name:{width}s} {int(row.sum()):7d}" + "".join(
                f" {int(v):7d}" for v in row) + f"  {100 * dev[c]:6.1f}%")
        ipf = self.images_per_fold
        lines.append(f"{'images':{width}s} {int(ipf.sum()):7d}" + "".join(
            f" {int(v):7d}" for v in ipf))
        if dev.size and dev.max() > 0:
            c = int(dev.argmax())
            fold = int(np.abs(self.counts[:, c] - self.counts[:, c].sum() / k).argmax())
            lines.append(f"largest relative imbalance: {100 * dev[c]:.1f}% ({self.classes[c]}, "
                         f"fold{fold}: {int(self.counts[fold, c])} {self.unit} for a target of "
                         f"{self.counts[:, c].sum() / k:.1f})")
        else:
            lines.append("largest relative imbalance: 0.0%")
        return "\n".join(lines)


def instance_counts(index: CocoIndex) -> np.ndarray:
    """(images, categories) instances per image (file order) and category (label order)."""
    table = index.table.category_to_label
    labels = sorted(set(table.values()) - {0})
    col = {lab: j for j, lab in enumerate(labels)}
    counts = np.zeros((len(index.images), len(labels)), np.int64)
    for i, (_, anns) in enumerate(index.items()):
        for ann in anns:
            lab = table[ann["category_id"]]
            if lab:
                counts[i, col[lab]] += 1
    return counts


def greedy_folds(counts: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The fold of each image by the original recipe's greedy rounds (module docstring)."""
    n, ncls = counts.shape
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    c = counts[order]  # tie-breaking: first in this seeded order
    target = c.sum(0) / k
    safe_target = np.where(target > 0, target, 1.0)
    fold_counts = np.zeros((k, ncls), np.float64)
    left_in_pool = c.sum(0).astype(np.int64)
    remaining = np.ones(n, bool)
    fold = np.full(n, -1, np.int64)
    left = n
    while left:
        for f in rng.permutation(k):
            if not left:
                break
            available = left_in_pool > 0
            if available.any():
                shortfall = np.where(available, (target - fold_counts[f]) / safe_target, -np.inf)
                cls = int(np.argmax(shortfall))
                i = int(np.argmax(np.where(remaining, c[:, cls], -1)))
            else:
                i = int(np.argmax(remaining))
            fold[i] = f
            remaining[i] = False
            fold_counts[f] += c[i]
            left_in_pool -= c[i]
            left -= 1
    out = np.empty(n, np.int64)
    out[order] = fold
    return out


def multilabel_folds(counts: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The fold of each image by iterative multilabel stratification (iterstrat)."""
    try:
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
    except ImportError as exc:  # pragma: no cover - a base dependency
        raise MissingPackageError("method='multilabel' needs iterative-stratification: "
                          "pip install iterative-stratification") from exc
    y = (counts[:, counts.sum(0) > 0] > 0).astype(np.int64)
    if y.shape[1] == 0:
        raise InputError("method='multilabel' needs annotations to stratify on; this dataset "
                         "has none (use method='greedy')")
    fold = np.full(len(counts), -1, np.int64)
    splitter = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for f, (_, val) in enumerate(splitter.split(np.zeros((len(y), 1)), y)):
        fold[val] = f
    assert (fold >= 0).all(), "iterstrat left an image without a fold"
    return fold


def _subset(data: dict, keep_ids: set[int]) -> dict:
    out = {key: value for key, value in data.items() if key not in ("images", "annotations")}
    out["images"] = [img for img in data["images"] if img["id"] in keep_ids]
    out["annotations"] = [a for a in data.get("annotations", []) if a["image_id"] in keep_ids]
    # keep the original key order (images, annotations where they were)
    return {key: out[key] for key in [*data.keys(), "annotations"] if key in out}


def kfold(ann_file, k: int = 5, method: str = "greedy", seed: int = 0, out=None, *,
          flatten: bool = False, on_invalid: str = "error",
          log: Callable[[str], Any] | None = print) -> KFoldResult:
    """Split a COCO dataset into `k` folds balanced by instances per class.

    Parameters
    ----------
    ann_file : path
        COCO annotation file.
    k : int >= 2
        Number of folds (at most the number of images).
    method : {"greedy", "multilabel"}
        The original recipe's greedy rounds, or iterative multilabel stratification (see the
        module docstring).
    seed : int
        Everything random depends on it: the same seed gives the same folds and files.
    out : path, optional
        Folder for ``fold{i}/{train,val}.{json,txt}`` and ``folds.json``; nothing is written
        when None.
    flatten : bool
        Stem form of the split files: ``dir+name`` (True) or ``dir/name`` (False), matching
        the mask files of ``segkit.coco_to_masks(..., flatten=...)``.
    on_invalid : {"error", "skip"}
        An invalid annotation (see ``segkit.coco_to_masks``) stops with the file, the
        annotation id and the reason (``"error"``), or is left out of the counts and of the
        fold files and listed in ``folds.json`` under ``"skipped"`` (``"skip"``).

    Returns
    -------
    KFoldResult
        Every image is in exactly one validation fold; ``.table()`` is the printed table;
        ``.findings`` what the annotation check found.

    Examples
    --------
    >>> folds = segkit.kfold("train.json", k=5, out="folds/", on_invalid="skip")  # doctest: +SKIP
    """
    k = _validate.integer("k", k, minimum=2)
    _validate.choice("method", method, METHODS)
    seed = _validate.integer("seed", seed, minimum=0)
    _validate.choice("on_invalid", on_invalid, ON_INVALID)
    index = CocoIndex.open(ann_file, on_invalid=on_invalid)
    n = len(index.images)
    if k > n:
        raise InputError(f"k={k} is larger than the number of images ({n}) in {ann_file}")
    t0 = time.perf_counter()
    counts = instance_counts(index)
    fold_of = (greedy_folds if method == "greedy" else multilabel_folds)(counts, k, seed)
    fold_counts = np.stack([counts[fold_of == f].sum(0) for f in range(k)])
    labels = sorted(set(index.table.category_to_label.values()) - {0})
    result = KFoldResult(method, seed, k, [img["file_name"] for img in index.images], fold_of,
                         fold_counts, [index.table.classes[lab] for lab in labels],
                         Path(out) if out is not None else None, index.findings)
    if out is not None:
        _write(index, result, Path(out), flatten, on_invalid)
    if log:
        log(result.table())
        from ._coco import coco_summary

        f = index.findings
        coco_summary({**f.to_json(), "crowd": {"annotations": 0}}, log)
        log(f"{k} folds of {n} images in {time.perf_counter() - t0:.2f} s"
            + (f"; written to {out}/fold*/{{train,val}}.{{json,txt}} and {out}/folds.json"
               if out is not None else ""))
    return result


def _write(index: CocoIndex, result: KFoldResult, out: Path, flatten: bool,
           on_invalid: str) -> None:
    ids = [img["id"] for img in index.images]
    stems = [stem_of(img["file_name"], flatten=flatten) for img in index.images]
    for f in range(result.k):
        folder = out / f"fold{f}"
        val = result.fold_of == f
        for split, chosen in (("train", ~val), ("val", val)):
            keep = {i for i, c in zip(ids, chosen) if c}
            write_json(folder / f"{split}.json", _subset(index.data, keep), indent=None)
            write_text(folder / f"{split}.txt",
                       "".join(s + "\n" for s, c in zip(stems, chosen) if c))
    write_json(out / "folds.json", {
        "ann_file": str(index.path), "method": result.method, "seed": result.seed,
        "k": result.k, "flatten": flatten, "classes": result.classes,
        "val_counts": result.counts.tolist(),
        "images_per_fold": result.images_per_fold.tolist(),
        "imbalance": dict(zip(result.classes, map(float, result.imbalance()))),
        "folds": result.folds,
        "on_invalid": on_invalid, **index.findings.to_json(),
    })


def kfold_masks(masks, k: int = 5, method: str = "greedy", seed: int = 0, out=None, *,
                ignore_index: int | None = 255, num_classes: int | None = None,
                log: Callable[[str], Any] | None = print, workers: int | None = None,
                progress: bool = False) -> KFoldResult:
    """Split a folder of PNG label masks into `k` folds balanced by per-image class presence.

    Each mask gives one row of an images x classes 0/1 matrix (1: the class has pixels in the
    mask; ignore pixels count for no class), and the same fold makers as :func:`kfold` balance
    it: ``"greedy"`` balances the number of images holding each class, ``"multilabel"``
    stratifies on the classes each image holds.

    Parameters
    ----------
    masks : path
        Folder of single-channel PNG masks (the mmseg layout: one per image, named by its
        stem; searched recursively).
    k : int >= 2
        Number of folds (at most the number of masks).
    method : {"greedy", "multilabel"}
        See :func:`kfold`.
    seed : int
        The same seed gives the same folds and files.
    out : path, optional
        Folder for ``fold{i}/train.txt`` and ``fold{i}/val.txt`` (mask stems: the path
        relative to `masks` without ``.png``, one per line, in sorted order) and
        ``folds.json``; nothing is written when None.
    ignore_index : int or None
        The void label (255 by default; any value, e.g. 11 or 0): not counted for any class.
        None: every value is a class.
    num_classes : int, optional
        Classes 0..num_classes-1; a label value outside them (and not the ignore value) is
        an error naming the mask. Default: the largest label found + 1.
    log : callable, optional
        Gets the table of images holding each class per validation fold.
    workers : int, optional
        Processes reading the masks (default all cores; 1: in this process).
    progress : bool
        A progress bar over the masks.

    Returns
    -------
    KFoldResult
        ``file_names``: the masks' relative paths; ``counts[f, c]``: validation images of fold
        ``f`` that hold class ``c`` (``unit == "images"``).

    Examples
    --------
    >>> folds = segkit.kfold_masks("data/masks", k=5, ignore_index=11,
    ...                            out="data/splits")  # doctest: +SKIP
    """
    from ._kfold_masks import folder_classes, list_mask_files, presence_matrix

    k = _validate.integer("k", k, minimum=2)
    _validate.choice("method", method, METHODS)
    seed = _validate.integer("seed", seed, minimum=0)
    if ignore_index is not None:
        ignore_index = _validate.integer("ignore_index", ignore_index, minimum=0)
    if num_classes is not None:
        num_classes = _validate.integer("num_classes", num_classes, minimum=1)
    folder = Path(masks)
    files = list_mask_files(folder)
    if k > len(files):
        raise InputError(f"k={k} is larger than the number of masks ({len(files)}) in {folder}")
    t0 = time.perf_counter()
    presence = presence_matrix(folder, files, ignore_index=ignore_index,
                               num_classes=num_classes, workers=workers, progress=progress)
    if method == "multilabel" and (presence.sum(0) > 0).sum() == 0:
        raise InputError(f"method='multilabel' needs labelled pixels to stratify on; every "
                         f"mask in {folder} is all ignore_index={ignore_index}")
    fold_of = (greedy_folds if method == "greedy" else multilabel_folds)(
        presence.astype(np.int64), k, seed)
    fold_counts = np.stack([presence[fold_of == f].sum(0) for f in range(k)]).astype(np.int64)
    result = KFoldResult(method, seed, k, files, fold_of, fold_counts,
                         folder_classes(folder, presence.shape[1]),
                         Path(out) if out is not None else None, unit="images")
    if out is not None:
        _write_masks(folder, result, Path(out), ignore_index)
    if log:
        log(result.table())
        log(f"{k} folds of {len(files)} masks in {time.perf_counter() - t0:.2f} s"
            + (f"; written to {out}/fold*/{{train,val}}.txt and {out}/folds.json"
               if out is not None else ""))
    return result


def _write_masks(folder: Path, result: KFoldResult, out: Path, ignore_index) -> None:
    stems = [name[: -len(".png")] for name in result.file_names]
    for f in range(result.k):
        val = result.fold_of == f
        for split, chosen in (("train", ~val), ("val", val)):
            write_text(out / f"fold{f}" / f"{split}.txt",
                       "".join(s + "\n" for s, c in zip(stems, chosen) if c))
    write_json(out / "folds.json", {
        "masks": str(folder), "method": result.method, "seed": result.seed, "k": result.k,
        "ignore_index": ignore_index, "counts": "images holding the class",
        "classes": result.classes, "val_counts": result.counts.tolist(),
        "images_per_fold": result.images_per_fold.tolist(),
        "imbalance": dict(zip(result.classes, map(float, result.imbalance()))),
        "folds": result.folds,
    })
