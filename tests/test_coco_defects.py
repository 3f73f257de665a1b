"""Real-world COCO files: invalid annotations (on_invalid), crowd regions (crowd), huge images
(memory per worker), image lookup (mixed-case suffixes, nesting, spaces) and temporaries that
no folder reader takes for output."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from pycocotools import mask as mask_utils

import segkit
from segkit.cli import main
from segkit.io import atomic
from segkit.io.coco import (CocoError, CocoIndex, check_annotations, check_coco, count_labels,
                            label_table, rasterize)
from segkit.io.images import (ImageLookupError, find_image, image_stem, is_image,
                              list_images, read_image)
from segkit.io.masks import read_mask, write_mask
from segkit.jobs import DatasetError
from segkit.reference.coco import pycocotools_coco, rasterize_reference
from segkit.synthetic import make_huge_coco

from ._synthetic import make_defective_coco


@pytest.fixture(scope="module")
def defective(tmp_path_factory):
    return make_defective_coco(tmp_path_factory.mktemp("defects"))


def _mask_name(file_name: str) -> str:
    return str(Path(file_name).with_suffix(".png"))


def _expected(ann_file, crowd: str) -> dict[str, np.ndarray]:
    """Naive expectation from pycocotools' annToMask: decreasing area (stable), crowd regions
    painted 255 ("ignore") or dropped ("skip")."""
    coco = pycocotools_coco(ann_file)
    table = label_table(coco.dataset["categories"]).category_to_label
    out = {}
    for img in coco.dataset["images"]:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]], iscrowd=None))
        if crowd == "skip":
            anns = [a for a in anns if not a.get("iscrowd")]
        mask = np.zeros((img["height"], img["width"]), np.uint8)
        areas = [a["area"] if "area" in a else coco.annToMask(a).sum() for a in anns]
        for _, a in sorted(zip(areas, anns), key=lambda t: t[0], reverse=True):
            value = 255 if crowd == "ignore" and a.get("iscrowd") else table[a["category_id"]]
            mask[coco.annToMask(a) == 1] = value
        out[_mask_name(img["file_name"])] = mask
    return out


# ----------------------------------------------------------------------------- the file

def test_generated_file_carries_every_defect(defective):
    text = defective.ann_file.read_text()
    assert "Infinity" in text and "NaN" in text  # JSON's non-standard tokens, as found
    data = json.loads(text)
    assert any(n.endswith(".JPG") for n in defective.images)
    assert any(" " in n and n.count("/") >= 2 for n in defective.images)
    assert min(c["id"] for c in data["categories"]) == 0
    ids = [a["id"] for a in data["annotations"]]
    assert len(ids) != len(set(ids))
    assert defective.crowd_ids and defective.clipped_ids and len(defective.invalid) >= 11


def test_nan_and_infinity_are_read_not_a_parse_error(tmp_path):
    p = tmp_path / "nan.json"
    p.write_text('{"images": [{"id": 1, "file_name": "a.jpg", "height": 4, "width": 5}], '
                 '"categories": [{"id": 1, "name": "x"}], "annotations": [{"id": 7, '
                 '"image_id": 1, "category_id": 1, "bbox": [0, 0, Infinity, NaN], '
                 '"segmentation": [[0, 0, 4, 0, 4, 3]]}]}')
    with pytest.raises(CocoError, match=r"nan.json: annotation id 7 \(image id 1, 'a.jpg'\): "
                                        r"non-finite number Infinity in bbox\[2\]"):
        CocoIndex.open(p)
    data = CocoIndex.open(p, on_invalid="skip").data
    assert data["annotations"] == []


def test_default_names_the_file_the_annotation_and_the_reason(defective):
    """Each defect alone in an otherwise valid file: the default stops with a message naming
    the file, the annotation id and the reason (and the way through)."""
    data = json.loads(defective.ann_file.read_text())
    by_id = {a["id"]: a for a in data["annotations"] if a["id"] in defective.invalid}
    valid = json.loads(defective.valid_file.read_text())
    for ann_id, reason in defective.invalid.items():
        one = {**valid, "annotations": [*valid["annotations"], by_id[ann_id]]}
        with pytest.raises(CocoError) as err:
            check_coco(one, "defective.json")
        msg = str(err.value)
        assert msg.startswith(f"defective.json: annotation id {ann_id}"), msg
        assert reason in msg and "on_invalid='skip'" in msg, msg
        if by_id[ann_id]["image_id"] in {i["id"] for i in valid["images"]}:
            assert "img 0000.jpeg" in msg  # the image it belongs to


def test_check_lists_each_skipped_annotation(defective):
    data = json.loads(defective.ann_file.read_text())
    kept, findings = check_annotations(data, defective.ann_file, "skip")
    assert {s["annotation_id"] for s in findings.skipped} == set(defective.invalid)
    for s in findings.skipped:
        assert defective.invalid[s["annotation_id"]] in s["reason"]
        if s["image_id"] != 999999:
            assert s["file_name"] == defective.images[0]
        else:
            assert s["file_name"] is None
    assert len(kept) + len(findings.skipped) == len(data["annotations"])
    assert findings.duplicate_ids == list(defective.duplicate_ids)
    assert findings.clipped_ids == list(defective.clipped_ids)
    assert findings.crowd == len(defective.crowd_ids)
    with pytest.raises(ValueError, match="on_invalid must be one of 'error', 'skip'; got 'drop'"):
        check_annotations(data, "x.json", "drop")


def test_structural_defects_stay_fatal_in_skip_mode(tmp_path):
    data = {"images": [{"id": 1, "file_name": "a.jpg", "height": math.inf, "width": 4}],
            "categories": [], "annotations": []}
    with pytest.raises(CocoError, match="height must be a positive integer; got inf"):
        check_coco(data, "x.json", on_invalid="skip")


# ----------------------------------------------------------------------------- masks job

def test_masks_skip_converts_and_reports(defective, tmp_path):
    lines = []
    report = segkit.coco_to_masks(defective.ann_file, tmp_path / "m", on_invalid="skip",
                                  workers=1, progress=False, log=lines.append)
    assert report["skipped_count"] == len(defective.invalid)
    assert {s["annotation_id"]: s["reason"] for s in report["skipped"]}.keys() == \
        defective.invalid.keys()
    assert report["duplicate_annotation_ids"] == list(defective.duplicate_ids)
    assert report["clipped_annotations"] == 1
    assert report["crowd"]["annotations"] == len(defective.crowd_ids)
    assert report["params"]["on_invalid"] == "skip" and report["params"]["crowd"] == "paint"
    on_disk = json.loads((tmp_path / "m" / "masks_report.json").read_text())
    assert on_disk["skipped"] == report["skipped"]
    text = "\n".join(lines)
    assert f"invalid annotations skipped: {len(defective.invalid)}" in text
    assert "duplicate annotation ids (all kept): 1" in text and "Mpix/s" in text
    # what was painted: exactly the valid annotations (pycocotools' reference)
    coco = pycocotools_coco(defective.valid_file)
    table = label_table(coco.dataset["categories"]).category_to_label
    for img in coco.dataset["images"]:
        got = read_mask(tmp_path / "m" / _mask_name(img["file_name"]))
        np.testing.assert_array_equal(got, rasterize_reference(coco, img["id"], table))


def test_masks_default_stops_with_the_reason(defective, tmp_path):
    with pytest.raises(CocoError, match=r"defective.json: annotation id \d+ .*: .*; pass "
                                        r"on_invalid='skip'"):
        segkit.coco_to_masks(defective.ann_file, tmp_path / "m", workers=1, progress=False,
                             log=None)
    assert not (tmp_path / "m").exists() or not list((tmp_path / "m").rglob("*.png"))


@pytest.mark.parametrize("crowd", ["paint", "ignore", "skip"])
def test_crowd_modes(defective, tmp_path, crowd):
    report = segkit.coco_to_masks(defective.valid_file, tmp_path / crowd, crowd=crowd,
                                  workers=1, progress=False, log=None)
    expected = _expected(defective.valid_file, crowd)
    for name, mask in expected.items():
        np.testing.assert_array_equal(read_mask(tmp_path / crowd / name), mask, err_msg=name)
    c = report["crowd"]
    assert c["mode"] == crowd and c["annotations"] == len(defective.crowd_ids)
    if crowd == "ignore":
        ignored = sum(int((m == 255).sum()) for m in expected.values())
        assert ignored > 0 and c["pixels"] == ignored == report["ignore_pixels"]
        assert c["label"] == 255
    elif crowd == "skip":
        coco = pycocotools_coco(defective.valid_file)
        union = 0
        for img in coco.dataset["images"]:
            regions = [coco.annToMask(a) for a in coco.loadAnns(coco.getAnnIds(
                imgIds=[img["id"]], iscrowd=True))]
            union += int(np.any(regions, axis=0).sum()) if regions else 0
        assert c["pixels"] == union > 0 and report["ignore_pixels"] == 0
    else:
        ignored = _expected(defective.valid_file, "ignore")
        assert c["pixels"] == sum(int((m == 255).sum()) for m in ignored.values())


def test_crowd_argument_errors(defective, tmp_path):
    with pytest.raises(ValueError, match="crowd must be one of 'paint', 'ignore', 'skip'; got "
                                         "'drop'"):
        segkit.coco_to_masks(defective.valid_file, tmp_path / "x", crowd="drop", log=None)
    cats = [{"id": i, "name": str(i)} for i in range(1, 300)]
    data = {"images": [{"id": 1, "file_name": "a.jpg", "height": 3, "width": 3}],
            "categories": cats, "annotations": []}
    (tmp_path / "many.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="crowd='ignore' paints crowd regions with 255, but "
                                         "these annotations have 300 labels"):
        segkit.coco_to_masks(tmp_path / "many.json", tmp_path / "y", crowd="ignore", log=None)


def test_rasterize_crowd_hand_made():
    """A crowd region under a smaller object: the object stays on top in every mode."""
    h, w = 5, 6
    crowd = np.zeros((h, w, 1), np.uint8, order="F")
    crowd[0:4, 0:5] = 1
    rle = mask_utils.encode(crowd)[0]
    anns = [{"id": 1, "category_id": 1, "iscrowd": 1, "area": 20,
             "segmentation": {"size": [h, w], "counts": rle["counts"].decode()}},
            {"id": 2, "category_id": 2, "iscrowd": 0, "area": 1,
             "segmentation": {"size": [h, w], "counts": [h * 1 + 1, 1, h * w - h - 2]}}]
    image = {"height": h, "width": w}
    small = np.zeros((h, w), np.uint8)
    small[1, 1] = 2
    for mode, value in (("paint", 1), ("ignore", 255), ("skip", 0)):
        stats = {}
        got = rasterize(image, anns, {1: 1, 2: 2}, crowd=mode, stats=stats)
        want = np.zeros((h, w), np.uint8)
        want[0:4, 0:5] = value
        want[1, 1] = 2
        np.testing.assert_array_equal(got, want, err_msg=mode)
        assert got.flags.c_contiguous
        assert stats["crowd_pixels"] == 19 if mode != "skip" else stats["crowd_pixels"] == 20


def test_count_labels_in_chunks():
    rng = np.random.default_rng(0)
    m = rng.integers(0, 7, (37, 53)).astype(np.uint8)
    np.testing.assert_array_equal(count_labels(m, chunk=100), np.bincount(m.ravel()))
    np.testing.assert_array_equal(count_labels(m.astype(np.uint16), minlength=9, chunk=7),
                                  np.bincount(m.ravel(), minlength=9))
    assert count_labels(np.zeros((0, 3), np.uint8)).tolist() == [0]


def test_cli_masks_on_invalid_and_crowd(defective, tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["masks", str(defective.ann_file), str(tmp_path / "a")])
    assert res.exit_code == 1 and res.stderr.startswith("error: ")
    assert "annotation id" in res.stderr and "--on-invalid skip" in res.stderr
    res = runner.invoke(main, ["masks", str(defective.ann_file), str(tmp_path / "b"),
                               "--on-invalid", "skip", "--crowd", "ignore", "--workers", "1",
                               "--no-progress"])
    assert res.exit_code == 0, res.output
    assert f"invalid annotations skipped: {len(defective.invalid)}" in res.output
    assert "painted 255 (ignore)" in res.output
    report = json.loads((tmp_path / "b" / "masks_report.json").read_text())
    assert report["params"]["crowd"] == "ignore" and report["skipped_count"] > 0


# ----------------------------------------------------------------------------- resample, kfold

def test_resample_coco_skip(defective, tmp_path):
    report = segkit.resample(defective.ann_file, tmp_path / "r", on_invalid="skip",
                             crowd="ignore", ignore_index=255, workers=1, progress=False,
                             log=None)
    assert {s["annotation_id"] for s in report["skipped"]} == set(defective.invalid)
    assert report["crowd"]["mode"] == "ignore" and report["memory"]["peak_rss_bytes"] > 0
    expected = _expected(defective.valid_file, "ignore")
    for name, mask in expected.items():
        np.testing.assert_array_equal(read_mask(tmp_path / "r" / name),
                                      segkit.mode_filter(mask, 3, ignore_index=255))
    with pytest.raises(DatasetError, match=r"annotation id \d+"):
        segkit.resample(defective.ann_file, tmp_path / "r2", workers=1, progress=False,
                        log=None)
    res = CliRunner().invoke(main, ["resample", str(defective.ann_file), str(tmp_path / "r3"),
                                    "--on-invalid", "skip", "--crowd", "skip", "--workers", "1",
                                    "--no-progress"])
    assert res.exit_code == 0 and "invalid annotations skipped" in res.output, res.output


def test_kfold_skip(defective, tmp_path):
    with pytest.raises(CocoError, match=r"annotation id \d+"):
        segkit.kfold(defective.ann_file, k=2, log=None)
    lines = []
    result = segkit.kfold(defective.ann_file, k=2, out=tmp_path / "f", on_invalid="skip",
                          log=lines.append)
    assert len(result.findings.skipped) == len(defective.invalid)
    folds = json.loads((tmp_path / "f" / "folds.json").read_text())
    assert folds["on_invalid"] == "skip" and folds["skipped_count"] == len(defective.invalid)
    for f in range(2):
        for split in ("train", "val"):
            ids = {a["id"] for a in json.loads(
                (tmp_path / "f" / f"fold{f}" / f"{split}.json").read_text())["annotations"]}
            assert not ids & set(defective.invalid)
    assert any("invalid annotations skipped" in line for line in lines)
    valid = segkit.kfold(defective.valid_file, k=2, log=None)
    np.testing.assert_array_equal(result.counts.sum(0), valid.counts.sum(0))
    res = CliRunner().invoke(main, ["kfold", str(defective.ann_file), "--k", "2",
                                    "--on-invalid", "skip"])
    assert res.exit_code == 0, res.output


# ----------------------------------------------------------------------------- huge images

def test_huge_image_memory_is_a_small_multiple_of_one_mask(tmp_path):
    ann = make_huge_coco(tmp_path, 5000, 6000)
    report = segkit.coco_to_masks(ann, tmp_path / "m", crowd="ignore", workers=1,
                                  progress=False, log=None)
    mem = report["memory"]
    assert mem["largest_mask_bytes"] == 5000 * 6000
    if mem["largest_mask_peak_per_mask"] is None:
        pytest.skip("this system cannot reset the peak resident set (/proc/self/clear_refs)")
    # the mask, one decoded annotation, the row-major copy, the PNG encoder's buffers
    assert 1.0 <= mem["largest_mask_peak_per_mask"] < 7.0, mem
    mask = read_mask(tmp_path / "m" / "huge" / "IMG 0001.png")
    assert mask.shape == (5000, 6000)
    assert int((mask == 255).sum()) == report["crowd"]["pixels"] > 0
    assert report["mpix_per_second"] > 0 and report["pixels"] == 30_000_000


# ----------------------------------------------------------------------------- image lookup

def _img(path: Path, value: int = 0, size=(4, 5)):
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP",
           ".tif": "TIFF", ".bmp": "BMP"}[path.suffix.lower()]
    Image.fromarray(np.full((*size, 3), value, np.uint8)).save(path, format=fmt)


def test_list_images_mixed_case_nested_spaces_hidden_temporaries(tmp_path):
    _img(tmp_path / "batch 01" / "day a" / "IMG 0001.JPG")
    _img(tmp_path / "b.webp")
    _img(tmp_path / "C.Png")
    _img(tmp_path / ".cache" / "x.jpg")
    (tmp_path / ".half.png.tmp-1-abcd").write_bytes(b"half")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".old.tmp-1-abcd.png").write_bytes(b"half")  # an older run's name
    (tmp_path / "notes.txt").write_text("x")
    found = list_images(tmp_path)
    assert sorted(found) == ["C", "b", "batch 01+day a+IMG 0001"]
    assert found["batch 01+day a+IMG 0001"].name == "IMG 0001.JPG"
    _img(tmp_path / "b.png")
    with pytest.raises(ImageLookupError, match="two images map to 'b'"):
        list_images(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageLookupError, match="no image"):
        list_images(tmp_path / "empty")
    assert list_images(tmp_path / "empty", allow_empty=True) == {}


def test_find_image_any_case_nested_or_flat(tmp_path):
    _img(tmp_path / "batch 01" / "IMG 0001.JPG")
    _img(tmp_path / "flat+name.webp")
    _img(tmp_path / "x.TiF".replace("TiF", "tif"))
    assert find_image(tmp_path, "batch 01+IMG 0001").name == "IMG 0001.JPG"
    assert find_image(tmp_path, "batch 01/IMG 0001").name == "IMG 0001.JPG"
    assert find_image(tmp_path, "flat+name").name == "flat+name.webp"
    assert find_image(tmp_path, "x").suffix == ".tif"
    with pytest.raises(FileNotFoundError, match=r"no image for 'nope\+a' .*looked for nope/a.jpg"):
        find_image(tmp_path, "nope+a")
    assert read_image(find_image(tmp_path, "x")).shape == (4, 5, 3)


def test_image_helpers():
    assert is_image("a/B.JPEG") and is_image("x.webp") and not is_image("m.json")
    assert not is_image(".b054.png.tmp-20255-14399955") and not is_image(".hidden.png")
    assert image_stem("a b/c d.JPG") == "a b+c d" and image_stem("x+y.png") == "x+y"
    with pytest.raises(ImageLookupError, match=r"image 'd/x\+y.png'"):
        image_stem("d/x+y.png")


def test_crf_and_infer_share_the_lookup(tmp_path):
    from segkit.jobs.crf import index_images

    _img(tmp_path / "sub" / "A.JPG")
    _img(tmp_path / "b.webp")
    assert sorted(index_images(tmp_path)) == ["b", "sub+A"]


def test_ensemble_accepts_webp_and_upper_case(tmp_path):
    """The jobs (ensemble, audit, tune, crf) read a stem's image through _stores.image_of."""
    from segkit.jobs._stores import image_of

    _img(tmp_path / "batch_00" / "0000.webp", 7)
    _img(tmp_path / "batch_00" / "0001.JPG", 9)
    assert find_image(tmp_path, "batch_00+0000").suffix == ".webp"
    assert image_of("batch_00+0000", tmp_path, (11, 4, 5)).shape == (4, 5, 3)
    assert image_of("batch_00+0001", str(tmp_path), (4, 5)).shape == (4, 5, 3)
    with pytest.raises(segkit.errors.InputError, match="image is 5x4, the probabilities 4x5"):
        image_of("batch_00+0001", tmp_path, (5, 4))


