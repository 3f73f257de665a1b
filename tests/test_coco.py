"""COCO loading, the label table, rasterisation and `segkit.coco_to_masks` / `segkit masks`."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import segkit
from segkit.cli import main
from segkit.io.coco import CocoError, CocoIndex, check_coco, label_table, rasterize
from segkit.io.masks import read_mask
from segkit.io.names import flatten_name
from segkit.jobs import DatasetError
from segkit.palette import TRASH_PALETTE, palette_for
from segkit.reference.coco import pycocotools_coco, rasterize_reference

from ._jobs_data import check_coco_features, coco_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    ds = coco_dataset(tmp_path_factory.mktemp("coco"), n_images=9, test_images=2)
    check_coco_features(ds.ann_file)
    return ds


# ----------------------------------------------------------------------------- label table

@pytest.mark.parametrize("ids, names, expected, identity", [
    ([1, 2, 3], ["a", "b", "c"], {1: 1, 2: 2, 3: 3}, True),
    ([3, 1, 2], ["c", "a", "b"], {1: 1, 2: 2, 3: 3}, True),
    ([1, 2, 5], ["a", "b", "e"], {1: 1, 2: 2, 5: 3}, False),
    ([0, 1, 2], ["General trash", "Paper", "Metal"], {0: 1, 1: 2, 2: 3}, False),
    ([0, 1, 2], ["Background", "Paper", "Metal"], {0: 0, 1: 1, 2: 2}, True),
    ([10, 20], ["x", "y"], {10: 1, 20: 2}, False),
])
def test_label_table(ids, names, expected, identity):
    table = label_table([{"id": i, "name": n} for i, n in zip(ids, names)])
    assert dict(table.category_to_label) == expected
    assert table.identity is identity
    by_label = {lab: names[ids.index(cat)] for cat, lab in expected.items()}
    for lab, name in by_label.items():
        assert table.classes[lab] == name
    text = "\n".join(table.describe())
    if not identity:
        for cat, lab in expected.items():
            assert f"{cat} ->" in text and f"{lab}  {by_label[lab]}" in text


def test_label_table_uses_uint16_beyond_254_labels():
    assert label_table([{"id": i, "name": str(i)} for i in range(1, 255)]).dtype == np.uint8
    assert label_table([{"id": i, "name": str(i)} for i in range(1, 256)]).dtype == np.uint16


# ----------------------------------------------------------------------------- rasterising

def _rle(mask):
    """Uncompressed COCO RLE of a small boolean mask (hand-checkable)."""
    flat = np.asarray(mask, bool).ravel(order="F")
    runs, cur, n = [], False, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    runs.append(n)
    return {"size": list(mask.shape), "counts": runs}


def test_rasterize_hand_made():
    """Painting order is decreasing area whatever the file order; equal areas: file order."""
    h, w = 4, 6
    big = np.zeros((h, w), bool)
    big[0:3, 0:4] = True  # area 12
    small = np.zeros((h, w), bool)
    small[1:3, 2:5] = True  # area 6, overlaps big
    tie_a = np.zeros((h, w), bool)
    tie_a[3, 0:2] = True  # area 2
    tie_b = np.zeros((h, w), bool)
    tie_b[3, 1:3] = True  # area 2, same as tie_a: painted after it (file order)
    image = {"id": 7, "file_name": "x.jpg", "height": h, "width": w}
    anns = [{"id": 1, "image_id": 7, "category_id": 2, "segmentation": _rle(small), "area": 6},
            {"id": 2, "image_id": 7, "category_id": 1, "segmentation": _rle(big), "area": 12},
            {"id": 3, "image_id": 7, "category_id": 3, "segmentation": _rle(tie_a), "area": 2},
            {"id": 4, "image_id": 7, "category_id": 4, "segmentation": _rle(tie_b), "area": 2}]
    expected = np.array([[1, 1, 1, 1, 0, 0],
                         [1, 1, 2, 2, 2, 0],
                         [1, 1, 2, 2, 2, 0],
                         [3, 4, 4, 0, 0, 0]], np.uint8)
    table = {1: 1, 2: 2, 3: 3, 4: 4}
    np.testing.assert_array_equal(rasterize(image, anns, table), expected)
    # without the area field the mask's own area decides (same order here)
    for a in anns:
        del a["area"]
    np.testing.assert_array_equal(rasterize(image, anns, table), expected)
    # a polygon: the axis-aligned square (1,0)-(3,2) covers pixels rows 0..2, cols 1..3 as
    # pycocotools rasterises it; compare with pycocotools' own decoding
    from pycocotools import mask as mu

    poly = [1.0, 0.0, 3.0, 0.0, 3.0, 2.0, 1.0, 2.0]
    ref = mu.decode(mu.merge(mu.frPyObjects([poly], h, w))).astype(bool)
    got = rasterize(image, [{"category_id": 9, "segmentation": [poly]}], {9: 5})
    np.testing.assert_array_equal(got == 5, ref)
    assert ref.sum() > 0


def test_rasterize_equals_reference_on_generated_data(dataset):
    index = CocoIndex.open(dataset.ann_file)
    coco = pycocotools_coco(dataset.ann_file)
    table = index.table
    assert not table.identity and table.category_to_label[42] == 10
    painted_overlap = 0
    for img, anns in index.items():
        got = rasterize(img, anns, table)
        ref = rasterize_reference(coco, img["id"], dict(table.category_to_label))
        assert got.shape == (img["height"], img["width"]) and got.dtype == np.uint8
        np.testing.assert_array_equal(got, ref, err_msg=img["file_name"])
        painted_overlap += len(anns) > 1
    assert painted_overlap


# ----------------------------------------------------------------------------- validation

def _base():
    return {"images": [{"id": 1, "file_name": "a/x.jpg", "height": 4, "width": 5}],
            "categories": [{"id": 1, "name": "thing"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                             "segmentation": [[0, 0, 3, 0, 3, 3]], "area": 4.5}]}


def _mutate(fn):
    data = _base()
    fn(data)
    return data


BAD_COCO = [
    (lambda d: d.pop("images"), "missing or malformed 'images' list"),
    (lambda d: d.pop("annotations"), "missing 'annotations' list"),
    (lambda d: d["images"][0].pop("height"), r"image id 1 \('a/x.jpg'\): height must be a "
                                             "positive integer; got None"),
    (lambda d: d["images"].append(dict(d["images"][0], id=2)), "duplicate file_name 'a/x.jpg'"),
    (lambda d: d["images"].append(dict(d["images"][0])), "duplicate image id 1"),
    (lambda d: d["annotations"][0].update(image_id=9), "annotation id 1: image id 9 has no record in 'images'"),
    (lambda d: d["annotations"][0].update(category_id=3), r"annotation id 1 \(image id 1, 'a/x.jpg'\): category_id 3 has no record in "
                                                          "'categories'"),
    (lambda d: d["annotations"][0].update(segmentation=[[0, 0, 3, 0]]),
     "at least 3 points; got 4 values"),
    (lambda d: d["annotations"][0].update(segmentation=[]), "empty segmentation"),
    (lambda d: d["annotations"][0].update(segmentation={"size": [5, 4], "counts": "abc"}),
     r"RLE size \[5, 4\] disagrees with the image record \(height 4, width 5\)"),
    (lambda d: d["annotations"][0].update(segmentation={"size": [4, 5], "counts": [3, 4]}),
     "summing to height \\* width"),
    (lambda d: d["annotations"][0].update(segmentation="polygon"),
     "segmentation must be polygons"),
    (lambda d: d["annotations"][0].update(area="big"), "area must be a number"),
]


@pytest.mark.parametrize("mutate, message", BAD_COCO)
def test_check_coco_names_the_problem(mutate, message):
    with pytest.raises(CocoError, match="ann.json: .*" + message):
        check_coco(_mutate(mutate), "ann.json")


def test_open_errors(tmp_path):
    with pytest.raises(CocoError, match="nope.json: no such file"):
        CocoIndex.open(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CocoError, match="bad.json: not valid JSON"):
        CocoIndex.open(tmp_path / "bad.json")
    with pytest.raises(CocoError, match="is a folder"):
        CocoIndex.open(tmp_path)
    assert CocoIndex.open(_write(tmp_path / "ok.json", _base())).data["images"][0]["id"] == 1


def _write(path, data):
    path.write_text(json.dumps(data))
    return path


# ----------------------------------------------------------------------------- coco_to_masks

def test_coco_to_masks_equals_reference(dataset, tmp_path):
    out = tmp_path / "masks"
    report = segkit.coco_to_masks(dataset.ann_file, out, workers=2, progress=False, log=None)
    coco = pycocotools_coco(dataset.ann_file)
    table = CocoIndex.open(dataset.ann_file).table
    for img in coco.dataset["images"]:
        path = out / (img["file_name"][:-4] + ".png")
        labels, pal = read_mask(path, with_palette=True)
        ref = rasterize_reference(coco, img["id"], dict(table.category_to_label))
        np.testing.assert_array_equal(labels, ref, err_msg=img["file_name"])
        np.testing.assert_array_equal(pal[:256], palette_for(256))
    assert report["files"] == len(dataset.images)
    assert report["status_counts"] == {"written": len(dataset.images)}
    assert report["empty_images"] == 1 and report["images_checked"] == len(dataset.images)
    labels = json.loads((out / "labels.json").read_text())
    assert labels["category_to_label"]["42"] == 10 and labels["identity"] is False
    assert json.loads((out / "masks_report.json").read_text())["files"] == report["files"]
    assert sum(report["label_pixels"].values()) == report["pixels"]


def test_coco_to_masks_flatten_and_palettes(dataset, tmp_path):
    segkit.coco_to_masks(dataset.ann_file, tmp_path / "f", flatten=True, palette="trash",
                         workers=1, progress=False, log=None)
    names = sorted(p.name for p in (tmp_path / "f").glob("*.png"))
    assert names == sorted(flatten_name(n) + ".png" for n in dataset.images)
    with Image.open(tmp_path / "f" / names[0]) as im:
        assert im.mode == "P"
        np.testing.assert_array_equal(np.array(im.getpalette()).reshape(-1, 3)[:11],
                                      TRASH_PALETTE)
    segkit.coco_to_masks(dataset.ann_file, tmp_path / "g", palette="none", workers=1,
                         progress=False, log=None)
    with Image.open(tmp_path / "g" / (dataset.images[0][:-4] + ".png")) as im:
        assert im.mode == "L"
    ref = read_mask(tmp_path / "f" / names[0])
    np.testing.assert_array_equal(
        read_mask(tmp_path / "g" / (dataset.images[0][:-4] + ".png")), ref)
    with pytest.raises(ValueError, match="palette must be None, False, one of"):
        segkit.coco_to_masks(dataset.ann_file, tmp_path / "h", palette="rainbow", log=None)


def test_coco_to_masks_resume_checks_existing_files(dataset, tmp_path):
    out = tmp_path / "m"
    segkit.coco_to_masks(dataset.ann_file, out, workers=1, progress=False, log=None)
    files = sorted(out.rglob("*.png"))
    damaged, changed = files[0], files[1]
    damaged.write_bytes(damaged.read_bytes()[:40])  # truncated
    m = read_mask(changed)
    m[0, 0] = (int(m[0, 0]) + 1) % 11
    from segkit.io.masks import write_mask

    write_mask(changed, m, palette_for(256))
    (out / "batch_01_vt" / ".0000.tmp-1-deadbeef.png").write_bytes(b"half")
    before = {p: os.stat(p) for p in files[2:]}
    report = segkit.coco_to_masks(dataset.ann_file, out, workers=2, progress=False, log=None)
    assert report["status_counts"] == {"skipped": len(files) - 2, "replaced": 2}
    assert report["temporaries_removed"] == 1
    for p, st in before.items():
        assert (os.stat(p).st_ino, os.stat(p).st_mtime_ns) == (st.st_ino, st.st_mtime_ns)
    fresh = tmp_path / "fresh"
    segkit.coco_to_masks(dataset.ann_file, fresh, workers=1, progress=False, log=None)
    for p in files:
        np.testing.assert_array_equal(read_mask(p), read_mask(fresh / p.relative_to(out)))


def test_coco_to_masks_refuses_image_of_wrong_size(dataset, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(dataset.root, root)
    victim = root / dataset.images[3]
    Image.new("RGB", (10, 12)).save(victim)
    with pytest.raises(DatasetError, match=rf"{victim.name}: image is 10x12 .* says"):
        segkit.coco_to_masks(root / "annotations.json", tmp_path / "m", workers=1,
                             progress=False, log=None)
    # the images before it were written and stay
    assert (tmp_path / "m" / (dataset.images[0][:-4] + ".png")).exists()
    report = segkit.coco_to_masks(root / "annotations.json", tmp_path / "m", workers=1,
                                  check_images=False, progress=False, log=None)
    assert report["status_counts"]["skipped"] == 3


def test_coco_to_masks_many_categories_uses_16_bit(tmp_path):
    cats = [{"id": i, "name": f"c{i}"} for i in range(1, 301)]
    img = {"id": 1, "file_name": "x.jpg", "height": 3, "width": 4}
    ann = {"id": 1, "image_id": 1, "category_id": 300, "area": 4,
           "segmentation": {"size": [3, 4], "counts": [0, 4, 8]}}
    path = _write(tmp_path / "many.json", {"images": [img], "categories": cats,
                                           "annotations": [ann]})
    segkit.coco_to_masks(path, tmp_path / "m", workers=1, progress=False, log=None)
    m = read_mask(tmp_path / "m" / "x.png")
    assert m.dtype == np.uint16 and m[:, 0].tolist() == [300, 300, 300] and m[0, 1] == 300


# ----------------------------------------------------------------------------- CLI

def test_masks_cli(dataset, tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["masks", str(dataset.ann_file), str(tmp_path / "o"), "--flatten",
                               "--workers", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "42 ->    10  Clothing" in res.output
    assert (tmp_path / "o" / (flatten_name(dataset.images[0]) + ".png")).exists()
    res = runner.invoke(main, ["masks", "--help"])
    assert "Example:" in res.output and "segkit masks" in res.output


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing.json", "missing.json: no such file"),
    (lambda p: _write(p / "bad.json", _mutate(lambda d: d["annotations"][0].update(
        category_id=7))), "category_id 7 has no record"),
])
def test_masks_cli_errors(tmp_path, make, message):
    res = CliRunner().invoke(main, ["masks", str(make(tmp_path)), str(tmp_path / "o")])
    assert res.exit_code == 1
    assert res.stderr.startswith("error: ") and message in res.stderr
    assert "Traceback" not in res.output
