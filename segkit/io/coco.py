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
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

BACKGROUND_NAMES = ("background", "backgroud", "_background_", "bg")


class CocoError(ValueError):
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


def _check_segmentation(source, ann: dict, image: dict) -> None:
    where = (f"annotation id {ann.get('id')!r} (image id {image['id']}, "
             f"{image['file_name']!r})")
    seg = ann.get("segmentation")
    if isinstance(seg, list):
        if not seg:
            _fail(source, f"{where}: empty segmentation")
        for poly in seg:
            if (not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2
                    or not all(_is_number(v) for v in poly)):
                n = len(poly) if isinstance(poly, list) else type(poly).__name__
                _fail(source, f"{where}: a polygon must be a flat list of x, y numbers with at "
                              f"least 3 points; got {n} values")
    elif isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if (not isinstance(size, list) or len(size) != 2
                or [size[0], size[1]] != [image["height"], image["width"]]):
            _fail(source, f"{where}: RLE size {size!r} disagrees with the image record "
                          f"(height {image['height']}, width {image['width']})")
        if isinstance(counts, list):
            if not all(_is_int(v) and v >= 0 for v in counts) or \
                    sum(counts) != image["height"] * image["width"]:
                _fail(source, f"{where}: uncompressed RLE counts must be non-negative integers "
                              "summing to height * width")
        elif not isinstance(counts, (str, bytes)):
            _fail(source, f"{where}: RLE counts must be a string or a list; "
                          f"got {type(counts).__name__}")
    else:
        _fail(source, f"{where}: segmentation must be polygons (a list) or RLE (a dict); "
                      f"got {type(seg).__name__}")
    if "area" in ann and not _is_number(ann["area"]):
        _fail(source, f"{where}: area must be a number; got {ann['area']!r}")


def validate_coco(data: Any, source: str | Path = "<coco>", *,
                  require_annotations: bool = True) -> dict:
    """Check the structure segkit relies on; returns `data`. Raises :class:`CocoError` naming
    `source` and the offending record."""
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
    for ann in anns:
        if not isinstance(ann, dict):
            _fail(source, f"annotation is not an object: {str(ann)[:120]}")
        image = images.get(ann.get("image_id"))
        if image is None:
            _fail(source, f"annotation id {ann.get('id')!r} names image id "
                          f"{ann.get('image_id')!r}, which is not in 'images'")
        if ann.get("category_id") not in cats:
            _fail(source, f"annotation id {ann.get('id')!r} (image {image['file_name']!r}) has "
                          f"category_id {ann.get('category_id')!r}, which is not in "
                          f"'categories' ({sorted(cats)})")
        _check_segmentation(source, ann, image)
    return data


def read_coco(ann_file: str | Path, *, require_annotations: bool = True) -> dict:
    """The validated JSON of a COCO annotation file (a plain dict)."""
    path = Path(ann_file)
    if not path.exists():
        raise CocoError(f"{path}: no such file")
    if path.is_dir():
        raise CocoError(f"{path}: is a folder; expected a COCO annotation file (.json)")
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise CocoError(f"{path}: not valid JSON ({exc})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise CocoError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from exc
    return validate_coco(data, path, require_annotations=require_annotations)


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
    """Images in file order with their annotations, and the label table."""

    path: Path
    data: dict
    table: LabelTable
    anns_by_image: dict[int, list[dict]] = field(repr=False)

    @classmethod
    def open(cls, ann_file: str | Path) -> "CocoIndex":
        data = read_coco(ann_file)
        by_image: dict[int, list[dict]] = {img["id"]: [] for img in data["images"]}
        for ann in data.get("annotations", []):
            by_image[ann["image_id"]].append(ann)
        return cls(Path(ann_file), data, label_table(data["categories"]), by_image)

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


def rasterize(image: Mapping[str, Any], anns: Sequence[dict], table: LabelTable | Mapping[int, int],
              dtype: Any = None) -> np.ndarray:
    """(height, width) label mask of one image: background 0, annotations painted with their
    label in decreasing area order. `table`: a :class:`LabelTable` or a category id -> label
    mapping."""
    from pycocotools import mask as mask_utils

    mapping = table.category_to_label if isinstance(table, LabelTable) else table
    if dtype is None:
        dtype = table.dtype if isinstance(table, LabelTable) else np.uint8
    h, w = int(image["height"]), int(image["width"])
    out = np.zeros((h, w), dtype)
    rles = [annotation_rle(a["segmentation"], h, w) for a in anns]
    for i in painting_order(anns, rles):
        painted = mask_utils.decode(rles[i]).view(bool)
        out[painted] = mapping[anns[i]["category_id"]]
    return out


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
