"""Class names and colours of the recycling-trash recipe (GUIDE section 6)."""
from __future__ import annotations

import numpy as np

TRASH_CLASSES = ("Background", "General trash", "Paper", "Paper pack", "Metal", "Glass",
                 "Plastic", "Styrofoam", "Plastic bag", "Battery", "Clothing")

TRASH_PALETTE = np.array([
    [0, 0, 0], [192, 0, 128], [0, 128, 192], [0, 128, 64], [128, 0, 0], [64, 0, 128],
    [64, 0, 192], [192, 128, 64], [192, 192, 128], [64, 64, 128], [128, 0, 192],
], dtype=np.uint8)


def palette_for(num_classes: int) -> np.ndarray:
    """(256, 3) uint8 palette: the trash colours first, then distinct generated colours;
    index 255 (the conventional ignore label) is white."""
    pal = np.zeros((256, 3), np.uint8)
    pal[: len(TRASH_PALETTE)] = TRASH_PALETTE
    rng = np.random.default_rng(12345)
    pal[len(TRASH_PALETTE):] = rng.integers(32, 224, (256 - len(TRASH_PALETTE), 3))
    pal[255] = 255
    return pal[: max(num_classes, 256)]
