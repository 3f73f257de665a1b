"""segkit.coco_to_masks on one 6000x5000 image (6 large overlapping polygons and a crowd RLE over
a quarter of it, crowd="ignore"): the 1-worker job (rasterise, count, PNG encode) with its peak
memory per worker from the report, against pycocotools' own annToMask painting (the reference
rasteriser, row-major boolean indexing) of the same image.

The machine's load average is recorded with every entry (extra_info["load"]).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil

import pytest

import segkit
from segkit.io.coco import label_table
from segkit.reference.coco import rasterize_reference
from segkit.synthetic import make_huge_coco

H, W = 5000, 6000
GROUP = f"masks one {W}x{H} image"


@pytest.fixture(scope="module")
def huge(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_masks")
    yield root, make_huge_coco(root, H, W)
    shutil.rmtree(root, ignore_errors=True)


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def test_masks_job_huge_image(benchmark, huge):
    root, ann = huge
    reports = []

    def run():
        reports.append(segkit.coco_to_masks(ann, root / "out", crowd="ignore", workers=1,
                                            resume=False, progress=False, log=None))

    benchmark.group = GROUP
    benchmark.extra_info["pixels"] = H * W
    benchmark.extra_info["impl"] = "segkit.coco_to_masks, 1 worker (incl. PNG write)"
    benchmark.extra_info["load_before"] = _load()
    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=0)
    benchmark.extra_info["load_after"] = _load()
    benchmark.extra_info["memory"] = reports[-1]["memory"]
    assert reports[-1]["crowd"]["pixels"] > 0


def test_pycocotools_reference_huge_image(benchmark, huge):
    from pycocotools.coco import COCO

    _, ann = huge
    coco = COCO()
    coco.dataset = json.loads(ann.read_text())
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    table = label_table(coco.dataset["categories"]).category_to_label
    benchmark.group = GROUP
    benchmark.extra_info["pixels"] = H * W
    benchmark.extra_info["impl"] = "pycocotools annToMask per annotation (no PNG write)"
    benchmark.extra_info["load_before"] = _load()
    benchmark.pedantic(lambda: rasterize_reference(coco, 1, table), rounds=3, iterations=1,
                       warmup_rounds=0)
    benchmark.extra_info["load_after"] = _load()
