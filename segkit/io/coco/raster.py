"""Rasterising one image's COCO annotations into a label mask (GUIDE section 4).

As the original recipe did: start from 0 (background) and paint every annotation with its label
in order of decreasing area (the annotation's ``area`` field, or the area of its mask where the
field is missing; equal areas keep the file's order), so small objects stay on top. Polygons and
RLE (compressed ``counts`` strings and uncompressed ``counts`` lists) are decoded by
pycocotools. Height and width come from the image record. Crowd annotations (``iscrowd=1``) are
painted, painted with the ignore label 255, or left out (`crowd`).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ...errors import InputError
from .labels import LabelTable

CROWD_MODES = ("paint", "ignore", "skip")
#: The label crowd regions get with ``crowd="ignore"`` (mmseg's ignore index).
IGNORE_LABEL = 255


def is_crowd(ann: Mapping[str, Any]) -> bool:
    """Whether a COCO annotation is a crowd region (``iscrowd`` set)."""
    return bool(ann.get("iscrowd", 0))


def annotation_rle(seg: Any, height: int, width: int) -> dict:
    """One compressed RLE for a (validated) polygon list, uncompressed or compressed RLE."""
    from pycocotools import mask as mask_utils

    if isinstance(seg, list):
        return mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    if isinstance(seg.get("counts"), list):
        return mask_utils.frPyObjects(seg, height, width)
    counts = seg["counts"]
    return {"size": [height, width],
            "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def painting_order(anns: Sequence[dict], rles: Sequence[dict]) -> list[int]:
    """Indices of `anns` in painting order: decreasing area (the ``area`` field, else the
    mask's area), equal areas in file order."""
    from pycocotools import mask as mask_utils

    areas = [float(a["area"]) if "area" in a else float(mask_utils.area(r))
             for a, r in zip(anns, rles)]
    return sorted(range(len(anns)), key=lambda i: -areas[i])


def check_crowd(crowd: str, table: LabelTable | None = None) -> str:
    """Validate a `crowd` mode; ``"ignore"`` needs 8-bit labels (255 must not be a class)."""
    if crowd not in CROWD_MODES:
        raise InputError(f"crowd must be one of {', '.join(map(repr, CROWD_MODES))}; "
                         f"got {crowd!r}")
    if crowd == "ignore" and table is not None and table.dtype != np.uint8:
        raise InputError(f"crowd='ignore' paints crowd regions with {IGNORE_LABEL}, but these "
                         f"annotations have {table.num_labels} labels, so {IGNORE_LABEL} is a "
                         "class; use crowd='skip' or 'paint'")
    return crowd


def count_labels(mask: np.ndarray, minlength: int = 1, chunk: int = 1 << 22) -> np.ndarray:
    """``np.bincount(mask.ravel())`` in chunks, so that counting a 6000x5000 mask never builds
    its int64 copy (8 bytes per pixel).

    >>> count_labels(np.array([[0, 2], [2, 2]], np.uint8)).tolist()
    [1, 0, 3]
    """
    flat = mask.reshape(-1)
    counts = np.zeros(max(int(minlength), 1), np.int64)
    for i in range(0, flat.size, chunk):
        c = np.bincount(flat[i:i + chunk], minlength=len(counts))
        if len(c) > len(counts):
            counts = np.pad(counts, (0, len(c) - len(counts)))
        counts += c
    return counts


def rasterize(image: Mapping[str, Any], anns: Sequence[dict], table: LabelTable | Mapping[int, int],
              dtype: Any = None, *, crowd: str = "paint", ignore_label: int = IGNORE_LABEL,
              stats: dict | None = None) -> np.ndarray:
    """(height, width) label mask of one image: background 0, annotations painted with their
    label in decreasing area order. `table`: a :class:`~segkit.io.coco.labels.LabelTable` or
    a category id -> label mapping.

    Crowd annotations (``iscrowd=1``): ``crowd="paint"`` paints them with their label like the
    others; ``"ignore"`` paints them (in the same order) with `ignore_label` (255, mmseg's
    ignore index) so that training does not learn from them; ``"skip"`` leaves them out.
    `stats`, when given, receives ``crowd_pixels``: the pixels of the result that crowd
    regions set (``"skip"``: the pixels the left-out crowd regions cover).

    Memory: the result (painted column-major, returned row-major: two masks at the end), one
    decoded annotation at a time (1 byte per pixel) and, where crowd annotations are painted,
    one boolean owner mask.
    """
    from pycocotools import mask as mask_utils

    mapping = table.category_to_label if isinstance(table, LabelTable) else table
    if dtype is None:
        dtype = table.dtype if isinstance(table, LabelTable) else np.uint8
    check_crowd(crowd)
    h, w = int(image["height"]), int(image["width"])
    # Painted in column-major order, the layout pycocotools decodes to: copying a region
    # into a row-major mask strides through memory (10x slower at 6000x5000).
    out = np.zeros((h, w), dtype, order="F")
    crowd_pixels = 0
    if crowd == "skip":
        left_out = [a for a in anns if is_crowd(a)]
        if left_out:
            union = mask_utils.merge([annotation_rle(a["segmentation"], h, w) for a in left_out])
            crowd_pixels = int(mask_utils.area(union))
        anns = [a for a in anns if not is_crowd(a)]
    rles = [annotation_rle(a["segmentation"], h, w) for a in anns]
    flags = [is_crowd(a) for a in anns]
    owner = np.zeros((h, w), bool, order="F") if any(flags) else None  # set by a crowd
    for i in painting_order(anns, rles):
        painted = mask_utils.decode(rles[i]).view(bool)
        value = (ignore_label if crowd == "ignore" and flags[i]
                 else mapping[anns[i]["category_id"]])
        np.copyto(out, value, where=painted)  # no index arrays, whatever the region's size
        if owner is not None:
            np.copyto(owner, flags[i], where=painted)
        del painted
    if owner is not None:
        crowd_pixels = int(np.count_nonzero(owner))
    if stats is not None:
        stats["crowd_pixels"] = crowd_pixels
    return np.ascontiguousarray(out)
