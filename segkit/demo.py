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


def run(out: str | Path = "demo_out", *, n: int = 16, size: int = 512, seed: int = 0,
        log=print) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log(f"segkit demo -> {out}/")
    for info in segkit.backends().values():
        log(f"    backend {info}")
    result = {"mode_filter": stage_mode_filter(out, n, size, seed, log)}
    index = out / "index.md"
    mf = result["mode_filter"]
    index.write_text(
        "# segkit demo\n\n"
        "## Mode resampling\n\n"
        f"{mf['changed']} of {mf['pixels']} pixels changed; every backend agrees: {mf['agree']}."
        "\n\n![before/after](mode_filter_before_after.png)\n\n"
        "Masks: `masks/` (noisy), `masks_resampled/` (cleaned).\n")
    log(f"done in {time.perf_counter() - t0:.1f} s; index: {index}")
    if not mf["agree"]:
        raise SystemExit("demo: backends disagree - this is a bug, please report it")
    return result
