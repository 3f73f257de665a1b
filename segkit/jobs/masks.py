"""``segkit.coco_to_masks``: one label-mask PNG per image of a COCO annotation file."""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..io.atomic import remove_temporaries, write_json
from ..io.coco import IGNORE_LABEL, check_image_size, count_labels, rasterize
from ._coco import coco_report, coco_summary, open_index, output_names, resolve_palette
from ._common import (Tally, check_destination, check_engine, map_masks,
                      summary_lines, write_unless_finished)
from ._memory import PeakTally, item_peak

@dataclass(frozen=True)
class _MaskTask:
    out_dir: str
    image_root: str
    category_to_label: dict
    dtype: str
    palette: np.ndarray | None
    resume: bool
    check_images: bool
    crowd: str = "paint"


def _mask_one(task: _MaskTask, item) -> dict:
    image, anns, name = item
    timings: dict[str, float] = {}
    stats: dict = {}
    with item_peak() as memory:
        t0 = time.perf_counter()
        checked = task.check_images and check_image_size(image, task.image_root)
        mask = rasterize(image, anns, task.category_to_label, np.dtype(task.dtype),
                         crowd=task.crowd, stats=stats)
        timings["rasterize"] = time.perf_counter() - t0
        status = write_unless_finished(Path(task.out_dir) / name, mask, task.palette,
                                       task.resume, timings)
        counts = count_labels(mask)
        mask_bytes = mask.nbytes
        del mask
    return {"file": name, "status": status, "pixels": int(image["height"] * image["width"]),
            "label_pixels": counts.tolist(), "timings": timings,
            "flags": {"image_checked": bool(checked),
                      "crowd_pixels": stats.get("crowd_pixels", 0)},
            "memory": memory, "mask_bytes": mask_bytes}


def coco_to_masks(ann_file, out_dir, *, flatten: bool = False, palette: Any = None,
                  workers: int | None = None, engine: str = "local", resume: bool = True,
                  check_images: bool = True, on_invalid: str = "error", crowd: str = "paint",
                  progress: bool = True, log: Callable[[str], Any] | None = print) -> dict:
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
    on_invalid : {"error", "skip"}
        An invalid annotation (empty or degenerate segmentation, NaN or Infinity anywhere in
        it, an RLE whose size disagrees with its image, an image or category id without a
        record): ``"error"`` stops with the file, the annotation id and the reason;
        ``"skip"`` leaves it out and lists it (annotation id, image, reason) in the report.
        Duplicate annotation ids and coordinates outside the image (clipped) are reported
        either way, never fatal.
    crowd : {"paint", "ignore", "skip"}
        Crowd annotations (``iscrowd=1``): painted with their class (default, as pycocotools'
        ``annToMask`` and the original recipe do), painted with the ignore label 255
        (``"ignore"``, mmseg's convention: training does not learn from them), or left out.

    Returns
    -------
    dict
        The report, also written to ``out_dir/masks_report.json``; the label table is written
        to ``out_dir/labels.json``. Background is 0; annotations are painted in order of
        decreasing area; category ids other than ``1..n`` map through the label table. The
        report's schema is in the README ("Job reports").

    Examples
    --------
    >>> report = segkit.coco_to_masks("train.json", "masks/", on_invalid="skip",
    ...                               crowd="ignore")  # doctest: +SKIP
    >>> [s["reason"] for s in report["skipped"]]  # doctest: +SKIP
    ['empty segmentation', 'non-finite number Infinity in bbox[2]']
    """
    nworkers = check_engine(engine, workers)
    index = open_index(ann_file, on_invalid, crowd)
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
                     bool(resume), bool(check_images), crowd)
    items = [(img, anns, name) for (img, anns), name in zip(index.items(), names)]
    t0 = time.perf_counter()
    tally = Tally(["label_pixels"])
    peaks = PeakTally()
    map_masks(functools.partial(_mask_one, task), items, nworkers, engine, "masks", progress,
              tally, peaks)
    seconds = time.perf_counter() - t0
    write_json(out / "labels.json", index.table.to_json())
    report = _report(index, out, tally, seconds, nworkers, engine, flatten, stale)
    report.update(coco_report(index, tally, crowd, on_invalid))
    report["memory"] = peaks.to_json()
    report["params"].update(on_invalid=on_invalid, crowd=crowd)
    write_json(out / "masks_report.json", report)
    if log:
        summary_lines(report, log)
        log(f"    annotations painted: {report['annotations']}; images without annotations: "
            f"{report['empty_images']}; image sizes checked against the record: "
            f"{report['images_checked']}")
        coco_summary(report, log)
        log(f"    {peaks.describe()}")
        log(f"    labels: {out / 'labels.json'}; report: {out / 'masks_report.json'}")
    return report


def _report(index, out, tally, seconds, workers, engine, flatten, stale) -> dict:
    label_pixels = tally.vector("label_pixels", index.table.num_labels)
    ignore = tally.vector("label_pixels", IGNORE_LABEL + 1)[IGNORE_LABEL] \
        if index.table.dtype == np.uint8 else 0
    return {
        "job": "masks", "ann_file": str(index.path), "out_dir": str(out),
        **tally.rates(seconds),
        "annotations": sum(len(a) for a in index.anns_by_image.values()),
        "empty_images": sum(1 for a in index.anns_by_image.values() if not a),
        "images_checked": tally.flags.get("image_checked", 0),
        "label_pixels": {name: int(c) for name, c in zip(index.table.classes, label_pixels)},
        "ignore_pixels": int(ignore),
        "labels": index.table.to_json(), "temporaries_removed": stale,
        "params": {"flatten": flatten, "engine": engine, "workers": workers},
    }
