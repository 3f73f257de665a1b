"""Generated data for tests, benchmarks and the demo: no downloads."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

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


# ----------------------------------------------------------------------------- COCO datasets

@dataclass(frozen=True)
class CocoDataset:
    """What :func:`make_coco_dataset` wrote. Image file names are relative to `root` (the
    annotation file's folder)."""

    root: Path
    ann_file: Path
    images: tuple[str, ...]
    classes: tuple[str, ...]
    category_ids: tuple[int, ...]
    test_file: Path | None = None
    test_images: tuple[str, ...] = ()
    sample_submission: Path | None = None
    #: annotations without edge noise (the truth the noisy ones were drawn from), with
    #: ``edge_noise > 0``
    clean_ann_file: Path | None = None
    #: ground truth of the test images (``test_truth=True``), for evaluating a held-out set
    test_truth_file: Path | None = None


def _sizes(size, n: int) -> list[tuple[int, int]]:
    if isinstance(size, (int, np.integer)):
        return [(int(size), int(size))] * n
    size = list(size)
    if len(size) == 2 and all(isinstance(s, (int, np.integer)) for s in size):
        return [(int(size[0]), int(size[1]))] * n
    pairs = [(int(h), int(w)) for h, w in size]
    return [pairs[i % len(pairs)] for i in range(n)]


def _class_texture(k: int, ys: np.ndarray, xs: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """(len(ys), 3) float32 colours of class k's texture at pixels (ys, xs): its own colour
    and stripe pattern (period and orientation fixed per class), so a model has something to
    learn."""
    from .palette import palette_for

    colour = palette_for(256)[k].astype(np.float32) * 0.7 + 40
    angle = np.deg2rad(37.0 * k)
    period = 5.0 + 3 * (k % 5)
    phase = rng.uniform(0, 2 * np.pi)
    t = (xs * np.cos(angle) + ys * np.sin(angle)) * (2 * np.pi / period) + phase
    return colour + 28.0 * np.sin(t).astype(np.float32)[:, None]


def _polygon(rng, h, w, centre=None, radius=None, scale=(0.08, 0.28)) -> np.ndarray:
    short = min(h, w)
    r = radius if radius is not None else rng.uniform(*scale) * short
    cy, cx = centre if centre is not None else (rng.uniform(0.1, 0.9) * h,
                                                rng.uniform(0.1, 0.9) * w)
    n = int(rng.integers(5, 11))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = r * rng.uniform(0.55, 1.0, n)
    xs = np.clip(cx + radii * np.cos(angles), 0, w - 1)
    ys = np.clip(cy + radii * np.sin(angles), 0, h - 1)
    return np.round(np.stack([xs, ys], 1), 1)


def _jagged(poly: np.ndarray, rng, noise: float, h: int, w: int, step: float = 2.0) -> np.ndarray:
    """The polygon's outline resampled every `step` pixels with each point moved by Gaussian
    noise of std `noise` pixels: an annotator's wobbly trace of the object."""
    closed = np.concatenate([poly, poly[:1]])
    pts = []
    for a, b in zip(closed[:-1], closed[1:]):
        n = max(1, int(np.ceil(np.hypot(*(b - a)) / step)))
        t = np.arange(n)[:, None] / n
        pts.append(a + t * (b - a))
    pts = np.concatenate(pts) + rng.normal(0, noise, (sum(len(p) for p in pts), 2))
    pts[:, 0] = np.clip(pts[:, 0], 0, w - 1)
    pts[:, 1] = np.clip(pts[:, 1], 0, h - 1)
    return np.round(pts, 1)


def _uncompressed_rle(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE counts: run lengths in column-major order, starting with 0s."""
    flat = np.asarray(mask, bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat.size and flat[0] else runs


def make_coco_dataset(out_dir, n_images: int = 12, size=(128, 128), *, seed: int = 0,
                      classes=None, category_ids=None, objects=(2, 6), noise: float = 6.0,
                      rle_fraction: float = 0.25, empty_images: int = 1, test_images: int = 0,
                      folders=("batch_01_vt", "batch_02_vt"), quality: int = 90,
                      edge_noise: float = 0.0, test_truth: bool = False,
                      object_scale=(0.08, 0.28)) -> CocoDataset:
    """Write a small COCO segmentation dataset of textured objects and return its paths.

    Images: RGB JPG files ``<folder>/<NNNN>.jpg`` (folders taken in turn) of a smooth
    background and star-shaped objects, each class with its own colour and stripe texture
    (plus Gaussian pixel `noise`, std in grey levels). ``annotations.json``: images with
    height/width, the categories (``classes[1:]``; ids `category_ids`, default ``1..n``: pass
    e.g. ``[1, ..., 9, 42]`` for a non-contiguous id), and one annotation per object with its
    ``area`` and ``bbox``. Polygons, except a fraction `rle_fraction` stored as RLE
    (alternately compressed and uncompressed, ``iscrowd`` 1). Objects overlap (the second of
    each image is placed on the first); the last `empty_images` images have no annotation.

    `size`: an int, ``(height, width)``, or a list of such pairs used in turn. `objects`: the
    range ``[lo, hi)`` of objects per image; `object_scale` the range of their radii as fractions
    of the shorter image side. With ``test_images > 0`` also writes ``test.json``
    (images and categories, no annotations) and ``sample_submission.csv`` in the competition's
    format (``image_id,PredictionString``, test file names in order); with `test_truth` also
    ``test_truth.json``, the test images' annotations (for scoring a held-out set).

    `edge_noise` (pixels) makes the annotations noisy the way hand-drawn ones are: each
    outline is traced as a wobbly polygon (points every 2 px moved by Gaussian noise of that
    std) while the image shows the clean object; the clean annotations go to
    ``annotations_clean.json``. Deterministic per `seed`; a few ms per 128x128 image.
    """
    from pycocotools import mask as mask_utils

    from .io.atomic import write_json, write_text
    from .palette import TRASH_CLASSES

    classes = tuple(TRASH_CLASSES if classes is None else classes)
    if len(classes) < 2:
        raise ValueError(f"classes must name the background and at least one class; got "
                         f"{classes!r}")
    ncat = len(classes) - 1
    category_ids = tuple(range(1, ncat + 1) if category_ids is None else
                         (int(c) for c in category_ids))
    if len(category_ids) != ncat or len(set(category_ids)) != ncat:
        raise ValueError(f"category_ids must be {ncat} distinct ids (one per class after the "
                         f"background); got {category_ids!r}")
    if n_images < 0 or test_images < 0 or not 0 <= empty_images <= n_images:
        raise ValueError(f"need n_images >= 0, test_images >= 0, 0 <= empty_images <= "
                         f"n_images; got {n_images}, {test_images}, {empty_images}")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sizes = _sizes(size, n_images + test_images)
    categories = [{"id": cid, "name": name, "supercategory": name}
                  for cid, name in zip(category_ids, classes[1:])]

    def render(i: int, with_objects: bool):
        h, w = sizes[i]
        name = f"{folders[i % len(folders)]}/{i:04d}.jpg" if folders else f"{i:04d}.jpg"
        base = rng.uniform(90, 170, 3).astype(np.float32)
        image = base + 18.0 * np.moveaxis(smooth_field(rng, 3, h, w, max(8, min(h, w) // 3)),
                                          0, -1)
        objs = []
        if with_objects:
            for j in range(int(rng.integers(objects[0], objects[1]))):
                if j == 1 and objs:  # overlap the first object
                    cy, cx = objs[0]["centre"]
                    poly = _polygon(rng, h, w, centre=(cy + rng.uniform(-8, 8),
                                                       cx + rng.uniform(-8, 8)),
                                    radius=rng.uniform(0.06, 0.14) * min(h, w))
                else:
                    poly = _polygon(rng, h, w, scale=object_scale)
                rle = mask_utils.merge(mask_utils.frPyObjects([poly.ravel().tolist()], h, w))
                area = int(mask_utils.area(rle))
                if area < 4:
                    continue
                k = int(rng.integers(1, ncat + 1))
                obj = {"poly": poly, "rle": rle, "area": area, "label": k,
                       "centre": (float(poly[:, 1].mean()), float(poly[:, 0].mean()))}
                if edge_noise > 0:  # the annotation traces the object with a wobbly hand
                    noisy = _jagged(poly, rng, edge_noise, h, w)
                    noisy_rle = mask_utils.merge(
                        mask_utils.frPyObjects([noisy.ravel().tolist()], h, w))
                    obj["clean"] = dict(obj)
                    obj.update(poly=noisy, rle=noisy_rle, area=int(mask_utils.area(noisy_rle)))
                objs.append(obj)
        for obj in sorted(objs, key=lambda o: -o.get("clean", o)["area"]):  # painting order
            ys, xs = np.nonzero(mask_utils.decode(obj.get("clean", obj)["rle"]))
            image[ys, xs] = _class_texture(obj["label"], ys, xs, rng)
        if noise:
            image += rng.normal(0, noise, image.shape).astype(np.float32)
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path, quality=quality)
        return name, (h, w), objs

    def annotation(obj: dict, ann_id: int, image_id: int, h: int, w: int, rle_pick: float,
                   n_rle: int) -> dict:
        ann = {"id": ann_id, "image_id": image_id,
               "category_id": category_ids[obj["label"] - 1], "area": obj["area"],
               "bbox": [round(float(v), 2) for v in mask_utils.toBbox(obj["rle"])],
               "iscrowd": 0}
        if rle_pick < rle_fraction:
            if n_rle % 2:
                ann["segmentation"] = {"size": [h, w],
                                       "counts": obj["rle"]["counts"].decode("ascii")}
            else:
                ann["segmentation"] = {"size": [h, w],
                                       "counts": _uncompressed_rle(mask_utils.decode(obj["rle"]))}
            ann["iscrowd"] = 1
        else:
            ann["segmentation"] = [obj["poly"].ravel().tolist()]
        return ann

    images, anns, clean_anns, names = [], [], [], []
    n_rle = 0
    for i in range(n_images):
        name, (h, w), objs = render(i, i < n_images - empty_images)
        names.append(name)
        images.append({"id": i, "file_name": name, "height": h, "width": w})
        for obj in objs:
            pick = rng.random()
            n_rle += pick < rle_fraction
            anns.append(annotation(obj, len(anns) + 1, i, h, w, pick, n_rle))
            if "clean" in obj:
                clean_anns.append(annotation(obj["clean"], len(anns), i, h, w, pick, n_rle))
    info = {"description": f"segkit synthetic dataset (seed {seed})", "version": "1.0"}
    ann_file = root / "annotations.json"
    write_json(ann_file, {"info": info, "licenses": [], "images": images,
                          "annotations": anns, "categories": categories}, indent=None)
    clean_file = None
    if edge_noise > 0:
        clean_file = root / "annotations_clean.json"
        write_json(clean_file, {"info": info, "licenses": [], "images": images,
                                "annotations": clean_anns, "categories": categories},
                   indent=None)

    test_file = submission = truth_file = None
    test_names = []
    if test_images:
        test_records, test_anns = [], []
        for t in range(test_images):
            i = n_images + t
            name, (h, w), objs = render(i, True)
            test_names.append(name)
            test_records.append({"id": i, "file_name": name, "height": h, "width": w})
            for obj in objs:  # the truth: what the image shows
                test_anns.append(annotation(obj.get("clean", obj), len(test_anns) + 1, i, h, w,
                                            1.0, 0))
        test_file = root / "test.json"
        write_json(test_file, {"info": info, "licenses": [], "images": test_records,
                               "annotations": [], "categories": categories}, indent=None)
        if test_truth:
            truth_file = root / "test_truth.json"
            write_json(truth_file, {"info": info, "licenses": [], "images": test_records,
                                    "annotations": test_anns, "categories": categories},
                       indent=None)
        submission = root / "sample_submission.csv"
        write_text(submission, "image_id,PredictionString\n"
                   + "".join(f"{n},\n" for n in test_names))
    return CocoDataset(root, ann_file, tuple(names), classes, category_ids, test_file,
                       tuple(test_names), submission, clean_file, truth_file)
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

    from .io.atomic import write_text

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


def make_huge_coco(out_dir, height: int = 5000, width: int = 6000, *, objects: int = 6,
                   seed: int = 0) -> Path:
    """A COCO file (annotations only, no image file) of one huge image: large overlapping
    polygons and a crowd RLE covering a quarter of it, for memory measurements. Returns the
    file's path."""
    from pycocotools import mask as mask_utils

    from .io.atomic import write_json

    rng = np.random.default_rng(seed)
    anns = []
    for i in range(objects):
        poly = _polygon(rng, height, width, scale=(0.2, 0.45))
        anns.append({"id": i + 1, "image_id": 1, "category_id": 1 + i % 3, "iscrowd": 0,
                     "segmentation": [poly.ravel().round(1).tolist()]})
    crowd = np.zeros((height, width, 1), np.uint8, order="F")
    crowd[: height // 2, : width // 2] = 1
    rle = mask_utils.encode(crowd)[0]
    del crowd
    anns.append({"id": objects + 1, "image_id": 1, "category_id": 1, "iscrowd": 1,
                 "segmentation": {"size": [height, width],
                                  "counts": rle["counts"].decode("ascii")}})
    path = Path(out_dir) / "huge.json"
    write_json(path, {"images": [{"id": 1, "file_name": "huge/IMG 0001.JPG", "height": height,
                                  "width": width}],
                      "categories": [{"id": c, "name": f"class {c}"} for c in (1, 2, 3)],
                      "annotations": anns}, indent=None)
    return path
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


def audit_dataset(out_dir, n_images: int = 12, *, sizes=((96, 128), (128, 96), (112, 112)),
                  edge_noise=(0.5, 4.0), seed: int = 0, progress: bool = False):
    """A dataset to check a label audit on known noise: ``images/``, noisy annotation masks
    ``gt/`` (each image drawn with its own edge-noise std, spread over `edge_noise`), the clean
    truth ``clean/``, and a confidence store ``store/`` of :func:`oof_probs` from the truth.
    Returns (gt, clean, images, store) paths. Image sizes cycle through `sizes`."""
    import zlib

    from .io.masks import read_mask
    from .io.store import ConfidenceStore
    from .jobs.masks import coco_to_masks

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
def oof_predictions(n: int, h: int, w: int, num_classes: int = 11, *,
                    noise: Sequence[float] = (2.0, 3.5, 3.5), rare_penalty: float = 1.5,
                    sharpness: float = 6.0, scale: int = 24, seed: int = 0):
    """Out-of-fold-like predictions of several models for ``segkit tune``: (true labels
    (n, h, w) uint8, probabilities (models, n, C, h, w) float32). Model m's logits are
    ``sharpness * onehot(truth) + noise_m * (smooth field + 0.3 * white noise)``, so a model
    with less noise is right more often and most pixels are confident; every model
    under-scores the classes above C/2 by `rare_penalty` (as networks under-predict rare
    classes), which a per-class bias repairs."""
    rng = np.random.default_rng(seed)
    labels = blob_masks(n, h, w, num_classes, noise=0.0, scale=scale, background=1.5,
                        seed=seed)
    probs = np.empty((len(noise), n, num_classes, h, w), np.float32)
    penalty = np.where(np.arange(num_classes) > num_classes // 2, rare_penalty, 0.0)
    penalty = penalty.astype(np.float32)[:, None, None]
    for i in range(n):
        onehot = (labels[i][None] == np.arange(num_classes)[:, None, None]).astype(np.float32)
        for m, sigma in enumerate(noise):
            field = smooth_field(rng, num_classes, h, w, max(2, scale // 3)) \
                + 0.3 * rng.standard_normal((num_classes, h, w)).astype(np.float32)
            logits = sharpness * onehot + sigma * field - penalty
            logits -= logits.max(0)
            e = np.exp(logits)
            probs[m, i] = e / e.sum(0)
    return labels, probs
