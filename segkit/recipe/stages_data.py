"""The data stages: masks (from COCO, or the user's PNGs normalised), resample, folds."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

import segkit

from ..io.atomic import remove_temporaries
from ..io.masks import read_mask, write_mask
from ..palette import palette_for
from .dataset import mask_files
from .stage import INTERNAL_IGNORE, Context, Stage, file_inputs, settings_of


def link(target: Path, at: Path) -> None:
    """`at` becomes a symbolic link to `target` (replacing an older link, atomically)."""
    at.parent.mkdir(parents=True, exist_ok=True)
    if at.is_symlink() and Path(os.readlink(at)) == target:
        return
    tmp = at.with_name(f".{at.name}.link-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target, target_is_directory=True)
    os.replace(tmp, at)


def normalise_masks(src: Path, dst: Path, ignore: int, num_classes: int) -> dict:
    """Copy the user's masks into `dst` under their image stems, the ignore value mapped to
    255; files already holding exactly that are left as they are. Returns pixel counts."""
    dst.mkdir(parents=True, exist_ok=True)
    remove_temporaries(dst)
    palette = palette_for(num_classes)
    counts = np.zeros(256, np.int64)
    files = mask_files(src)
    for stem, path in files.items():
        labels = read_mask(path)
        if ignore != INTERNAL_IGNORE:
            labels = np.where(labels == ignore, INTERNAL_IGNORE, labels).astype(labels.dtype)
        counts += np.bincount(labels.ravel().astype(np.int64), minlength=256)[:256]
        out = dst / f"{stem}.png"
        if out.is_file() and np.array_equal(read_mask(out), labels):
            continue
        write_mask(out, labels.astype(np.uint8), palette)
    for old in dst.glob("*.png"):
        if old.stem not in files:
            old.unlink()
    return {"masks": len(files), "class_pixels": counts[:num_classes].tolist(),
            "ignored_pixels": int(counts[INTERNAL_IGNORE])}


def count_pixels(folder: Path, num_classes: int) -> dict:
    counts = np.zeros(256, np.int64)
    files = mask_files(folder)
    for path in files.values():
        counts += np.bincount(read_mask(path).ravel().astype(np.int64), minlength=256)[:256]
    return {"masks": len(files), "class_pixels": counts[:num_classes].tolist(),
            "ignored_pixels": int(counts[INTERNAL_IGNORE])}


class Masks(Stage):
    name = "masks"

    def reads(self, ctx: Context) -> dict:
        return settings_of(ctx.recipe, "dataset.images", "dataset.masks", "dataset.coco",
                           "dataset.test_images", "dataset.test_masks", "dataset.ignore_index",
                           "dataset.classes_file",
                           *(("dataset.val_masks",) if ctx.recipe.dataset.val_masks else ()))

    def inputs(self, ctx: Context) -> dict:
        ds = ctx.recipe.dataset
        return file_inputs(ctx, images=ds.images, masks=ds.masks, coco=ds.coco,
                           test_masks=ds.test_masks, classes_file=ds.classes_file,
                           val_masks=ds.val_masks)

    def made(self, ctx: Context) -> list[str]:
        return ["data/masks"] + (["data/test_masks"] if ctx.has_test_masks else []) + \
            (["data/masks_val"] if ctx.recipe.dataset.val_masks else [])

    def run(self, ctx: Context) -> dict:
        ds, data = ctx.recipe.dataset, ctx.data
        link(ctx.user(ds.images).resolve(), data / "images")
        if ctx.has_test:
            link(ctx.user(ds.test_images).resolve(), data / "test_images")
        if ds.coco:
            segkit.coco_to_masks(ctx.user(ds.coco), data / "masks", flatten=True,
                                 palette="auto", progress=ctx.progress, log=None)
            res = count_pixels(data / "masks", ctx.num_classes)
            res["source"] = "coco"
        else:
            res = normalise_masks(ctx.user(ds.masks), data / "masks", ds.ignore_index,
                                  ctx.num_classes)
            res["source"] = "masks"
        if ctx.has_test_masks:
            normalise_masks(ctx.user(ds.test_masks), data / "test_masks", ds.ignore_index,
                            ctx.num_classes)
        if ds.val_masks:
            normalise_masks(ctx.user(ds.val_masks), data / "masks_val", ds.ignore_index,
                            ctx.num_classes)
        mapped = f", void value {ds.ignore_index} stored as 255" \
            if ds.ignore_index != INTERNAL_IGNORE else ""
        ctx.log(f"    {res['masks']} masks in data/masks{mapped}")
        return res


class Resample(Stage):
    name = "resample"
    after = ("masks",)

    def active(self, ctx: Context) -> str | None:
        return None if ctx.recipe.prepare.resample else "prepare.resample = false"

    def reads(self, ctx: Context) -> dict:
        return settings_of(ctx.recipe, "prepare.resample", "prepare.size", "prepare.ties")

    def made(self, ctx: Context) -> list[str]:
        return ["data/masks_resampled"]

    def run(self, ctx: Context) -> dict:
        p = ctx.recipe.prepare
        rep = segkit.resample(ctx.data / "masks", ctx.data / "masks_resampled", size=p.size,
                              ties=p.ties, ignore_index=INTERNAL_IGNORE, progress=ctx.progress,
                              log=None)
        ctx.log(f"    {rep['changed']} pixels changed ({100 * rep['changed_fraction']:.2f}%), "
                f"void pixels kept")
        from .pictures import resample_picture

        picture = "pictures/resample.png"
        made = resample_picture(ctx.data, ctx.path(picture), ctx.num_classes)
        return {"picture": picture if made else None,"changed_pixels": int(rep["changed"]),
                "changed_share": float(rep["changed_fraction"]),
                "ignore_index": ctx.recipe.dataset.ignore_index}


class Folds(Stage):
    name = "folds"
    after = ("masks",)

    def reads(self, ctx: Context) -> dict:
        return settings_of(ctx.recipe, "folds")

    def made(self, ctx: Context) -> list[str]:
        return ["data/splits"]

    def run(self, ctx: Context) -> dict:
        f, ds = ctx.recipe.folds, ctx.recipe.dataset
        out = ctx.data / "splits"
        if ds.coco:
            res = segkit.kfold(ctx.user(ds.coco), k=f.k, method=f.method, seed=f.seed, out=out,
                               flatten=True, log=None)
            sizes = [len(v) for v in res.folds]
        else:
            res = segkit.kfold_masks(ctx.data / "masks", k=f.k, method=f.method, seed=f.seed,
                                     out=out, ignore_index=INTERNAL_IGNORE,
                                     num_classes=ctx.num_classes, log=None, workers=ctx.workers,
                                     progress=ctx.progress)
            sizes = [len(v) for v in res.folds]
        ctx.log(f"    {f.k} folds of {', '.join(map(str, sizes))} validation images")
        return {"k": f.k, "val_sizes": sizes}
