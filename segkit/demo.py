"""The demo behind `make demo` / `segkit demo`: segkit's main job on data it generates itself.

Stage 1 (now): mode resampling of noisy label masks, on every backend, with the pixels changed
per class and a before/after picture. Later stages (COCO masks, folds, training, ensembling,
CRF, submission) join as they land.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

import segkit

from .io.masks import write_mask
from .palette import TRASH_CLASSES, palette_for
from .synthetic import blob_masks
from .viz import colorize, panel


def _save_mask(mask: np.ndarray, path: Path) -> None:
    write_mask(path, mask, palette_for(256))


def changed_per_class(before: np.ndarray, after: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, 2) array: pixels that left each class, pixels that joined it."""
    diff = before != after
    left = np.bincount(before[diff].ravel(), minlength=num_classes)[:num_classes]
    joined = np.bincount(after[diff].ravel(), minlength=num_classes)[:num_classes]
    return np.stack([left, joined], 1)


def stage_mode_filter(out: Path, n: int, size: int, seed: int, log=print) -> dict:
    classes = TRASH_CLASSES
    log(f"[1] mode resampling: {n} generated {size}x{size} masks, {len(classes)} classes, "
        "5% label noise")
    masks = blob_masks(n, size, size, len(classes), noise=0.05, seed=seed)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    (out / "masks_resampled").mkdir(parents=True, exist_ok=True)

    timings = {}
    results = {}
    for name, info in segkit.backends().items():
        if not info.available or name == "numpy":
            continue
        segkit.mode_filter(masks[:1], backend=name)  # compile / warm up
        t0 = time.perf_counter()
        results[name] = segkit.mode_filter(masks, backend=name)
        timings[name] = time.perf_counter() - t0
    crop = masks[0, :48, :48]
    reference_ok = np.array_equal(segkit.mode_filter(crop, backend="numpy"),
                                  segkit.mode_filter(crop))
    names = list(results)
    agree = all(np.array_equal(results[names[0]], results[k]) for k in names[1:])
    after = results[names[0]]

    for i in tqdm(range(n), desc="    writing masks", unit="mask"):
        _save_mask(masks[i], out / "masks" / f"{i:04d}.png")
        _save_mask(after[i], out / "masks_resampled" / f"{i:04d}.png")

    pix = masks.size
    for name, secs in timings.items():
        log(f"    {name:6s} {secs * 1e3:8.1f} ms  {pix / secs / 1e6:8.0f} Mpix/s")
    log(f"    backends agree: {agree}; reference (numpy) agrees on a 48x48 crop: {reference_ok}")
    table = changed_per_class(masks, after, len(classes))
    log(f"    {'class':14s} {'pixels':>10s} {'left':>8s} {'joined':>8s}")
    counts = np.bincount(masks.ravel(), minlength=len(classes))
    for k, cls in enumerate(classes):
        log(f"    {cls:14s} {counts[k]:10d} {table[k, 0]:8d} {table[k, 1]:8d}")
    changed = int((masks != after).sum())
    log(f"    changed {changed} of {pix} pixels ({100 * changed / pix:.2f}%)")

    crop_px = min(size, 192)
    picture = out / "mode_filter_before_after.png"
    panel([colorize(masks[0, :crop_px, :crop_px]), colorize(after[0, :crop_px, :crop_px])],
          ["before (5% label noise)", "after segkit.mode_filter (3x3)"], picture, scale=2)
    log(f"    picture: {picture}")
    return {"changed": changed, "pixels": pix, "agree": agree and reference_ok,
            "timings": timings, "picture": picture}


def stage_convcrf(out: Path, n: int, size: int, seed: int, log=print) -> dict:
    """ConvCRF on generated scenes: a confidence store of coarse, noisy network probabilities
    and the images -> `segkit crf`'s job -> label PNGs, accuracy before/after, a picture."""
    from PIL import Image

    from .io.masks import read_mask
    from .io.store import ConfidenceStore
    from .jobs.crf import crf_job
    from .synthetic import crf_scene

    classes = TRASH_CLASSES
    n = max(1, min(n, 8))
    log(f"[2] ConvCRF: {n} generated {size}x{size} scenes, network probabilities at 1/8 "
        "resolution plus noise")
    images, truth, logits = crf_scene(n, size, size, len(classes), seed=seed + 1)
    store = ConfidenceStore.create(out / "crf_store", list(classes), model="synthetic")
    (out / "crf_images").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        e = np.exp(logits[i] - logits[i].max(0, keepdims=True))
        store.write(f"{i:04d}", e / e.sum(0, keepdims=True))
        Image.fromarray(images[i]).save(out / "crf_images" / f"{i:04d}.png")
    report = crf_job(out / "crf_store", out / "crf_images", out / "crf_labels", workers=1,
                     progress=False)
    after = np.stack([read_mask(out / "crf_labels" / f"{i:04d}.png") for i in range(n)])
    before = logits.argmax(1)
    acc_before = float((before == truth).mean())
    acc_after = float((after == truth).mean())
    log(f"    pixel accuracy {100 * acc_before:.2f}% -> {100 * acc_after:.2f}% "
        f"({report['seconds_per_image'] * 1e3:.0f} ms per image, preset convcrf, probs)")
    picture = out / "convcrf_before_after.png"
    crf_picture(images[0], before[0], after[0], truth[0], picture)
    log(f"    picture: {picture}")
    return {"accuracy_before": acc_before, "accuracy_after": acc_after, "picture": picture,
            "report": report}


def crf_picture(image, before, after, truth, path, crop: int = 256):
    """Image | network argmax | after ConvCRF | truth, side by side (the README picture)."""
    c = min(crop, image.shape[0], image.shape[1])
    tiles = [image[:c, :c], colorize(before[:c, :c]), colorize(after[:c, :c]),
             colorize(truth[:c, :c])]
    acc = [f"{100 * (m[:c, :c] == truth[:c, :c]).mean():.1f}%" for m in (before, after)]
    return panel(tiles, ["image", f"network argmax ({acc[0]})",
                         f"segkit.convcrf ({acc[1]})", "truth"], path)


def run(out: str | Path = "demo_out", *, n: int = 16, size: int = 512, seed: int = 0,
        log=print) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log(f"segkit demo -> {out}/")
    for info in segkit.backends().values():
        log(f"    backend {info}")
    result = {"mode_filter": stage_mode_filter(out, n, size, seed, log)}
    result["convcrf"] = stage_convcrf(out, n, size, seed, log)
    index = out / "index.md"
    mf = result["mode_filter"]
    crf = result["convcrf"]
    index.write_text(
        "# segkit demo\n\n"
        "## Mode resampling\n\n"
        f"{mf['changed']} of {mf['pixels']} pixels changed; every backend agrees: {mf['agree']}."
        "\n\n![before/after](mode_filter_before_after.png)\n\n"
        "Masks: `masks/` (noisy), `masks_resampled/` (cleaned).\n"
        "\n## ConvCRF\n\n"
        f"Pixel accuracy {100 * crf['accuracy_before']:.2f}% -> {100 * crf['accuracy_after']:.2f}%"
        ".\n\n![before/after](convcrf_before_after.png)\n\n"
        "Store `crf_store/`, images `crf_images/`, labels `crf_labels/`.\n")
    log(f"done in {time.perf_counter() - t0:.1f} s; index: {index}")
    if not mf["agree"]:
        raise SystemExit("demo: backends disagree - this is a bug, please report it")
    return result
