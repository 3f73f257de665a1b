"""The mask-folder side of ``segkit.kfold_masks``: which classes each mask holds.

A folder of single-channel PNG masks (the mmseg layout: one mask per image, named by the
image's stem; listed by the rules of :mod:`segkit.io.stems`) becomes an
images x classes 0/1 matrix: 1 where the class has at least one pixel in the mask. Pixels
equal to the ignore value count for no class.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import numpy as np

from ..io.masks import read_mask
from ..io.stems import MASKS, NOT_MASKS, list_stems
from ..errors import is_user_error
from ._common import DatasetError, job_error_message
from .engine import JobError, map_items

#: The masks of a kfold_masks folder: PNG masks by the rules of :mod:`segkit.io.stems`; other
#: image files are refused, other files skipped.
FOLDER_MASKS = dataclasses.replace(
    MASKS, refuse=NOT_MASKS, error=DatasetError,
    refused=("{path}: not a PNG mask{more}; the mask folder must hold only single-channel PNG "
             "label masks"))


def list_mask_files(folder: Path) -> list[str]:
    """Relative POSIX paths of the PNG masks below `folder`, sorted
    (:func:`segkit.io.stems.list_stems`)."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder of PNG masks")
    found = list_stems(folder, FOLDER_MASKS, allow_empty=True)
    if not found:
        raise DatasetError(f"{folder}: no PNG masks found")
    return [p.relative_to(folder).as_posix() for p in found.values()]


def _labels_present(folder: str, ignore_index: int | None, rel: str) -> np.ndarray:
    """The label values that have pixels in one mask (the ignore value left out)."""
    labels = read_mask(Path(folder) / rel)
    present = np.flatnonzero(np.bincount(labels.ravel().astype(np.int64)))
    if ignore_index is not None:
        present = present[present != ignore_index]
    return present


def presence_matrix(folder: Path, files: list[str], *, ignore_index: int | None,
                    num_classes: int | None, workers: int | None = None,
                    progress: bool = False) -> np.ndarray:
    """(images, classes) uint8: 1 where the class has pixels in the image's mask.

    `num_classes` None: the largest label found (the ignore value aside) + 1. A label value
    that is neither a class (< num_classes) nor the ignore value is an error naming the mask.
    """
    fn = _WithName(functools.partial(_labels_present, str(folder), ignore_index))
    try:
        found = dict(map_items(fn, files, workers=workers, progress=progress, desc="masks",
                               unit="mask"))
    except JobError as exc:
        if is_user_error(exc):  # an unreadable mask: one line naming it
            raise DatasetError(job_error_message(exc)) from exc
        raise
    top = max((int(v.max()) for v in found.values() if v.size), default=-1)
    n = top + 1 if num_classes is None else num_classes
    out = np.zeros((len(files), max(n, 1)), np.uint8)
    for i, rel in enumerate(files):
        labels = found[rel]
        if labels.size and labels.max() >= n:
            bad = int(labels[labels >= n][0])
            ign = "" if ignore_index is None else f" nor the ignore value {ignore_index}"
            raise DatasetError(f"{Path(folder) / rel}: label value {bad} is not a class "
                               f"(num_classes={n}: 0..{n - 1}){ign}; pass num_classes or "
                               "ignore_index to match the masks")
        out[i, labels] = 1
    return out


class _WithName:
    """fn(item) -> (item, fn(item)), picklable for the process pool."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, item):
        return item, self.fn(item)


def folder_classes(folder: Path, n: int) -> list[str]:
    """Class names from the folder's ``labels.json`` (``{"classes": [...]}``, as segkit masks
    writes it) when it names exactly `n` classes or more; else the label values as text."""
    path = folder / "labels.json"
    names: list = []
    if path.is_file():
        try:
            names = json.loads(path.read_text()).get("classes") or []
        except (OSError, ValueError, AttributeError):
            names = []
    return [str(names[c]) if c < len(names) else str(c) for c in range(n)]
