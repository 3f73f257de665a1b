"""What a recipe's dataset holds, checked before anything is trained.

:func:`inspect_dataset` walks the images and their masks (a PNG mask folder or a COCO file)
and returns a :class:`DatasetSummary` (stems, typical image size, classes found, pixels per
class); every problem is a :class:`DatasetCheckError` naming the file and the value: an empty
folder, an unreadable image or mask, an image without a mask, a mask whose size differs from
its image, a label value that is neither a class nor the ignore value.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError, PathNotFoundError
from ..io.images import image_stem, list_images
from ..io.masks import read_mask
from ..io.names import flatten_name


class DatasetCheckError(DataError):
    """The dataset has a bad file or value; the message names the file and the value."""


@dataclass
class DatasetSummary:
    """What :func:`inspect_dataset` found."""
    source: str                                   # "masks" or "coco"
    stems: list[str]                              # training images, sorted
    image_size: tuple[int, int]                   # the most common (h, w)
    values: list[int] = field(default_factory=list)     # label values found (ignore excluded)
    class_pixels: list[int] = field(default_factory=list)  # per class (index = value)
    ignored_pixels: int = 0
    coco_classes: list[str] | None = None
    test_stems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_report(self, classes: list[str], ignore_index: int, test_masks: bool) -> dict:
        """The report.json "dataset" section."""
        pixels = list(self.class_pixels) + [0] * (len(classes) - len(self.class_pixels))
        return {"source": self.source, "images": len(self.stems),
                "test_images": len(self.test_stems), "test_masks": test_masks,
                "classes": list(classes), "ignore_index": ignore_index,
                "image_size": list(self.image_size), "class_pixels": pixels[:len(classes)],
                "ignored_pixels": self.ignored_pixels}


def _images(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise PathNotFoundError(f"{what}: no such folder {folder}")
    found = list_images(folder, allow_empty=True)
    if not found:
        raise DatasetCheckError(f"{what} {folder}: the folder is empty (no image file: .jpg, "
                                ".png, ...)")
    return found


def image_size(path: Path) -> tuple[int, int]:
    """(h, w) of an image from its header; an unreadable file is a DatasetCheckError."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            w, h = img.size
            img.verify()
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for unreadable files
        raise DatasetCheckError(f"{path}: cannot read as an image ({type(exc).__name__}: "
                                f"{exc})") from None
    return h, w


def mask_files(folder: Path, what: str = "masks") -> dict[str, Path]:
    """{stem: path} of the PNG masks below `folder` (stem ``dir+name`` for ``dir/name.png``)."""
    if not folder.is_dir():
        raise PathNotFoundError(f"{what}: no such folder {folder}")
    found = {}
    for p in sorted(folder.rglob("*.png")):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        found[image_stem(rel.as_posix())] = p
    if not found:
        raise DatasetCheckError(f"{what} {folder}: the folder is empty (no PNG mask)")
    return found


def check_pairs(images: dict[str, Path], masks: dict[str, Path], *, ignore_index: int,
                num_classes: int | None, what: str = "masks") -> tuple[Counter, np.ndarray, int]:
    """Check every image against its mask; returns (sizes, pixels per value, ignored pixels).

    `num_classes` None: any value is a class (the classes are the values found)."""
    lacking = sorted(set(images) - set(masks))
    if lacking:
        raise DatasetCheckError(f"image {images[lacking[0]]} has no mask in {what} (expected "
                                f"{lacking[0]}.png); {len(lacking)} image(s) lack one")
    sizes: Counter = Counter()
    counts = np.zeros(1, np.int64)
    for stem in sorted(images):
        hw = image_size(images[stem])
        try:
            mask = read_mask(masks[stem])
        except DataError as exc:
            raise DatasetCheckError(str(exc)) from None
        if mask.shape != hw:
            raise DatasetCheckError(f"mask {masks[stem]} is {mask.shape[1]}x{mask.shape[0]} "
                                    f"(w x h) but its image {images[stem]} is {hw[1]}x{hw[0]}")
        sizes[hw] += 1
        c = np.bincount(mask.ravel().astype(np.int64))
        if len(c) > len(counts):
            counts = np.pad(counts, (0, len(c) - len(counts)))
        counts[:len(c)] += c
        if num_classes is not None:
            bad = [v for v in np.flatnonzero(c) if v >= num_classes and v != ignore_index]
            if bad:
                raise DatasetCheckError(
                    f"mask {masks[stem]} has label value {int(bad[0])}, which is neither a "
                    f"class (0..{num_classes - 1}) nor the ignore value {ignore_index}")
    ignored = int(counts[ignore_index]) if ignore_index < len(counts) else 0
    if ignore_index < len(counts):
        counts[ignore_index] = 0
    return sizes, counts, ignored


