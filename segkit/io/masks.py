"""Label masks as single-channel PNG files (palette PNG when a palette is known)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError, InputError
from .atomic import atomic_path

LABEL_MODES = {"L": np.uint8, "P": np.uint8, "I;16": np.uint16, "I;16B": np.uint16,
               "I": np.int32}


class MaskError(DataError):
    """A file that is not a usable label mask; the message names the file."""


def read_mask(path: str | Path, *, with_palette: bool = False):
    """(H, W) labels from a single-channel PNG (modes L, P, I;16, I). RGB or other colour
    images are refused: labels must be stored one value per pixel. With `with_palette`,
    returns (labels, palette or None)."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            if img.format != "PNG":
                raise MaskError(f"{path}: not a PNG file (format {img.format})")
            if img.mode not in LABEL_MODES:
                raise MaskError(f"{path}: mode {img.mode} is not a label mask (expected a "
                                "single-channel PNG: L, P, I;16 or I); RGB masks must be "
                                "converted to class indices first")
            palette = img.getpalette() if img.mode == "P" else None
            labels = np.array(img, dtype=LABEL_MODES[img.mode])
    except MaskError:
        raise
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for unreadable files
        raise MaskError(f"{path}: cannot read as an image ({type(exc).__name__}: {exc})") from exc
    if with_palette:
        pal = None if palette is None else np.array(palette, np.uint8).reshape(-1, 3)
        return labels, pal
    return labels


def mask_image(mask: np.ndarray, palette: np.ndarray | None = None) -> Image.Image:
    """A PIL image for a label mask: palette PNG for uint8 with a palette, L for uint8, I;16
    for uint16 and larger (values must fit)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise InputError(f"mask must be 2-D; got shape {mask.shape}")
    lo, hi = (int(mask.min()), int(mask.max())) if mask.size else (0, 0)
    if mask.dtype == np.uint8 or (palette is not None and lo >= 0 and hi < 256):
        img = Image.fromarray(mask.astype(np.uint8))  # mode L
        if palette is not None:
            img.putpalette(np.asarray(palette, np.uint8).reshape(-1).tolist())  # L -> P
        return img
    if lo < 0 or hi > 65535:
        raise InputError(f"mask values {lo}..{hi} do not fit a 16-bit PNG")
    return Image.fromarray(mask.astype(np.uint16))  # mode I;16


def write_mask(path: str | Path, mask: np.ndarray, palette: np.ndarray | None = None, *,
               compress_level: int | None = None) -> None:
    """Write a label mask PNG atomically (temporary name, then rename). `compress_level`
    (0-9, zlib) trades size for speed: PIL's default 6 takes ~18 ms at 512x512, 1 ~4 ms."""
    img = mask_image(mask, palette)
    options = {} if compress_level is None else {"compress_level": int(compress_level)}
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG", **options)