def test_mmseg_dataset_finds_mixed_case_nested_images(tmp_path):
    pytest.importorskip("mmseg", reason="mmsegmentation is not installed (segkit[mmseg])")
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    import segkit.mmseg  # noqa: F401 - registers the datasets

    init_default_scope("mmseg")
    _img(tmp_path / "images" / "batch 01" / "IMG 0001.JPG")
    _img(tmp_path / "images" / "b.jpg")
    write_mask(tmp_path / "masks" / "batch 01+IMG 0001.png", np.zeros((4, 5), np.uint8))
    write_mask(tmp_path / "masks" / "b.png", np.zeros((4, 5), np.uint8))
    (tmp_path / "masks" / ".b.png.tmp-1-abcd").write_bytes(b"half")
    (tmp_path / "split.txt").write_text("batch 01+IMG 0001\nb\n")
    common = dict(type="CocoMaskDataset", data_root=str(tmp_path),
                  data_prefix=dict(img_path="images", seg_map_path="masks"), pipeline=[],
                  metainfo=dict(classes=["bg", "x"], palette=[[0, 0, 0], [255, 0, 0]]))
    ds = DATASETS.build(dict(common, ann_file="split.txt"))
    assert [Path(d["img_path"]).name for d in ds] == ["IMG 0001.JPG", "b.jpg"]
    listed = DATASETS.build(dict(common, ann_file=""))
    assert sorted(d["stem"] for d in listed) == ["b", "batch 01+IMG 0001"]


