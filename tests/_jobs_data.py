"""Small datasets the job tests share (generated, never downloaded)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from segkit.io.masks import write_mask
from segkit.palette import palette_for
from segkit.synthetic import blob_masks, make_coco_dataset

#: A non-contiguous category id for the last class (Clothing -> 42).
CATEGORY_IDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 42]
#: Images of different shapes (height, width), taken in turn.
SIZES = [(48, 64), (64, 40), (33, 47)]


def coco_dataset(root: Path, n_images: int = 8, seed: int = 3, **kwargs):
    kwargs.setdefault("category_ids", CATEGORY_IDS)
    kwargs.setdefault("rle_fraction", 0.4)
    return make_coco_dataset(root, n_images, SIZES, seed=seed, **kwargs)


def check_coco_features(ann_file: Path) -> None:
    """The generated file has what the tests rely on: both RLE kinds, polygons, overlapping
    annotations, an image without annotations, a non-contiguous category id."""
    from pycocotools import mask as mu

    data = json.loads(Path(ann_file).read_text())
    segs = [a["segmentation"] for a in data["annotations"]]
    assert any(isinstance(s, list) for s in segs), "no polygon"
    assert any(isinstance(s, dict) and isinstance(s["counts"], str) for s in segs), \
        "no compressed RLE"
    assert any(isinstance(s, dict) and isinstance(s["counts"], list) for s in segs), \
        "no uncompressed RLE"
    with_anns = {a["image_id"] for a in data["annotations"]}
    assert any(img["id"] not in with_anns for img in data["images"]), "no empty image"
    ids = sorted(c["id"] for c in data["categories"])
    assert ids != list(range(1, len(ids) + 1)), "category ids are contiguous"
    overlap = False
    for img in data["images"]:
        anns = [a for a in data["annotations"] if a["image_id"] == img["id"]]
        cover = np.zeros((img["height"], img["width"]), int)
        for a in anns:
            s = a["segmentation"]
            h, w = img["height"], img["width"]
            rle = (mu.merge(mu.frPyObjects(s, h, w)) if isinstance(s, list)
                   else mu.frPyObjects(s, h, w) if isinstance(s["counts"], list) else s)
            cover += mu.decode(rle)
        overlap |= bool((cover > 1).any())
    assert overlap, "no overlapping annotations"


def noisy_mask_folder(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """A folder of PNG masks in sub-folders: palette (P), grayscale (L) and 16-bit (I;16)
    files of different sizes, with label noise and some 255 (ignore) pixels. Returns
    {relative path: labels}."""
    rng = np.random.default_rng(seed)
    files = {}
    shapes = [(40, 52), (17, 23), (64, 64), (5, 3), (1, 9), (31, 30)]
    for i, (h, w) in enumerate(shapes):
        m = blob_masks(1, h, w, 11, noise=0.15, scale=8, seed=seed * 100 + i)[0]
        m[rng.random((h, w)) < 0.03] = 255
        rel = f"{['a', 'b/c'][i % 2]}/{i:03d}.png"
        if i == 2:
            # labels up to 3000 (and 65535) in a 16-bit PNG
            m16 = np.where(m == 255, 65535, m.astype(np.uint16) * 300).astype(np.uint16)
            write_mask(root / rel, m16)
            files[rel] = m16
            continue
        write_mask(root / rel, m, palette_for(256) if i % 3 != 1 else None)
        files[rel] = m
    return files


def die_on_three(x):
    """A per-item function whose worker process is killed (SIGKILL) on item 3."""
    import os
    import signal

    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return x
