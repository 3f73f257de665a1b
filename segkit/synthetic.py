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


def model_probs(models: int, num_classes: int, h: int, w: int, *, agreement: float = 1.0,
                sharpness: float = 3.0, scale: int = 16, seed: int = 0) -> np.ndarray:
    """(models, C, h, w) float32 class probabilities (softmax over C) of several fake models
    that see one common scene: each model's logits are the shared smooth field plus its own
    smooth noise, weighted 1 : 1/agreement. For soft-voting tests and benchmarks."""
    rng = np.random.default_rng(seed)
    common = smooth_field(rng, num_classes, h, w, scale)
    out = np.empty((models, num_classes, h, w), np.float32)
    for m in range(models):
        logits = sharpness * (common + smooth_field(rng, num_classes, h, w, scale) / agreement)
        logits -= logits.max(0)
        e = np.exp(logits)
        out[m] = e / e.sum(0)
    return out
