"""The COCO input of the jobs that read one (``coco_to_masks``, ``resample`` from COCO,
``kfold``): opening it with the job's options, the mask file names, the palette of the
masks, and the report sections and printed lines about what the annotation check found.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..io.coco import IGNORE_LABEL, ON_INVALID, CocoIndex, LabelTable, check_crowd
from ..io.names import stem_of
from ._common import DatasetError

PALETTE_NAMES = ("auto", "trash", "none")


def resolve_palette(palette: Any, table: LabelTable) -> np.ndarray | None:
    """(256, 3) uint8 palette or None (plain grayscale) for the masks of `table`.

    ``None`` / ``"auto"``: segkit's default colours (``palette_for``: the trash recipe's 11
    colours first, generated ones after, 255 white). ``"trash"``: the recipe's palette, for
    at most 11 labels. ``False`` / ``"none"``: no palette (mode L). An array: (K, 3) colours.
    """
    from ..palette import TRASH_PALETTE, palette_for

    if table.dtype != np.uint8:
        return None  # 16-bit masks have no palette
    if palette is None or (isinstance(palette, str) and palette == "auto"):
        return palette_for(256)
    if palette is False or (isinstance(palette, str) and palette == "none"):
        return None
    if isinstance(palette, str):
        if palette != "trash":
            raise InputError(f"palette must be None, False, one of "
                             f"{', '.join(map(repr, PALETTE_NAMES))} or a (K, 3) array; "
                             f"got {palette!r}")
        if table.num_labels > len(TRASH_PALETTE):
            raise InputError(f"palette='trash' has {len(TRASH_PALETTE)} colours but the "
                             f"annotations have {table.num_labels} labels; use 'auto'")
        return TRASH_PALETTE.copy()
    arr = np.asarray(palette)
    if arr.ndim != 2 or arr.shape[1] != 3 or not 1 <= len(arr) <= 256 or \
            arr.min(initial=0) < 0 or arr.max(initial=0) > 255:
        raise InputError(f"palette array must be (K, 3) with 1 <= K <= 256 and values 0..255; "
                         f"got shape {arr.shape}")
    return arr.astype(np.uint8)


def output_names(index: CocoIndex, flatten: bool) -> list[str]:
    """Mask file names (relative to OUT_DIR) for the images in file order; refuses two images
    that would share one."""
    names = [stem_of(img["file_name"], flatten=flatten) + ".png" for img in index.images]
    seen: dict[str, str] = {}
    for img, name in zip(index.images, names):
        if name in seen:
            raise DatasetError(f"{index.path}: images {seen[name]!r} and {img['file_name']!r} "
                               f"would both be written to {name!r}")
        if name.startswith("/") or ".." in Path(name).parts:
            raise DatasetError(f"{index.path}: file_name {img['file_name']!r} points outside "
                               "the output folder")
        seen[name] = img["file_name"]
    return names


def open_index(ann_file, on_invalid: str, crowd: str) -> CocoIndex:
    """The checked :class:`CocoIndex` of a job's COCO input; bad options raise ValueError,
    defects of the file CocoError (a ValueError naming the file and the record)."""
    if on_invalid not in ON_INVALID:
        raise InputError(f"on_invalid must be one of {', '.join(map(repr, ON_INVALID))}; "
                         f"got {on_invalid!r}")
    check_crowd(crowd)
    index = CocoIndex.open(ann_file, on_invalid=on_invalid)
    check_crowd(crowd, index.table)
    return index


def coco_report(index: CocoIndex, tally, crowd: str, on_invalid: str) -> dict:
    """The report sections on the COCO input: checks, skipped annotations, crowd regions."""
    f = index.findings
    return {
        "on_invalid": on_invalid,
        **f.to_json(),
        "crowd": {"mode": crowd, "annotations": f.crowd,
                  "pixels": tally.flags.get("crowd_pixels", 0),
                  "label": IGNORE_LABEL if crowd == "ignore" else None},
    }


def coco_summary(report: dict, log) -> None:
    """Printed lines for :func:`coco_report`'s sections."""
    if not log:
        return
    if report["skipped_count"]:
        log(f"    invalid annotations skipped: {report['skipped_count']} (each with its reason "
            "in the report's 'skipped' list)")
        for s in report["skipped"][:5]:
            log(f"      annotation id {s['annotation_id']!r} ({s['file_name']!r}): "
                f"{s['reason']}")
        if report["skipped_count"] > 5:
            log(f"      ... and {report['skipped_count'] - 5} more")
    if report["duplicate_annotation_ids"]:
        ids = report["duplicate_annotation_ids"]
        log(f"    duplicate annotation ids (all kept): {len(ids)} "
            f"({', '.join(map(repr, ids[:5]))}{' ...' if len(ids) > 5 else ''})")
    if report["clipped_annotations"]:
        log(f"    annotations reaching outside their image (clipped): "
            f"{report['clipped_annotations']}")
    c = report["crowd"]
    if c["annotations"]:
        how = {"paint": "painted with their class", "ignore": f"painted {IGNORE_LABEL} (ignore)",
               "skip": "left out"}[c["mode"]]
        log(f"    crowd annotations: {c['annotations']} ({how}), {c['pixels']} pixels")
