"""`segkit.synthetic.make_coco_dataset`: the generated dataset the tests, the demo and the mmseg
plug-in share."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from segkit.io.coco import CocoIndex
from segkit.palette import TRASH_CLASSES
from segkit.synthetic import make_coco_dataset

from ._jobs_data import check_coco_features


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file()}


def test_dataset_contents(tmp_path):
    ds = make_coco_dataset(tmp_path / "d", 10, [(40, 56), (32, 32)], seed=1,
                           category_ids=[1, 2, 3, 4, 5, 6, 7, 8, 9, 42], rle_fraction=0.5,
                           test_images=3)
    check_coco_features(ds.ann_file)
    data = CocoIndex.open(ds.ann_file).data
    assert [i["file_name"] for i in data["images"]] == list(ds.images)
    assert [c["name"] for c in data["categories"]] == list(TRASH_CLASSES[1:])
    for img in data["images"]:
        with Image.open(ds.root / img["file_name"]) as im:
            assert im.mode == "RGB" and im.size == (img["width"], img["height"])
    test = CocoIndex.open(ds.test_file).data
    assert test["annotations"] == [] and [i["file_name"] for i in test["images"]] == \
        list(ds.test_images)
    assert not set(ds.test_images) & set(ds.images)
    with open(ds.sample_submission, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["image_id", "PredictionString"]
    assert [r[0] for r in rows[1:]] == list(ds.test_images)


def test_dataset_is_deterministic_per_seed(tmp_path):
    a = make_coco_dataset(tmp_path / "a", 4, 48, seed=7)
    b = make_coco_dataset(tmp_path / "b", 4, 48, seed=7)
    c = make_coco_dataset(tmp_path / "c", 4, 48, seed=8)
    assert _files(a.root) == _files(b.root)
    assert _files(a.root) != _files(c.root)


def test_objects_look_like_their_class(tmp_path):
    """Pixels of one class share a colour (the textures a model can learn)."""
    ds = make_coco_dataset(tmp_path / "d", 6, 96, seed=2, noise=0, rle_fraction=0)
    from segkit.io.coco import CocoIndex, rasterize

    index = CocoIndex.open(ds.ann_file)
    means = {}
    for img, anns in index.items():
        labels = rasterize(img, anns, index.table)
        rgb = np.asarray(Image.open(ds.root / img["file_name"]), np.float32)
        for k in np.unique(labels[labels > 0]):
            inner = labels == k
            means.setdefault(int(k), []).append(rgb[inner].mean(0))
    spread = [np.ptp(np.array(v), 0).max() for v in means.values() if len(v) > 1]
    assert spread and max(spread) < 40


@pytest.mark.parametrize("kwargs, message", [
    ({"classes": ["Background"]}, "classes must name the background"),
    ({"category_ids": [1, 2]}, "category_ids must be 10 distinct ids"),
    ({"empty_images": 5}, "0 <= empty_images <= n_images"),
])
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_coco_dataset(tmp_path, 3, 16, **kwargs)


def _category_counts(ann_file):
    data = CocoIndex.open(ann_file).data
    return np.bincount([a["category_id"] for a in data["annotations"]], minlength=11)[1:]


def test_balanced_classes_are_dealt_evenly(tmp_path):
    ds = make_coco_dataset(tmp_path / "d", 30, 64, seed=4, balanced=True, empty_images=0)
    counts = _category_counts(ds.ann_file)
    assert counts.max() - counts.min() <= 1, counts


def test_missed_objects_stay_in_the_clean_truth(tmp_path):
    kw = dict(seed=5, edge_noise=1.0, empty_images=0, rle_fraction=0.0)
    none = make_coco_dataset(tmp_path / "a", 6, 64, missed=(0, 1.0), **kw)
    assert _category_counts(none.ann_file).sum() == _category_counts(none.clean_ann_file).sum()
    every = make_coco_dataset(tmp_path / "b", 6, 64, missed=(10**6, 1.0), **kw)
    assert _category_counts(every.ann_file).sum() == 0
    assert _category_counts(every.clean_ann_file).sum() > 0


def test_coarse_vertices_trace_fewer_points(tmp_path):
    kw = dict(seed=6, edge_noise=1.0, empty_images=0, rle_fraction=0.0)
    fine = CocoIndex.open(make_coco_dataset(tmp_path / "a", 3, 96, vertex_step=2.0,
                                            **kw).ann_file).data
    coarse = CocoIndex.open(make_coco_dataset(tmp_path / "b", 3, 96, vertex_step=6.0,
                                              **kw).ann_file).data
    points = lambda d: sum(len(a["segmentation"][0]) for a in d["annotations"])  # noqa: E731
    assert points(coarse) < 0.5 * points(fine)


def test_classes_look_distinct():
    """The demo's classes differ in colour (mean RGB at least 60 grey levels apart), so a
    small model can tell them apart at 64 px."""
    from itertools import combinations

    from segkit.synthetic import APPEARANCE

    colours = np.array([a[0] for a in APPEARANCE[1:]], float)
    assert len(colours) == len(TRASH_CLASSES) - 1
    assert min(np.linalg.norm(a - b) for a, b in combinations(colours, 2)) >= 60
