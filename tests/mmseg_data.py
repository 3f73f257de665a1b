"""Small generated datasets for the mmseg tests: RGB images with coloured shapes and their
single-channel label masks, in the layout segkit's datasets read (images/, masks/,
splits/fold{K}/{train,val}.txt). Deterministic for a seed."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from segkit.palette import TRASH_PALETTE


def make_sample(rng: np.random.Generator, size: int = 128, num_classes: int = 11):
    """(image (H, W, 3) uint8, mask (H, W) uint8): a noisy background with a few rectangles and
    ellipses, each drawn in its class colour (with jitter) and painted into the mask."""
    img = Image.fromarray(rng.integers(90, 140, (size, size, 3), dtype=np.uint8))
    mask = Image.new("L", (size, size), 0)
    d_img, d_mask = ImageDraw.Draw(img), ImageDraw.Draw(mask)
    for _ in range(int(rng.integers(2, 5))):
        cls = int(rng.integers(1, num_classes))
        x0, y0 = rng.integers(0, size - 24, 2)
        w, h = rng.integers(16, size // 2, 2)
        box = [int(x0), int(y0), int(min(size - 1, x0 + w)), int(min(size - 1, y0 + h))]
        colour = tuple(int(c) for c in np.clip(TRASH_PALETTE[cls].astype(int)
                                               + rng.integers(-10, 10, 3), 0, 255))
        shape = d_img.rectangle if rng.random() < 0.5 else d_img.ellipse
        shape(box, fill=colour)
        (d_mask.rectangle if shape == d_img.rectangle else d_mask.ellipse)(box, fill=cls)
    return np.asarray(img), np.asarray(mask)


def make_dataset(root: str | Path, n: int = 6, *, size: int = 128, folds: int = 3,
                 nested: bool = True, seed: int = 0) -> list[str]:
    """Write `n` images (JPEG, every other one under a subfolder when `nested`, its mask named by
    the flattened stem `dir+name`) and `folds` split pairs (consecutive pairs of images share a
    fold, so each validation split holds a flat and a nested name); returns the stems."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    stems = []
    for i in range(n):
        img, mask = make_sample(rng, size)
        if nested and i % 2:
            rel, stem = f"batch_01/{i:04d}.jpg", f"batch_01+{i:04d}"
        else:
            rel, stem = f"{i:04d}.jpg", f"{i:04d}"
        (root / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / "images" / rel, quality=95)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(root / "masks" / f"{stem}.png")
        stems.append(stem)
    for k in range(folds):
        val = [s for i, s in enumerate(stems) if (i // 2) % folds == k]
        train = [s for s in stems if s not in val]
        split = root / "splits" / f"fold{k}"
        split.mkdir(parents=True, exist_ok=True)
        (split / "train.txt").write_text("\n".join(train) + "\n")
        (split / "val.txt").write_text("\n".join(val) + "\n")
    # the recipe trains on mode-resampled masks; here a copy stands in for `segkit resample`
    out = root / "masks_resampled"
    out.mkdir(exist_ok=True)
    for p in (root / "masks").glob("*.png"):
        (out / p.name).write_bytes(p.read_bytes())
    return stems


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The tiny models run faster on one torch thread, and far faster on a busy machine (two
    spinning OpenMP threads on two shared cores slow them down up to tenfold)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
