"""``segkit.coco_to_masks``: one label-mask PNG per image of a COCO annotation file."""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..io.atomic import remove_temporaries, write_json
from ..io.coco import CocoIndex, LabelTable, check_image_size, rasterize
from ..io.names import stem_of
from ._common import (DatasetError, Tally, check_destination, check_engine,
                      job_error_message, summary_lines, write_unless_finished)
from .engine import JobError, map_items

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
            raise ValueError(f"palette must be None, False, one of "
                             f"{', '.join(map(repr, PALETTE_NAMES))} or a (K, 3) array; "
                             f"got {palette!r}")
        if table.num_labels > len(TRASH_PALETTE):
            raise ValueError(f"palette='trash' has {len(TRASH_PALETTE)} colours but the "
                             f"annotations have {table.num_labels} labels; use 'auto'")
        return TRASH_PALETTE.copy()
    arr = np.asarray(palette)
    if arr.ndim != 2 or arr.shape[1] != 3 or not 1 <= len(arr) <= 256 or \
            arr.min(initial=0) < 0 or arr.max(initial=0) > 255:
        raise ValueError(f"palette array must be (K, 3) with 1 <= K <= 256 and values 0..255; "
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


@dataclass(frozen=True)
class _MaskTask:
    out_dir: str
    image_root: str
    category_to_label: dict
    dtype: str
    palette: np.ndarray | None
    resume: bool
    check_images: bool


def _mask_one(task: _MaskTask, item) -> dict:
    image, anns, name = item
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    checked = task.check_images and check_image_size(image, task.image_root)
    mask = rasterize(image, anns, task.category_to_label, np.dtype(task.dtype))
    timings["rasterize"] = time.perf_counter() - t0
    status = write_unless_finished(Path(task.out_dir) / name, mask, task.palette, task.resume,
                                   timings)
    counts = np.bincount(mask.ravel(), minlength=1)
    return {"file": name, "status": status, "pixels": int(mask.size),
            "label_pixels": counts.tolist(), "flags": {"image_checked": bool(checked)},
            "timings": timings}


def coco_to_masks(ann_file, out_dir, *, flatten: bool = False, palette: Any = None,
                  workers: int | None = None, engine: str = "local", resume: bool = True,
                  check_images: bool = True, progress: bool = True,
                  log: Callable[[str], Any] | None = print) -> dict:
    """Write one single-channel label PNG per image of a COCO annotation file.

    Parameters
    ----------
    ann_file : path
        COCO annotation file (images with height/width, categories, annotations with polygon
        or RLE segmentations).
    out_dir : path
        Output folder. Masks are ``out_dir/<dir>/<name>.png`` for ``<dir>/<name>.jpg``, or
        ``out_dir/<dir>+<name>.png`` with `flatten` (the original recipe's layout).
    flatten : bool
        Flatten folders into the file name with ``+`` (see ``segkit.io.names``).
    palette : None, "auto", "trash", "none", False or (K, 3) array
        Palette of the PNG files (masks stay one label per pixel): default colours, the trash
        palette, none (grayscale) or your own colours.
    workers, engine : see ``segkit.jobs.engine.map_items`` (process pool or Ray).
    resume : bool
        Skip images whose mask already exists with exactly the content this run would write
        (decoded and compared, never assumed); others are (re)written atomically.
    check_images : bool
        Where an image file exists next to the annotation file, check that its size matches
        the record (header only); a mismatch is an error naming the file.

    Returns
    -------
    dict
        The report, also written to ``out_dir/masks_report.json``; the label table is written
        to ``out_dir/labels.json``. Background is 0; annotations are painted in order of
        decreasing area; category ids other than ``1..n`` map through the label table.
    """
    nworkers = check_engine(engine, workers)
    index = CocoIndex.open(ann_file)
    out = check_destination(out_dir)
    pal = resolve_palette(palette, index.table)
    names = output_names(index, flatten)
    out.mkdir(parents=True, exist_ok=True)
    stale = remove_temporaries(out)
    if log:
        for line in index.table.describe():
            log(line)
    task = _MaskTask(str(out.resolve()), str(index.root.resolve()),
                     dict(index.table.category_to_label), index.table.dtype.str, pal,
                     bool(resume), bool(check_images))
    items = [(img, anns, name) for (img, anns), name in zip(index.items(), names)]
    t0 = time.perf_counter()
    tally = Tally(["label_pixels"])
    try:
        for r in map_items(functools.partial(_mask_one, task), items, workers=nworkers,
                           engine=engine, desc="masks", unit="mask", progress=progress):
            tally.add(r)
    except JobError as exc:
        raise DatasetError(job_error_message(exc)) from None
    seconds = time.perf_counter() - t0
    write_json(out / "labels.json", index.table.to_json())
    report = _report(index, out, tally, seconds, nworkers, engine, flatten, stale)
    write_json(out / "masks_report.json", report)
    if log:
        summary_lines(report, log)
        log(f"    annotations painted: {report['annotations']}; images without annotations: "
            f"{report['empty_images']}; image sizes checked against the record: "
            f"{report['images_checked']}")
        log(f"    labels: {out / 'labels.json'}; report: {out / 'masks_report.json'}")
    return report


def _report(index, out, tally, seconds, workers, engine, flatten, stale) -> dict:
    label_pixels = tally.vector("label_pixels", index.table.num_labels)
    return {
        "job": "masks", "ann_file": str(index.path), "out_dir": str(out),
        **tally.rates(seconds),
        "annotations": sum(len(a) for a in index.anns_by_image.values()),
        "empty_images": sum(1 for a in index.anns_by_image.values() if not a),
        "images_checked": tally.flags.get("image_checked", 0),
        "label_pixels": {name: int(c) for name, c in zip(index.table.classes, label_pixels)},
        "labels": index.table.to_json(), "temporaries_removed": stale,
        "params": {"flatten": flatten, "engine": engine, "workers": workers},
    }
