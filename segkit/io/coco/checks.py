"""Checking a COCO file's JSON before it is used (GUIDE section 4).

Defects of the file's structure (images, categories) are errors. Defects of single annotations
(empty or degenerate segmentations, NaN or Infinity anywhere, an RLE whose size disagrees with
its image, image or category ids without a record) are errors naming the file, the annotation
and the reason with ``on_invalid="error"``, or are left out and listed with
``on_invalid="skip"`` (:class:`CocoFindings`). Duplicate annotation ids and polygons reaching
outside their image (clipped when painted) are reported, never fatal.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ...errors import DataError, InputError
from .raster import annotation_rle, is_crowd

ON_INVALID = ("error", "skip")


class CocoError(DataError):
    """A COCO file (or an image it names) that cannot be used; the message names the file and
    the record."""


def _fail(source, msg: str):
    raise CocoError(f"{source}: {msg}")


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool)


def _non_finite(value, path: str) -> tuple[str, float] | None:
    """(path, value) of the first NaN or infinite number inside `value`, e.g. 'bbox[2]'."""
    t = type(value)
    if t is float:
        return None if math.isfinite(value) else (path, value)
    if t is dict:
        for k, v in value.items():
            if type(v) in (int, str, bool) or v is None:
                continue
            hit = _non_finite(v, f"{path}.{k}" if path else str(k))
            if hit:
                return hit
    elif t is list:
        if all(type(v) is int or (type(v) is float and math.isfinite(v)) for v in value):
            return None  # the common case, without a call per number
        for i, v in enumerate(value):
            hit = _non_finite(v, f"{path}[{i}]")
            if hit:
                return hit
    return None


_NUMBER_TYPES = {int, float}


def _polygon_problem(k: int, poly: Any, height: int, width: int) -> tuple[str | None, bool]:
    """(why polygon `k` is unusable, or None; whether it reaches outside the image)."""
    what = "a polygon must be a flat list of x, y numbers with at least 3 points"
    if not isinstance(poly, list):
        return f"polygon {k}: {what}; got {type(poly).__name__}", False
    if not {type(v) for v in poly} <= _NUMBER_TYPES:  # JSON numbers are int or float
        bad = next(v for v in poly if type(v) not in _NUMBER_TYPES)
        return f"polygon {k}: {what}; got the value {bad!r}", False
    if len(poly) < 6 or len(poly) % 2:
        return f"polygon {k}: {what}; got {len(poly)} values", False
    if not all(map(math.isfinite, poly)):
        i = next(i for i, v in enumerate(poly) if not math.isfinite(v))
        return f"non-finite number {_json_number(poly[i])} in segmentation[{k}][{i}]", False
    xs, ys = poly[0::2], poly[1::2]
    outside = min(xs) < 0 or min(ys) < 0 or max(xs) > width or max(ys) > height
    return None, outside


def segmentation_problem(seg: Any, image: Mapping[str, Any]) -> tuple[str | None, bool]:
    """(why `seg` cannot be painted on `image`, or None; whether polygon coordinates fall
    outside the image and will be clipped). Reasons: not polygons or RLE, empty, a polygon of
    fewer than 3 points, an RLE whose size disagrees with the image record, malformed RLE
    counts, or a mask of zero area inside the image (degenerate or wholly outside)."""
    h, w = image["height"], image["width"]
    clipped = False
    if isinstance(seg, list):
        if not seg:
            return "empty segmentation", False
        for k, poly in enumerate(seg):
            reason, outside = _polygon_problem(k, poly, h, w)
            if reason:
                return reason, False
            clipped = clipped or outside
    elif isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not isinstance(size, list) or len(size) != 2 or [size[0], size[1]] != [h, w]:
            return (f"RLE size {size!r} disagrees with the image record (height {h}, "
                    f"width {w})"), False
        if isinstance(counts, list):
            if not all(_is_int(v) and v >= 0 for v in counts) or sum(counts) != h * w:
                return ("uncompressed RLE counts must be non-negative integers summing to "
                        "height * width"), False
        elif not isinstance(counts, (str, bytes)) or not counts:
            return (f"RLE counts must be a non-empty string or a list; got "
                    f"{type(counts).__name__}"), False
    else:
        return (f"segmentation must be polygons (a list) or RLE (a dict); got "
                f"{type(seg).__name__}"), False
    from pycocotools import mask as mask_utils

    try:
        area = int(mask_utils.area(annotation_rle(seg, h, w)))
    except Exception as exc:  # noqa: BLE001 - pycocotools raises several kinds for bad RLE
        return f"cannot decode the segmentation ({type(exc).__name__}: {exc})", False
    if area == 0:
        kind = "RLE covers" if isinstance(seg, dict) else "polygons cover"
        return f"degenerate segmentation: its {kind} no pixel of the image", clipped
    return None, clipped


def annotation_problem(ann: Any, images: Mapping[int, dict], categories: Sequence[int]
                       ) -> tuple[str | None, bool]:
    """(why annotation `ann` is invalid, or None; whether its coordinates get clipped).
    `images`: image id -> record; `categories`: the category ids."""
    if not isinstance(ann, dict):
        return f"annotation is not an object: {str(ann)[:80]}", False
    image = _lookup(images, ann.get("image_id"))
    if image is None:
        return f"image id {ann.get('image_id')!r} has no record in 'images'", False
    if not _contains(categories, ann.get("category_id")):
        return (f"category_id {ann.get('category_id')!r} has no record in 'categories' "
                f"({sorted(categories)})"), False
    # (polygon coordinates are checked, faster, with the segmentation)
    bad = _non_finite({k: v for k, v in ann.items() if k != "segmentation"}, "")
    if bad:
        return f"non-finite number {_json_number(bad[1])} in {bad[0]}", False
    if "area" in ann and not _is_number(ann["area"]):
        return f"area must be a number; got {ann['area']!r}", False
    if ann.get("iscrowd", 0) not in (0, 1):  # True/False compare equal to 1/0
        return f"iscrowd must be 0 or 1; got {ann.get('iscrowd')!r}", False
    return segmentation_problem(ann.get("segmentation"), image)


def _lookup(table: Mapping, key):
    """table.get(key), None for unhashable keys (a list where an id belongs)."""
    try:
        return table.get(key)
    except TypeError:
        return None


def _contains(collection, key) -> bool:
    try:
        return key in collection
    except TypeError:
        return False


def _json_number(x: float) -> str:
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")


@dataclass
class CocoFindings:
    """What the annotation check found: the annotations left out (``on_invalid="skip"``),
    duplicate annotation ids (reported, never fatal), annotations whose polygons reach outside
    their image (clipped when painted), and the number of crowd annotations."""

    skipped: list[dict] = field(default_factory=list)
    duplicate_ids: list = field(default_factory=list)
    clipped_ids: list = field(default_factory=list)
    crowd: int = 0

    def to_json(self) -> dict:
        return {"skipped": list(self.skipped), "skipped_count": len(self.skipped),
                "duplicate_annotation_ids": list(self.duplicate_ids),
                "clipped_annotations": len(self.clipped_ids),
                "clipped_annotation_ids": list(self.clipped_ids),
                "crowd_annotations": self.crowd}


def check_annotations(data: dict, source: str | Path = "<coco>", on_invalid: str = "error"
                      ) -> tuple[list[dict], CocoFindings]:
    """Check every annotation of a structurally valid COCO dict; returns (the annotations to
    use, findings). ``on_invalid="error"`` raises :class:`CocoError` at the first invalid
    annotation (naming the file, the annotation id, its image and the reason);
    ``"skip"`` leaves it out and records it in ``findings.skipped``."""
    if on_invalid not in ON_INVALID:
        raise InputError(f"on_invalid must be one of {', '.join(map(repr, ON_INVALID))}; "
                         f"got {on_invalid!r}")
    images = {img["id"]: img for img in data["images"]}
    cats = {c["id"] for c in data["categories"]}
    findings = CocoFindings()
    seen: set = set()
    dup: dict = {}
    valid = []
    for ann in data.get("annotations", []):
        reason, clipped = annotation_problem(ann, images, cats)
        ann_id = ann.get("id") if isinstance(ann, dict) else None
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        image = _lookup(images, image_id)
        if reason is not None:
            if on_invalid == "error":
                where = f"annotation id {ann_id!r}"
                if image is not None:
                    where += f" (image id {image_id}, {image['file_name']!r})"
                _fail(source, f"{where}: {reason}; pass on_invalid='skip' (--on-invalid skip) "
                              "to leave invalid annotations out and list them in the report")
            findings.skipped.append({"annotation_id": ann_id, "image_id": image_id,
                                     "file_name": image["file_name"] if image else None,
                                     "reason": reason})
            continue
        if ann_id is not None:
            key = ann_id if isinstance(ann_id, (int, str)) else repr(ann_id)
            if key in seen and key not in dup:
                dup[key] = None
            seen.add(key)
        if clipped:
            findings.clipped_ids.append(ann_id)
        findings.crowd += is_crowd(ann)
        valid.append(ann)
    findings.duplicate_ids = list(dup)
    return valid, findings


def check_coco(data: Any, source: str | Path = "<coco>", *, on_invalid: str = "error"
               ) -> tuple[dict, CocoFindings]:
    """Check the structure segkit relies on in the JSON `data` of a COCO file.

    Parameters
    ----------
    data : dict
        The file's JSON, as read.
    source : str or Path
        The file's name, for the messages.
    on_invalid : {"error", "skip"}
        Defects of the file's structure (images, categories, a missing ``annotations`` list)
        are always errors; an invalid annotation raises (``"error"``) or is left out and
        listed in the findings (``"skip"``).

    Returns
    -------
    data : dict
        `data` itself, or with ``on_invalid="skip"`` a shallow copy without the invalid
        annotations.
    findings : CocoFindings
        What the annotation check found.

    Raises
    ------
    CocoError
        Naming `source` and the offending record.
    """
    if on_invalid not in ON_INVALID:
        raise InputError(f"on_invalid must be one of {', '.join(map(repr, ON_INVALID))}; "
                         f"got {on_invalid!r}")
    if not isinstance(data, dict):
        _fail(source, f"a COCO file holds a JSON object; got {type(data).__name__}")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            _fail(source, f"missing or malformed {key!r} list")
    anns = data.get("annotations", [])
    if "annotations" not in data:
        _fail(source, "missing 'annotations' list")
    if not isinstance(anns, list):
        _fail(source, "'annotations' must be a list")
    images: dict[int, dict] = {}
    names: set[str] = set()
    for img in data["images"]:
        if not isinstance(img, dict) or not _is_int(img.get("id")):
            _fail(source, f"image record without an integer id: {str(img)[:120]}")
        if img["id"] in images:
            _fail(source, f"duplicate image id {img['id']}")
        if not isinstance(img.get("file_name"), str) or not img["file_name"]:
            _fail(source, f"image id {img['id']}: missing file_name")
        for dim in ("height", "width"):
            if not _is_int(img.get(dim)) or img[dim] < 1:
                _fail(source, f"image id {img['id']} ({img['file_name']!r}): {dim} must be a "
                              f"positive integer; got {img.get(dim)!r}")
        if img["file_name"] in names:
            _fail(source, f"duplicate file_name {img['file_name']!r}")
        names.add(img["file_name"])
        images[img["id"]] = img
    cats = set()
    for cat in data["categories"]:
        if not isinstance(cat, dict) or not _is_int(cat.get("id")) or cat["id"] < 0:
            _fail(source, f"category without a non-negative integer id: {str(cat)[:120]}")
        if cat["id"] in cats:
            _fail(source, f"duplicate category id {cat['id']}")
        cats.add(cat["id"])
    valid, findings = check_annotations(data, source, on_invalid)
    if len(valid) != len(anns):
        data = {**data, "annotations": valid}
    return data, findings


def check_image_size(image: Mapping[str, Any], root: str | Path) -> bool:
    """If the image file exists below `root`, check that its size matches the record (reads
    the header only). Returns whether a file was checked; raises :class:`CocoError` naming the
    file when the sizes disagree or the file cannot be read as an image."""
    from PIL import Image

    path = Path(root) / image["file_name"]
    if not os.path.isfile(path):
        return False
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for unreadable files
        raise CocoError(f"{path}: cannot read as an image ({type(exc).__name__}: {exc})") from exc
    if (h, w) != (image["height"], image["width"]):
        raise CocoError(f"{path}: image is {w}x{h} (width x height) but its COCO record (id "
                        f"{image['id']}) says {image['width']}x{image['height']}")
    return True
