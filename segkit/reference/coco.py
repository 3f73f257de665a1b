"""Reference COCO rasteriser: pycocotools' own ``COCO.annToMask`` per annotation, painted in
order of decreasing area, exactly as GUIDE section 4 states it. The jobs' rasteriser
(`segkit.io.coco.rasterize`) is tested against this."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np


def pycocotools_coco(ann_file):
    """A pycocotools ``COCO`` object of the annotation file `ann_file`, as pycocotools reads it
    (no segkit checks; its progress prints silenced)."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = json.loads(Path(ann_file).read_text(encoding="utf-8"))
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def rasterize_reference(coco, image_id: int, category_to_label: dict[int, int],
                        dtype=np.uint8) -> np.ndarray:
    """(height, width) labels for one image of a pycocotools ``COCO`` object."""
    img = coco.imgs[image_id]
    out = np.zeros((img["height"], img["width"]), dtype)
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=None))
    areas = [a["area"] if "area" in a else coco.annToMask(a).sum() for a in anns]
    # sorted() is stable: equal areas keep the file's order.
    for _area, ann in sorted(zip(areas, anns), key=lambda t: t[0], reverse=True):
        out[coco.annToMask(ann) == 1] = category_to_label[ann["category_id"]]
    return out
