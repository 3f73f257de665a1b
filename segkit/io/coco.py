"""COCO annotation files: loading with validation, the category-id -> label table, and the
rasterisation of one image's annotations into a label mask (GUIDE section 4).

Rasterisation (as the original recipe did): start from 0 (background) and paint every
annotation with its label in order of decreasing area (the annotation's ``area`` field, or the
area of its mask where the field is missing; equal areas keep the file's order), so small
objects stay on top. Polygons and RLE (compressed ``counts`` strings and uncompressed
``counts`` lists) are decoded by pycocotools. Height and width come from the image record.

Labels: category ids ``1..n`` map to themselves (label 0 is the background). Any other set of
ids maps through an explicit table, in the order of the ids, to ``1..n``
(:class:`LabelTable`; the jobs print it and write it as ``labels.json``). A category with id 0
named "background" keeps label 0.

Checks: defects of the file's structure (images, categories) are errors. Defects of single
annotations (empty or degenerate segmentations, NaN or Infinity anywhere, an RLE whose size
disagrees with its image, image or category ids without a record) are errors naming the file,
the annotation and the reason with ``on_invalid="error"``, or are left out and listed with
``on_invalid="skip"`` (:class:`CocoFindings`). Duplicate annotation ids and polygons reaching
outside their image (clipped when painted) are reported, never fatal. Crowd annotations
(``iscrowd=1``) are painted, painted with the ignore label 255, or left out (`crowd`).
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from ..errors import DataError, InputError

BACKGROUND_NAMES = ("background", "backgroud", "_background_", "bg")


class CocoError(DataError):
    """A COCO file (or an image it names) that cannot be used; the message names the file and
    the record."""


@dataclass(frozen=True)
class LabelTable:
    """How category ids become mask labels.

    ``category_to_label[id]`` is the label painted for annotations of category ``id``;
    ``classes[label]`` its name (``classes[0]`` is the background). ``identity`` is True when
    every category id is its own label.
    """

    category_to_label: Mapping[int, int]
    classes: tuple[str, ...]
    identity: bool

    @property
    def num_labels(self) -> int:
        return len(self.classes)

    @property
    def dtype(self) -> np.dtype:
        """uint8 while the labels leave 255 free for the ignore label, else uint16."""
        return np.dtype(np.uint8) if self.num_labels <= 255 else np.dtype(np.uint16)

    def describe(self) -> list[str]:
        """Human-readable lines: one sentence for identity tables, the whole table otherwise."""
        if self.identity:
            return [f"category ids are their labels (1..{self.num_labels - 1}; 0 = background)"]
        lines = ["category ids are not 1..n; they map to labels through this table:",
                 f"    {'category id':>11s} -> label  class"]
        for cat, label in sorted(self.category_to_label.items()):
            lines.append(f"    {cat:11d} -> {label:5d}  {self.classes[label]}")
        return lines

    def to_json(self) -> dict:
        return {"classes": list(self.classes), "identity": self.identity,
                "category_to_label": {str(k): v for k, v in
                                      sorted(self.category_to_label.items())}}


def _is_background(name: str) -> bool:
    return name.strip().lower() in BACKGROUND_NAMES


def label_table(categories: Sequence[Mapping[str, Any]]) -> LabelTable:
    """The :class:`LabelTable` for a COCO ``categories`` list (already validated)."""
    by_id = {int(c["id"]): str(c.get("name", c["id"])) for c in categories}
    background_cat = [i for i, n in by_id.items() if i == 0 and _is_background(n)]
    ids = sorted(i for i in by_id if i not in background_cat)
    names = ["Background"]
    if ids == list(range(1, len(ids) + 1)):
        table = {i: i for i in ids}
        identity = True
    else:
        table = {cat: label for label, cat in enumerate(ids, start=1)}
        identity = False
    names += [by_id[i] for i in ids]
    if background_cat:
        table[0] = 0
        names[0] = by_id[0]
    return LabelTable(table, tuple(names), identity)


# ----------------------------------------------------------------------------- validation

def _fail(source, msg: str):
    raise CocoError(f"{source}: {msg}")


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool)


ON_INVALID = ("error", "skip")
CROWD_MODES = ("paint", "ignore", "skip")
#: The label crowd regions get with ``crowd="ignore"`` (mmseg's ignore index).
IGNORE_LABEL = 255


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


def is_crowd(ann: Mapping[str, Any]) -> bool:
    """Whether a COCO annotation is a crowd region (``iscrowd`` set)."""
    return bool(ann.get("iscrowd", 0))


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


def validate_coco(data: Any, source: str | Path = "<coco>", *,
                  require_annotations: bool = True, on_invalid: str = "error") -> dict:
    """Check the structure segkit relies on; returns `data` (with ``on_invalid="skip"``: a
    shallow copy without the invalid annotations). Raises :class:`CocoError` naming `source`
    and the offending record. See :func:`inspect_coco` for the findings."""
    return inspect_coco(data, source, require_annotations=require_annotations,
                        on_invalid=on_invalid)[0]


def inspect_coco(data: Any, source: str | Path = "<coco>", *,
                 require_annotations: bool = True, on_invalid: str = "error"
                 ) -> tuple[dict, CocoFindings]:
    """:func:`validate_coco` that also returns the :class:`CocoFindings`. Defects of the
    file's structure (images, categories) are always errors; defects of single annotations
    follow `on_invalid`."""
    if on_invalid not in ON_INVALID:
        raise InputError(f"on_invalid must be one of {', '.join(map(repr, ON_INVALID))}; "
                         f"got {on_invalid!r}")
    if not isinstance(data, dict):
        _fail(source, f"a COCO file holds a JSON object; got {type(data).__name__}")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            _fail(source, f"missing or malformed {key!r} list")
    anns = data.get("annotations", [])
    if require_annotations and "annotations" not in data:
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


def read_coco(ann_file: str | Path, *, require_annotations: bool = True,
              on_invalid: str = "error") -> dict:
    """The validated JSON of a COCO annotation file (a plain dict; with
    ``on_invalid="skip"`` without its invalid annotations). JSON's non-standard ``NaN``,
    ``Infinity`` and ``-Infinity`` are read (and make their annotation invalid)."""
    return inspect_coco(_read_json(ann_file), Path(ann_file),
                        require_annotations=require_annotations, on_invalid=on_invalid)[0]


def _read_json(ann_file: str | Path) -> Any:
    path = Path(ann_file)
    if not path.exists():
        raise CocoError(f"{path}: no such file")
    if path.is_dir():
        raise CocoError(f"{path}: is a folder; expected a COCO annotation file (.json)")
    try:
        with open(path, "rb") as f:
            data = json.load(f)  # reads NaN / Infinity / -Infinity as floats
    except json.JSONDecodeError as exc:
        raise CocoError(f"{path}: not valid JSON ({exc})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise CocoError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from exc
    return data


def load_coco(ann_file: str | Path):
    """A pycocotools ``COCO`` object for a validated annotation file (its progress prints
    silenced)."""
    from pycocotools.coco import COCO

    data = read_coco(ann_file)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


@dataclass
class CocoIndex:
    """Images in file order with their (valid) annotations, the label table, and what the
    annotation check found (:class:`CocoFindings`)."""

    path: Path
    data: dict
    table: LabelTable
    anns_by_image: dict[int, list[dict]] = field(repr=False)
    findings: CocoFindings = field(default_factory=CocoFindings, repr=False)

    @classmethod
    def open(cls, ann_file: str | Path, on_invalid: str = "error") -> "CocoIndex":
        """Read and check `ann_file`; invalid annotations raise (``"error"``) or are left
        out and listed in ``findings.skipped`` (``"skip"``)."""
        data, findings = inspect_coco(_read_json(ann_file), Path(ann_file),
                                      on_invalid=on_invalid)
        by_image: dict[int, list[dict]] = {img["id"]: [] for img in data["images"]}
        for ann in data.get("annotations", []):
            by_image[ann["image_id"]].append(ann)
        return cls(Path(ann_file), data, label_table(data["categories"]), by_image, findings)

    @property
    def images(self) -> list[dict]:
        return self.data["images"]

    @property
    def root(self) -> Path:
        """The folder image file names are relative to (the annotation file's folder)."""
        return self.path.parent

    def items(self) -> Iterator[tuple[dict, list[dict]]]:
        for img in self.images:
            yield img, self.anns_by_image[img["id"]]


# ----------------------------------------------------------------------------- rasterising

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
    label in decreasing area order. `table`: a :class:`LabelTable` or a category id -> label
    mapping.

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