def read_classes(path: Path) -> list[str]:
    """Class names from a list of names, a class table ({"classes": [...]}) or a COCO file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetCheckError(f"classes file {path}: cannot read as json ({exc})") from None
    if isinstance(data, dict) and "categories" in data:
        from ..io.coco.labels import label_table

        return list(label_table(data["categories"]).classes)
    classes = data.get("classes") if isinstance(data, dict) else data
    if not (isinstance(classes, list) and len(classes) >= 2
            and all(isinstance(c, str) for c in classes)):
        raise DatasetCheckError(f"classes file {path}: expected a list of at least 2 class "
                                f"names, a class table {{\"classes\": [...]}} or a COCO file; "
                                f"got {str(data)[:80]}")
    return classes


def inspect_dataset(images: Path, *, masks: Path | None = None, coco: Path | None = None,
                    ignore_index: int = 255, classes: list[str] | None = None,
                    test_images: Path | None = None, test_masks: Path | None = None,
                    ) -> DatasetSummary:
    """Check a dataset and summarise it (see the module docstring).

    Parameters
    ----------
    images : path
        The training images.
    masks, coco : path
        Their PNG mask folder, or their COCO annotation file (exactly one).
    ignore_index : int
        The void value of the masks.
    classes : list of str, optional
        The class names (index = label value); None: every value found is a class.
    test_images, test_masks : path, optional
        The test split (its masks, when given, are checked like the training ones).

    Returns
    -------
    DatasetSummary
    """
    found = _images(Path(images), "images")
    num = len(classes) if classes is not None else None
    if masks is not None:
        sizes, counts, ignored = check_pairs(found, mask_files(Path(masks)),
                                             ignore_index=ignore_index, num_classes=num)
        summary = DatasetSummary("masks", sorted(found), sizes.most_common(1)[0][0],
                                 [int(v) for v in np.flatnonzero(counts)],
                                 counts.tolist(), ignored)
    elif coco is not None:
        summary = _inspect_coco(found, Path(coco))
    else:
        raise DatasetCheckError("give the masks folder or the COCO file of the images")
    if test_images is not None:
        tests = _images(Path(test_images), "test_images")
        summary.test_stems = sorted(tests)
        if test_masks is not None:
            n = num if num is not None else (len(summary.class_pixels) or None)
            check_pairs(tests, mask_files(Path(test_masks), "test_masks"),
                        ignore_index=ignore_index, num_classes=n, what="test_masks")
    return summary


def _inspect_coco(found: dict[str, Path], coco: Path) -> DatasetSummary:
    from ..io.coco.index import CocoIndex

    if not coco.is_file():
        raise PathNotFoundError(f"coco: no such file {coco}")
    index = CocoIndex.open(coco)
    sizes: Counter = Counter()
    stems = []
    for img in index.data["images"]:
        stem = flatten_name(Path(img["file_name"]).with_suffix("").as_posix())
        if stem not in found:
            raise DatasetCheckError(f"{coco}: image {img['file_name']!r} (id {img['id']}) is "
                                    f"not in the images folder")
        hw = image_size(found[stem])
        if hw != (img["height"], img["width"]):
            raise DatasetCheckError(f"{coco}: image {img['file_name']!r} is recorded as "
                                    f"{img['width']}x{img['height']} but {found[stem]} is "
                                    f"{hw[1]}x{hw[0]}")
        sizes[hw] += 1
        stems.append(stem)
    if not stems:
        raise DatasetCheckError(f"{coco}: the file lists no image")
    extra = len(set(found) - set(stems))
    notes = [f"{extra} image(s) in the folder are not in {coco.name} (left out)"] if extra else []
    classes = list(index.table.classes)
    return DatasetSummary("coco", sorted(stems), sizes.most_common(1)[0][0],
                          coco_classes=classes, notes=notes)
