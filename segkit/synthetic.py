"""Generated data for the demo, the benchmarks and the scripts (and the tests): no downloads.

Generators that only the tests use live in ``tests/_synthetic.py``; nothing here runs a job.
"""
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


#: Each class's look in generated scenes: (RGB colour, texture, period in px). Colours and
#: textures differ between classes and hold within one (as paper is pale and printed, a can is
#: grey and shiny), so a small model can learn them from a few images at 64 px.
APPEARANCE = (
    None,                               # 0 Background: a smooth muted floor
    ((196, 64, 150), "dots", 5.0),      # 1 General trash
    ((244, 244, 240), "lines", 4.0),    # 2 Paper
    ((40, 130, 224), "checker", 6.0),   # 3 Paper pack
    ((120, 200, 215), "stripes", 4.0),  # 4 Metal
    ((50, 196, 110), "plain", 0.0),     # 5 Glass
    ((246, 140, 30), "vstripes", 5.0),  # 6 Plastic
    ((238, 230, 90), "dots", 3.0),      # 7 Styrofoam
    ((128, 70, 30), "wrinkles", 7.0),   # 8 Plastic bag
    ((216, 30, 36), "bands", 6.0),      # 9 Battery
    ((36, 40, 120), "checker", 3.0),    # 10 Clothing
)


def _class_texture(k: int, ys: np.ndarray, xs: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """(len(ys), 3) float32 colours of class k's texture at pixels (ys, xs): its own colour and
    texture (classes 1-10: :data:`APPEARANCE`; others: a palette colour with stripes of a
    period and orientation fixed per class), with a random phase per object."""
    ys = ys.astype(np.float32)
    xs = xs.astype(np.float32)
    py, px = rng.uniform(0, 16, 2)
    if 0 < k < len(APPEARANCE):
        colour, kind, period = APPEARANCE[k]
        colour = np.array(colour, np.float32)
        w = 2 * np.pi / max(period, 1.0)
        if kind == "plain":
            t = np.zeros_like(xs)
        elif kind in ("stripes", "lines", "vstripes", "bands"):
            angle = {"stripes": 45.0, "lines": 0.0, "vstripes": 90.0, "bands": 0.0}[kind]
            a = np.deg2rad(angle)
            t = np.sign(np.sin(((xs + px) * np.sin(a) + (ys + py) * np.cos(a)) * w))
        elif kind == "checker":
            t = np.sign(np.sin((xs + px) * w) * np.sin((ys + py) * w))
        elif kind == "dots":
            t = 2.0 * ((np.sin((xs + px) * w) * np.sin((ys + py) * w)) > 0.5) - 1.0
        else:  # wrinkles
            t = np.sin((xs + px) * w + 2.0 * np.sin((ys + py) * w * 0.6))
        return colour + 30.0 * t.astype(np.float32)[:, None]
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
                      object_scale=(0.08, 0.28), vertex_step: float = 2.0,
                      missed=(0, 0.0), balanced: bool = False) -> CocoDataset:
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
    ``annotations_clean.json``. `vertex_step`: the traced polygon's spacing of points in pixels
    (coarser vertices cut corners). ``missed=(area, p)``: an object smaller than `area` pixels
    is left unannotated with probability `p` (it stays in the clean annotations).
    `balanced`: classes are dealt in shuffled rounds (every class about as often) rather than
    drawn independently. Deterministic per `seed`; a few ms per 128x128 image.
    """
    from pycocotools import mask as mask_utils

    from .errors import InputError
    from .io.atomic import write_json, write_text
    from .palette import TRASH_CLASSES

    classes = tuple(TRASH_CLASSES if classes is None else classes)
    if len(classes) < 2:
        raise InputError(f"classes must name the background and at least one class; got "
                         f"{classes!r}")
    ncat = len(classes) - 1
    category_ids = tuple(range(1, ncat + 1) if category_ids is None else
                         (int(c) for c in category_ids))
    if len(category_ids) != ncat or len(set(category_ids)) != ncat:
        raise InputError(f"category_ids must be {ncat} distinct ids (one per class after the "
                         f"background); got {category_ids!r}")
    if n_images < 0 or test_images < 0 or not 0 <= empty_images <= n_images:
        raise InputError(f"need n_images >= 0, test_images >= 0, 0 <= empty_images <= "
                         f"n_images; got {n_images}, {test_images}, {empty_images}")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sizes = _sizes(size, n_images + test_images)
    categories = [{"id": cid, "name": name, "supercategory": name}
                  for cid, name in zip(category_ids, classes[1:])]
    deck: list[int] = []

    def draw_class() -> int:
        if not balanced:
            return int(rng.integers(1, ncat + 1))
        if not deck:
            deck.extend(rng.permutation(np.arange(1, ncat + 1)).tolist())
        return deck.pop()

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
                k = draw_class()
                obj = {"poly": poly, "rle": rle, "area": area, "label": k,
                       "centre": (float(poly[:, 1].mean()), float(poly[:, 0].mean()))}
                if edge_noise > 0:  # the annotation traces the object with a wobbly hand
                    noisy = _jagged(poly, rng, edge_noise, h, w, step=vertex_step)
                    noisy_rle = mask_utils.merge(
                        mask_utils.frPyObjects([noisy.ravel().tolist()], h, w))
                    obj["clean"] = dict(obj)
                    obj.update(poly=noisy, rle=noisy_rle, area=int(mask_utils.area(noisy_rle)))
                    obj["missed"] = area < missed[0] and rng.random() < missed[1]
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
            if not obj.get("missed"):
                anns.append(annotation(obj, len(anns) + 1, i, h, w, pick, n_rle))
            if "clean" in obj:
                clean_anns.append(annotation(obj["clean"], len(clean_anns) + 1, i, h, w, pick,
                                             n_rle))
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
