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


def bar_chart(values: dict[str, Sequence[float]], labels: Sequence[str], title: str,
              path: str | Path | None = None, *, width: int = 640,
              colors: Sequence[tuple[int, int, int]] | None = None) -> Image.Image:
    """Horizontal grouped bar chart of values in [0, 1]: one group per label, one bar per
    series (e.g. per-class IoU of several models). NaN bars are drawn as 'n/a'."""
    series = list(values)
    colors = list(colors or [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
                             (148, 103, 189), (140, 86, 75)])
    bar_h, gap, left, top = 10, 8, 110, 30
    group_h = bar_h * len(series) + gap
    height = top + group_h * len(labels) + 20 + 14 * len(series)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((8, 8), title, fill=(0, 0, 0))
    span = width - left - 60
    for g, label in enumerate(labels):
        y0 = top + g * group_h
        draw.text((8, y0 + max(0, (group_h - gap) // 2 - 6)), str(label)[:17], fill=(0, 0, 0))
        for s, name in enumerate(series):
            v = float(values[name][g])
            y = y0 + s * bar_h
            if v != v:  # NaN
                draw.text((left + 2, y - 1), "n/a", fill=(120, 120, 120))
                continue
            draw.rectangle([left, y, left + int(span * max(0.0, min(1.0, v))), y + bar_h - 2],
                           fill=colors[s % len(colors)])
            draw.text((left + int(span * max(0.0, min(1.0, v))) + 4, y - 1), f"{v:.3f}",
                      fill=(0, 0, 0))
    y = top + group_h * len(labels) + 6
    for s, name in enumerate(series):
        draw.rectangle([left, y + 14 * s, left + 10, y + 14 * s + 10], fill=colors[s % len(colors)])
        draw.text((left + 16, y + 14 * s - 1), name, fill=(0, 0, 0))
    if path is not None:
        canvas.save(path)
    return canvas
