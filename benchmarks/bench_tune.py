"""Tuning: the cost of one weights+bias candidate of `segkit tune` and of a whole default run,
on 3 float16 stores of 512x512 images with 11 classes (the recipe's validation set has 655).

The run uses TUNE_IMAGES images (131 = 655 / 5 by default: 11 GB of float16 for 655 would
crowd a shared machine; per-candidate costs scale linearly with the pixels, so the 655-image
figure is 5x the measured one). Against: what the issue calls the yardstick, soft vote plus the
confusion matrix per image (segkit's fastest backends), summed over the images; and the fused
kernel over every pixel (the cost of a candidate if no pixel could be set aside).

A whole run with the CRF search (`test_whole_crf_tuning_run`) reads each search image once
for both the search and the CRF fit.

Environment: TUNE_IMAGES (default 131), TUNE_DISTINCT (distinct generated images, repeated
under new stems; default 8).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

import segkit
from segkit.io.masks import write_mask
from segkit.jobs._tune_pixels import PixelReader, PixelSet, miou_of
from segkit.ops.vote_confusion import confusion_of_pixels, stack_pixels
from segkit.synthetic import oof_predictions

N_IMAGES = int(os.environ.get("TUNE_IMAGES", "131"))
N_DISTINCT = int(os.environ.get("TUNE_DISTINCT", "8"))
SIDE, MODELS, CLASSES = 512, 3, 11
#: model 0 clearly better; confident networks (most pixels far from a tie)
NOISE, SHARPNESS, RARE_PENALTY = (1.0, 3.0, 3.0), 12.0, 3.0
_CACHE: dict = {}


def dataset(tmp_root: Path):
    """3 stores + masks + images of N_IMAGES stems (N_DISTINCT generated images, repeated), in
    the page cache after writing; returns (specs, gt folder, stems); the images are in
    ``tmp_root / "images"`` (each class one colour, with noise)."""
    if "data" in _CACHE:
        return _CACHE["data"]
    from PIL import Image

    labels, probs = oof_predictions(N_DISTINCT, SIDE, SIDE, CLASSES, noise=NOISE,
                                    sharpness=SHARPNESS, rare_penalty=RARE_PENALTY, scale=64,
                                    seed=0)
    names = [f"c{k}" for k in range(CLASSES)]
    stores = [segkit.ConfidenceStore.create(tmp_root / f"m{m}", names) for m in range(MODELS)]
    stems = [f"img{i:04d}" for i in range(N_IMAGES)]
    rng = np.random.default_rng(0)
    colours = rng.integers(30, 226, (CLASSES, 3))
    pictures = [np.clip(colours[np.minimum(lab, CLASSES - 1)]
                        + rng.integers(-20, 21, lab.shape + (3,)), 0, 255).astype(np.uint8)
                for lab in labels]
    (tmp_root / "images").mkdir(parents=True, exist_ok=True)
    for i, stem in enumerate(stems):
        k = i % N_DISTINCT
        for m, store in enumerate(stores):
            store.write(stem, probs[m, k], check=False)
        write_mask(tmp_root / "gt" / f"{stem}.png", labels[k])
        Image.fromarray(pictures[k]).save(tmp_root / "images" / f"{stem}.png",
                                          compress_level=1)
    _CACHE["data"] = ([str(s.root) for s in stores], tmp_root / "gt", stems)
    return _CACHE["data"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return dataset(tmp_path_factory.mktemp("tune_bench"))


@pytest.fixture(scope="module")
def pixels(data):
    specs, gt, stems = data
    masks = {s: str(gt / f"{s}.png") for s in stems}
    reader = PixelReader(specs, masks, CLASSES, 255, float(np.exp(4.0) * 1.001))
    t = time.perf_counter()
    parts = [reader(s) for s in stems]
    read = time.perf_counter() - t
    pix = PixelSet.join(parts, MODELS, CLASSES)
    return pix, read


#: the recipe's validation set; times measured on N_IMAGES are scaled by TARGET / N_IMAGES
TARGET = 655


def _info(benchmark, what: str, pixels: int):
    benchmark.group = (f"tune: one candidate, {TARGET} x 3 x (11, 512, 512) float16 (measured on "
                       f"{N_IMAGES} images, times x {TARGET / N_IMAGES:.2f})")
    benchmark.extra_info["impl"] = what
    benchmark.extra_info["images"] = N_IMAGES
    benchmark.extra_info["scale"] = TARGET / N_IMAGES
    benchmark.extra_info["bytes"] = TARGET * MODELS * CLASSES * SIDE * SIDE * 2
    benchmark.extra_info["kernel_pixels"] = pixels


W, B = [0.5, 0.3, 0.2], np.linspace(-0.5, 0.5, CLASSES)


def test_candidate_kept_pixels(benchmark, pixels):
    """What a candidate costs in `segkit tune`: the kernel over the kept pixels + the fixed
    confusion + mIoU."""
    pix, read = pixels
    _info(benchmark, "segkit tune candidate (kept pixels)", pix.kept)
    benchmark.extra_info["kept_fraction"] = pix.kept / pix.pixels
    benchmark.extra_info["read_and_compact_seconds_1_worker"] = read
    benchmark(lambda: miou_of(pix.confusion(W, B)))
    print(f"\nkept {pix.kept:,} of {pix.pixels:,} pixels ({100 * pix.kept / pix.pixels:.1f}%); "
          f"reading + compaction {read:.1f} s on 1 worker")


def test_candidate_every_pixel(benchmark, data):
    """The fused kernel over every pixel, image by image from the stores (memory-mapped)."""
    specs, gt, stems = data
    stores = [segkit.ConfidenceStore(s) for s in specs]
    from segkit.io.masks import read_mask

    gts = {s: read_mask(gt / f"{s}.png").ravel() for s in stems[:N_DISTINCT]}
    factors = np.asarray(W, np.float32) / np.float32(sum(W))
    scale = np.exp(B).astype(np.float32)

    def run():
        cm = np.zeros((CLASSES, CLASSES), np.int64)
        for i, s in enumerate(stems):
            cm += confusion_of_pixels(stack_pixels([st.read(s) for st in stores]),
                                      gts[stems[i % N_DISTINCT]], factors, scale, 255)
        return cm

    _info(benchmark, "fused kernel, every pixel", N_IMAGES * SIDE * SIDE)
    benchmark.pedantic(run, rounds=2, iterations=1)


@pytest.mark.parametrize("backend", ["cpp", "numba"])
def test_soft_vote_plus_confusion(benchmark, data, backend):
    """The yardstick: soft vote + confusion matrix per image, over the images."""
    specs, gt, stems = data
    stores = [segkit.ConfidenceStore(s) for s in specs]
    from segkit.io.masks import read_mask

    gts = [read_mask(gt / f"{s}.png") for s in stems[:N_DISTINCT]]

    def run():
        cm = np.zeros((CLASSES, CLASSES), np.int64)
        for i, s in enumerate(stems):
            labels = segkit.soft_vote([st.read(s) for st in stores], W, backend=backend)
            cm += segkit.confusion_matrix(labels, gts[i % N_DISTINCT], CLASSES)
        return cm

    _info(benchmark, f"soft_vote + confusion_matrix ({backend})", N_IMAGES * SIDE * SIDE)
    benchmark.pedantic(run, rounds=2, iterations=1)


def test_whole_default_tuning_run(benchmark, data, tmp_path):
    """`segkit tune` with its defaults (weights + bias, budget 200, hold-out 0.2, 2 workers)."""
    specs, gt, stems = data
    out = {}

    def run():
        out["r"] = segkit.tune(specs, gt, tmp_path / "t", workers=2, progress=False, log=None)

    benchmark.group = f"tune: whole default run, {N_IMAGES} images"
    benchmark.extra_info["impl"] = "segkit tune (defaults, 2 workers)"
    benchmark.pedantic(run, rounds=1, iterations=1)
    r = out["r"]
    benchmark.extra_info.update({k: v for k, v in r.info.items()})
    benchmark.extra_info["candidates"] = len(r.history)
    benchmark.extra_info["holdout"] = {k: None if v is None else v["miou"]
                                       for k, v in r.metrics["holdout"].items()}
    print(f"\n{r}\n{r.info}")
    assert int(np.argmax(r.weights)) == 0


def test_whole_crf_tuning_run(benchmark, data, tmp_path):
    """`segkit tune --search weights,bias,crf --images` with a short CRF fit (8 fit images, 20
    steps, budget 60, 2 workers): the read serves the search and the fit (each image read
    once), then the held-out pass runs the recipe's CRF and the candidates."""
    specs, gt, stems = data
    images = Path(gt).parent / "images"
    out = {}

    def run():
        out["r"] = segkit.tune(specs, gt, tmp_path / "t", images=images,
                               search="weights,bias,crf", budget=60, crf_images=8,
                               crf_steps=20, workers=2, progress=False, log=None)

    benchmark.group = f"tune: whole run with the CRF search, {N_IMAGES} images"
    benchmark.extra_info["impl"] = "segkit tune (weights, bias, crf; 2 workers)"
    benchmark.pedantic(run, rounds=1, iterations=1)
    r = out["r"]
    benchmark.extra_info.update({k: v for k, v in r.info.items()})
    benchmark.extra_info["crf_fit_seconds"] = r.crf_fit["seconds"]
    benchmark.extra_info["crf_name"] = r.crf_name
    print(f"\n{r}\n{r.info}")
