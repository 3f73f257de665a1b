"""Generated data for tests, benchmarks and the demo: no downloads."""
from __future__ import annotations

import numpy as np
from PIL import Image


def smooth_field(rng: np.random.Generator, channels: int, h: int, w: int,
                 scale: int = 32) -> np.ndarray:
    """(channels, h, w) float32 random fields, smooth over about `scale` pixels."""
    gh, gw = max(2, -(-h // scale) + 1), max(2, -(-w // scale) + 1)
    coarse = rng.standard_normal((channels, gh, gw)).astype(np.float32)
    out = np.empty((channels, h, w), np.float32)
    for c in range(channels):
        out[c] = np.asarray(Image.fromarray(coarse[c]).resize((w, h), Image.BICUBIC))
    return out


def blob_masks(n: int, h: int, w: int, num_classes: int = 11, *, noise: float = 0.05,
               scale: int = 32, background: float = 1.0, seed: int = 0,
               dtype=np.uint8) -> np.ndarray:
    """(n, h, w) label masks: smooth class blobs plus a fraction `noise` of pixels set to a
    random class (the annotation noise a mode filter removes). `background` biases class 0."""
    rng = np.random.default_rng(seed)
    masks = np.empty((n, h, w), dtype)
    for i in range(n):
        field = smooth_field(rng, num_classes, h, w, scale)
        field[0] += background
        masks[i] = field.argmax(0)
        flip = rng.random((h, w)) < noise
        masks[i][flip] = rng.integers(0, num_classes, int(flip.sum()))
    return masks


def crf_scene(n: int, h: int, w: int, num_classes: int = 11, *, scale: int = 24,
              coarse: int = 8, noise: float = 1.0, seed: int = 0):
    """What ConvCRF is for: (images (n, h, w, 3) uint8 with sharp-edged coloured regions,
    true labels (n, h, w) uint8, logits (n, num_classes, h, w) float32 of a network that sees
    the scene at 1/`coarse` resolution, plus smooth and pixel noise)."""
    rng = np.random.default_rng(seed)
    labels = blob_masks(n, h, w, num_classes, noise=0.0, scale=scale, seed=seed)
    colours = rng.integers(30, 226, (num_classes, 3)).astype(np.float32)
    image = colours[labels] + rng.normal(0.0, 6.0, (n, h, w, 3))
    image = image.clip(0, 255).astype(np.uint8)
    ch, cw = max(1, h // coarse), max(1, w // coarse)
    logits = np.empty((n, num_classes, h, w), np.float32)
    for i in range(n):
        for c in range(num_classes):
            plane = Image.fromarray((labels[i] == c).astype(np.float32) * 4.0)
            logits[i, c] = np.asarray(plane.resize((cw, ch), Image.BILINEAR)
                                      .resize((w, h), Image.BILINEAR))
        logits[i] += noise * smooth_field(rng, num_classes, h, w, max(4, scale // 3))
        logits[i] += 0.5 * noise * rng.standard_normal((num_classes, h, w)).astype(np.float32)
    return image, labels, logits
