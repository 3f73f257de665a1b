"""Tiny datasets and recipe edits shared by the tests/test_recipe*.py files."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from segkit.io.masks import read_mask, write_mask
from segkit.synthetic import make_coco_dataset


def coco_dataset(root: Path, n: int = 8, tests: int = 2, size: int = 64):
    """Generated COCO training and test sets (images nested in batch folders)."""
    train = make_coco_dataset(root / "train", n_images=n, size=size, seed=0, empty_images=1)
    test = make_coco_dataset(root / "test", n_images=tests, size=size, seed=7, empty_images=0,
                             folders=("batch_03_test",))
    return train, test


def mask_folder_dataset(root: Path, void: int = 11, n: int = 8, tests: int = 2,
                        size: int = 64) -> dict[str, Path]:
    """A mask-folder dataset (the mmseg layout: images/, masks/ of the same stems) whose void
    value is `void`: a 2-px frame of every mask is void, as hand-labelled borders are."""
    import segkit

    train, test = coco_dataset(root / "coco", n, tests, size)
    out = {}
    for name, ds in (("", train), ("test_", test)):
        masks = root / f"{name}masks"
        segkit.coco_to_masks(ds.ann_file, masks, flatten=True, workers=1, progress=False,
                             log=None)
        (masks / "labels.json").unlink()
        (masks / "masks_report.json").unlink()
        for p in masks.glob("*.png"):
            m = read_mask(p)
            m[:2], m[-2:], m[:, :2], m[:, -2:] = void, void, void, void
            write_mask(p, m.astype(np.uint8))
        out[f"{name}images"] = ds.root if hasattr(ds, "root") else Path(ds.ann_file).parent
        out[f"{name}masks"] = masks
    return out


def make_tiny(folder: Path, **sections) -> None:
    """Rewrite folder/recipe.toml at the tests' size (1 epoch, 2 folds, small tune/audit);
    `sections` replace whole fields, e.g. submission=dict(size=16)."""
    from segkit.recipe.settings import load_recipe
    from segkit.recipe.toml_file import write_recipe

    r = load_recipe(folder)
    r = replace(r, models=tuple(replace(m, epochs=1, batch_size=4) for m in r.models),
                folds=replace(r.folds, k=2),
                tune=replace(r.tune, budget=6, crf_steps=2, crf_images=2, crf_crop=32),
                audit=replace(r.audit, top=2))
    for name, values in sections.items():
        r = replace(r, **{name: replace(getattr(r, name), **values)})
    write_recipe(folder, r)


def edit(folder: Path, **sections) -> None:
    """Change settings of folder/recipe.toml: edit(d, submission=dict(size=16))."""
    from segkit.recipe.settings import load_recipe
    from segkit.recipe.toml_file import write_recipe

    r = load_recipe(folder)
    for name, values in sections.items():
        r = replace(r, **{name: replace(getattr(r, name), **values)})
    write_recipe(folder, r)