# ----------------------------------------------------------------------------- temporaries

def test_temporaries_never_end_in_the_final_suffix(tmp_path):
    seen = []
    for final in ("b054.png", "probs/x.npy", "report.json"):
        with atomic.atomic_path(tmp_path / final) as tmp:
            seen.append(tmp.name)
            assert not tmp.name.endswith(Path(final).suffix)
            assert tmp.name.startswith(f".{Path(final).name}.tmp-")
            assert atomic.is_temporary(tmp)
            tmp.write_bytes(b"x")
    assert not list(tmp_path.rglob(".*tmp-*"))
    assert atomic.is_temporary(".b054.tmp-20255-14399955.png")  # an older run's name


def test_folder_readers_skip_temporaries(tmp_path):
    """A killed job's temporaries (this version's and older ones) in a masks folder and a
    store: resample, evaluate and the store listing skip them."""
    from segkit.io.store import ConfidenceStore
    from segkit.jobs.evaluate import evaluate
    from segkit.jobs.resample import list_masks

    masks = tmp_path / "masks"
    write_mask(masks / "sub" / "a.png", np.ones((3, 4), np.uint8))
    (masks / "sub" / ".a.png.tmp-11-abcd").write_bytes(b"\x89PNG half")
    (masks / "sub" / ".b.tmp-11-abcd.png").write_bytes(b"\x89PNG half")
    assert list_masks(masks) == ["sub/a.png"]
    result = evaluate(masks, masks, num_classes=2)
    assert result.miou == 1.0
    store = ConfidenceStore.create(tmp_path / "store", classes=["a", "b"])
    store.write("x", np.full((2, 3, 4), 0.5, np.float32))
    (tmp_path / "store" / ".y.npy.tmp-1-ab").write_bytes(b"half")
    (tmp_path / "store" / ".z.tmp-1-ab.npy").write_bytes(b"half")
    assert store.stems() == ["x"]



