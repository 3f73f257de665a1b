"""The stages' own pictures (report.json ``pictures``: paths relative to the recipe folder):
what resampling changed, and what the CRF changed in the ensemble."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io.atomic import atomic_path
from ..io.images import find_image, read_image
from ..io.masks import read_mask
from ..palette import palette_for
from ..viz import colorize, panel

#: at most this many masks are compared to find the one resampling changed most
SCAN = 200


def _save(tiles, titles, path: Path, side: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas = panel(tiles, titles, scale=max(1, 192 // max(1, side)))
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")


def _colour(mask: np.ndarray, num_classes: int) -> np.ndarray:
    return colorize(mask, palette_for(num_classes))


def resample_picture(data: Path, out: Path, num_classes: int) -> bool:
    """The photo, its mask and the resampled mask of the image resampling changed most."""
    stems = sorted(p.stem for p in (data / "masks_resampled").glob("*.png"))[:SCAN]
    best, most = None, 0
    for stem in stems:
        n = int((read_mask(data / "masks" / f"{stem}.png")
                 != read_mask(data / "masks_resampled" / f"{stem}.png")).sum())
        if n > most:
            best, most = stem, n
    if best is None:
        return False
    before = read_mask(data / "masks" / f"{best}.png")
    after = read_mask(data / "masks_resampled" / f"{best}.png")
    photo = read_image(find_image(data / "images", best))
    _save([photo, _colour(before, num_classes), _colour(after, num_classes)],
          [best, "mask", f"resampled ({most} px)"], out, max(before.shape))
    return True


def crf_picture(folder: Path, out: Path, num_classes: int, test_masks: bool) -> bool:
    """Two test images: the equal vote, the vote + CRF (and the truth when known)."""
    vote = folder / "ensembles" / "vote" / "labels"
    stems = sorted(p.stem for p in vote.glob("*.png"))[:2]
    if not stems:
        return False
    tiles, titles = [], []
    for stem in stems:
        tiles.append(read_image(find_image(folder / "data" / "test_images", stem)))
        titles.append(stem)
        for name, label in (("vote", "vote"), ("vote_crf", "vote + CRF")):
            tiles.append(_colour(read_mask(folder / "ensembles" / name / "labels" /
                                           f"{stem}.png"), num_classes))
            titles.append(label)
        truth = folder / "data" / "test_masks" / f"{stem}.png"
        if test_masks and truth.is_file():
            tiles.append(_colour(read_mask(truth), num_classes))
            titles.append("truth")
    _save(tiles, titles, out, max(t.shape[0] for t in tiles))
    return True
