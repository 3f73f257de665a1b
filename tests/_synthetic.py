"""Generated data that only the tests use (segkit.synthetic keeps the generators that the
demo, benchmarks and scripts share). `audit_dataset` runs segkit's masks job, which a generator
in the package must not do."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segkit.synthetic import make_coco_dataset, smooth_field


# ----------------------------------------------------------------------------- label audits

def oof_probs(truth: np.ndarray, num_classes: int, *, sharpness: float = 5.0,
              noise: float = 1.2, blur: int = 5, scale: int = 16,
              seed: int = 0) -> np.ndarray:
    """(C, H, W) float32 out-of-fold-like probabilities of a model that learned the clean
    `truth` (H, W): softmax of `sharpness` times the one-hot truth box-blurred over `blur`
    pixels (uncertain at edges), plus smooth noise of std `noise`."""
    rng = np.random.default_rng(seed)
    h, w = truth.shape
    onehot = (np.arange(num_classes)[:, None, None] == truth[None]).astype(np.float32)
    if blur > 1:
        k = np.ones(blur, np.float32) / blur
        pad = blur // 2
        for axis in (1, 2):
            padded = np.pad(onehot, [(0, 0)] + [(pad, blur - 1 - pad) if a == axis else (0, 0)
                                                for a in (1, 2)], mode="edge")
            onehot = np.apply_along_axis(lambda v: np.convolve(v, k, "valid"), axis, padded)
    logits = sharpness * onehot + noise * smooth_field(rng, num_classes, h, w, scale)
    logits -= logits.max(0)
    e = np.exp(logits)
    return (e / e.sum(0)).astype(np.float32)


# ----------------------------------------------------------------------------- defective COCO

@dataclass
class DefectiveCoco:
    """What :func:`make_defective_coco` wrote.

    ``invalid``: annotation id -> a fragment of the reason segkit gives for leaving it out
    (ids of invalid annotations are unique and never shared with valid ones). ``valid_file``:
    the same dataset without the invalid annotations and with fresh annotation ids (so that
    pycocotools can index it), the reference for what ``on_invalid="skip"`` paints."""

    root: Path
    ann_file: Path
    valid_file: Path
    images: tuple[str, ...]
    invalid: dict
    duplicate_ids: tuple
    clipped_ids: tuple
    crowd_ids: tuple
    category_ids: tuple[int, ...]


def make_defective_coco(out_dir, n_images: int = 6, size=(48, 64), *, seed: int = 0
                        ) -> DefectiveCoco:
    """A COCO dataset carrying every defect public files carry, with the truth about each.

    Built on :func:`make_coco_dataset` (images written, category ids starting at 0 for a real
    class), then: image files renamed to mixed-case suffixes (``.JPG``), nested folders and
    names with spaces; and annotations added that are invalid, each for one reason: an empty
    segmentation, an empty segmentation with ``Infinity`` in its bbox (written as JSON's
    non-standard token), a polygon of 2 points, a polygon wholly outside the image, a
    compressed and an uncompressed RLE of zero area, ``NaN`` area, ``-Infinity`` in a polygon,
    an RLE whose size disagrees with its image, an image id and a category id without a
    record. Valid but unusual ones: a polygon reaching outside its image (clipped), an
    annotation reusing another's id (duplicate), and crowd regions (``iscrowd=1``, RLE).
    """
    import json
    import math

    from pycocotools import mask as mask_utils

    from segkit.io.atomic import write_text

    root = Path(out_dir)
    categories = tuple(range(0, 5))
    ds = make_coco_dataset(root, n_images, size, seed=seed,
                           classes=("Background", "General trash", "Paper", "Metal", "Glass",
                                    "Plastic"),
                           category_ids=categories, rle_fraction=0.3, empty_images=1,
                           folders=("batch 01/day a", "Batch_02"))
    data = json.loads(ds.ann_file.read_text())
    # mixed-case suffixes, names with spaces, nested folders
    for k, img in enumerate(data["images"]):
        old = root / img["file_name"]
        stem = Path(img["file_name"]).with_suffix("")
        new_name = f"{stem.parent}/img {stem.name}{'.JPG' if k % 2 else '.jpeg'}"
        (root / new_name).parent.mkdir(parents=True, exist_ok=True)
        old.rename(root / new_name)
        img["file_name"] = new_name
    anns = data["annotations"]
    rng = np.random.default_rng(seed)
    next_id = max((a["id"] for a in anns), default=0) + 1000
    img0 = data["images"][0]
    h, w = img0["height"], img0["width"]
    tri = [2.0, 2.0, w / 2, 3.0, 4.0, h / 2]
    invalid: dict = {}

    def add(reason: str, **fields):
        nonlocal next_id
        ann = {"id": next_id, "image_id": img0["id"], "category_id": categories[1],
               "iscrowd": 0, "area": 10.0, "bbox": [1.0, 1.0, 5.0, 5.0],
               "segmentation": [tri]}
        ann.update(fields)
        anns.insert(int(rng.integers(0, len(anns) + 1)), ann)
        invalid[next_id] = reason
        next_id += 1

    add("empty segmentation", segmentation=[])
    add("non-finite number Infinity in bbox[2]", segmentation=[],
        bbox=[3.0, 4.0, math.inf, 10.0])
    add("at least 3 points; got 4 values", segmentation=[[1.0, 1.0, 5.0, 5.0]])
    add("polygons cover no pixel", segmentation=[[-40.0, -40.0, -30.0, -40.0, -35.0, -30.0]])
    empty_rle = mask_utils.encode(np.zeros((h, w, 1), np.uint8, order="F"))[0]
    add("RLE covers no pixel", segmentation={"size": [h, w],
                                         "counts": empty_rle["counts"].decode("ascii")})
    add("RLE covers no pixel", segmentation={"size": [h, w], "counts": [h * w]})
    add("non-finite number NaN in area", area=math.nan)
    add("non-finite number -Infinity in segmentation[0][3]",
        segmentation=[[1.0, 1.0, 9.0, -math.inf, 5.0, 9.0]])
    add(f"RLE size [{h + 1}, {w}] disagrees with the image record",
        segmentation={"size": [h + 1, w], "counts": [(h + 1) * w]})
    add("image id 999999 has no record in 'images'", image_id=999999)
    add("category_id 77 has no record in 'categories'", category_id=77)
    # valid but unusual: clipped coordinates, a duplicate id, crowds
    clipped_id = next_id
    anns.append({"id": clipped_id, "image_id": img0["id"], "category_id": categories[2],
                 "iscrowd": 0, "bbox": [w - 6.0, h - 6.0, 12.0, 12.0],
                 "segmentation": [[w - 6.0, h - 6.0, w + 6.0, h - 6.0, w + 6.0, h + 6.0,
                                   w - 6.0, h + 6.0]]})
    next_id += 1
    dup_of = next(a["id"] for a in anns if a["id"] not in invalid)
    img1 = data["images"][1]
    anns.append({"id": dup_of, "image_id": img1["id"], "category_id": categories[3],
                 "iscrowd": 0, "bbox": [0.0, 0.0, 8.0, 8.0],
                 "segmentation": [[0.0, 0.0, 8.0, 0.0, 8.0, 8.0, 0.0, 8.0]]})
    crowd_ids = tuple(a["id"] for a in anns if a.get("iscrowd") and a["id"] not in invalid)
    ann_file = root / "defective.json"
    write_text(ann_file, json.dumps(data))  # allow_nan: NaN / Infinity tokens, as found
    valid = [dict(a, id=i + 1) for i, a in enumerate(a for a in anns if a["id"] not in invalid)]
    valid_file = root / "defective_valid.json"
    write_text(valid_file, json.dumps({**data, "annotations": valid}))
    return DefectiveCoco(root, ann_file, valid_file,
                         tuple(img["file_name"] for img in data["images"]), invalid, (dup_of,),
                         (clipped_id,), crowd_ids, categories)


def audit_dataset(out_dir, n_images: int = 12, *, sizes=((96, 128), (128, 96), (112, 112)),
                  edge_noise=(0.5, 4.0), seed: int = 0, progress: bool = False):
    """A dataset to check a label audit on known noise: ``images/``, noisy annotation masks
    ``gt/`` (each image drawn with its own edge-noise std, spread over `edge_noise`), the clean
    truth ``clean/``, and a confidence store ``store/`` of :func:`oof_probs` from the truth.
    Returns (gt, clean, images, store) paths. Image sizes cycle through `sizes`."""
    import zlib

    from segkit.io.masks import read_mask
    from segkit.io.store import ConfidenceStore
    from segkit.jobs.masks import coco_to_masks

    root = Path(out_dir)
    lo, hi = edge_noise
    levels = np.linspace(lo, hi, n_images)
    classes = None
    for i, level in enumerate(levels):
        ds = make_coco_dataset(root / "parts" / f"{i:03d}", 1, size=[sizes[i % len(sizes)]],
                               seed=seed * 1000 + i, edge_noise=float(level), empty_images=0,
                               folders=(f"img{i:03d}",))
        classes = ds.classes
        for which, ann in (("gt", ds.ann_file), ("clean", ds.clean_ann_file)):
            coco_to_masks(ann, root / which, workers=1, progress=progress, log=None)
        for name in ds.images:
            dst = root / "images" / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes((ds.root / name).read_bytes())
    store = ConfidenceStore.create(root / "store", classes, model="synthetic oof")
    for path in sorted((root / "clean").rglob("*.png")):
        rel = path.relative_to(root / "clean").with_suffix("")
        stem = "+".join(rel.parts)
        truth = read_mask(path)
        store.write(stem, oof_probs(truth, len(classes), seed=seed + zlib.crc32(stem.encode()) % 1000)
                    .astype(np.float16))
    return root / "gt", root / "clean", root / "images", root / "store"