def test_odd_ids_are_invalid_not_a_crash():
    data = {"images": [{"id": 1, "file_name": "a.jpg", "height": 4, "width": 4}],
            "categories": [{"id": 1, "name": "x"}],
            "annotations": [{"id": 1, "image_id": [1], "category_id": 1, "segmentation": []},
                            {"id": 2, "image_id": 1, "category_id": {"a": 1},
                             "segmentation": [[0, 0, 3, 0, 3, 3]]},
                            {"id": 3, "image_id": 1, "category_id": 1, "iscrowd": 2,
                             "segmentation": [[0, 0, 3, 0, 3, 3]]},
                            {"id": 4, "image_id": 1, "category_id": 1,
                             "segmentation": [[0, 0, "3", 0, 3, 3]]},
                            "not an annotation"]}
    _, findings = check_coco(data, "odd.json", on_invalid="skip")
    reasons = [s["reason"] for s in findings.skipped]
    assert reasons[0].startswith("image id [1] has no record")
    assert reasons[1].startswith("category_id {'a': 1} has no record")
    assert reasons[2] == "iscrowd must be 0 or 1; got 2"
    assert reasons[3] == ("polygon 0: a polygon must be a flat list of x, y numbers with at "
                          "least 3 points; got the value '3'")
    assert reasons[4].startswith("annotation is not an object")
    assert findings.skipped[4]["annotation_id"] is None


def test_skip_on_a_process_pool_equals_one_worker(defective, tmp_path):
    one = segkit.coco_to_masks(defective.ann_file, tmp_path / "1", on_invalid="skip",
                               crowd="ignore", workers=1, progress=False, log=None)
    two = segkit.coco_to_masks(defective.ann_file, tmp_path / "2", on_invalid="skip",
                               crowd="ignore", workers=2, progress=False, log=None)
    assert one["skipped"] == two["skipped"] and one["crowd"] == two["crowd"]
    assert two["memory"]["peak_rss_bytes"] > 0
    for name in _expected(defective.valid_file, "ignore"):
        np.testing.assert_array_equal(read_mask(tmp_path / "1" / name),
                                      read_mask(tmp_path / "2" / name))
