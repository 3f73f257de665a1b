"""Pictures: coloured masks, overlays and labelled side-by-side panels."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from .palette import palette_for


def colorize(mask: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """(H, W) labels -> (H, W, 3) uint8 colours."""
    pal = palette_for(256) if palette is None else np.asarray(palette, np.uint8)
    return pal[np.clip(mask, 0, len(pal) - 1)]


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5,
            palette: np.ndarray | None = None) -> np.ndarray:
    """Blend a coloured mask over an RGB image (background pixels stay as the image)."""
    colours = colorize(mask, palette).astype(np.float32)
    img = np.asarray(image, np.float32)
    out = np.where((mask > 0)[..., None], (1 - alpha) * img + alpha * colours, img)
    return out.clip(0, 255).astype(np.uint8)


def panel(tiles: Sequence[np.ndarray], titles: Sequence[str], path: str | Path | None = None,
          *, scale: int = 1, pad: int = 6) -> Image.Image:
    """Tiles (H, W, 3) side by side with a title above each; saved to `path` if given."""
    tiles = [np.asarray(t) for t in tiles]
    if scale > 1:
        tiles = [np.kron(t, np.ones((scale, scale, 1), t.dtype)) for t in tiles]
    h = max(t.shape[0] for t in tiles)
    w = sum(t.shape[1] for t in tiles) + pad * (len(tiles) + 1)
    title_h = 18
    canvas = Image.new("RGB", (w, h + title_h + 2 * pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x = pad
    for tile, title in zip(tiles, titles):
        canvas.paste(Image.fromarray(tile), (x, title_h + pad))
        draw.text((x, 3), title, fill=(0, 0, 0))
        x += tile.shape[1] + pad
    if path is not None:
        canvas.save(path)
    return canvas
