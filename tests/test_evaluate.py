"""segkit.evaluate / `segkit eval`: streamed IoU over mask folders and confidence stores."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import segkit
from segkit.cli import main
from segkit.io.masks import write_mask
from segkit.io.store import ConfidenceStore


@pytest.fixture
def folders(tmp_path):
    rng = np.random.default_rng(0)
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gts, preds = [], []
    for name in ("a", "sub/b", "c"):
        gt = rng.integers(0, 3, (20, 30)).astype(np.uint8)
        gt[0, :5] = 255
        pred = np.where(rng.random(gt.shape) < 0.8, gt, rng.integers(0, 3, gt.shape))
        pred = np.where(gt == 255, 0, pred).astype(np.uint8)
        write_mask(gt_dir / f"{name}.png", gt)
        write_mask(pred_dir / f"{name.replace('/', '+')}.png", pred)  # flattened names
        gts.append(gt)
        preds.append(pred)
    return gt_dir, pred_dir, gts, preds


def expected_cm(gts, preds, c=3):
    cm = np.zeros((c, c), np.int64)
    for g, p in zip(gts, preds):
        keep = g != 255
        np.add.at(cm, (g[keep].astype(int), p[keep].astype(int)), 1)
    return cm


@pytest.mark.parametrize("workers", [1, 2])
def test_evaluate_folders(folders, tmp_path, workers):
    gt_dir, pred_dir, gts, preds = folders
    result = segkit.evaluate(pred_dir, gt_dir, 3, out=tmp_path / "ev", workers=workers,
                             progress=False)
    cm = expected_cm(gts, preds)
    np.testing.assert_array_equal(result.confusion, cm)
    iou = np.diag(cm) / (cm.sum(0) + cm.sum(1) - np.diag(cm))
    np.testing.assert_allclose(result.iou, iou)
    assert result.miou == pytest.approx(iou.mean()) and result.images == 3
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert report["miou"] == pytest.approx(iou.mean())
    assert (tmp_path / "ev" / "iou.png").stat().st_size > 0


def test_evaluate_store(folders, tmp_path):
    gt_dir, _, gts, preds = folders
    store = ConfidenceStore.create(tmp_path / "store", ["x", "y", "z"])
    for name, p in zip(("a", "sub+b", "c"), preds):
        probs = np.full((3,) + p.shape, 0.1, np.float32)
        np.put_along_axis(probs, p[None].astype(int), 0.8, 0)
        store.write(name, probs)
    result = segkit.evaluate(tmp_path / "store", gt_dir, 3, progress=False)
    np.testing.assert_array_equal(result.confusion, expected_cm(gts, preds))
    assert result.class_names == ["x", "y", "z"]


def test_missing_predictions_and_errors(folders, tmp_path):
    gt_dir, pred_dir, gts, preds = folders
    (pred_dir / "c.png").unlink()
    result = segkit.evaluate(pred_dir, gt_dir, 3, progress=False)
    assert result.missing == ["c"] and result.images == 2
    with pytest.raises(ValueError, match="1 ground-truth masks have no prediction"):
        segkit.evaluate(pred_dir, gt_dir, 3, strict=True, progress=False)
    write_mask(pred_dir / "a.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(Exception, match=r"prediction is 10x10 but the ground truth .*a.png is 30x20"):
        segkit.evaluate(pred_dir, gt_dir, 3, progress=False, workers=1)


def test_cli(folders, tmp_path):
    gt_dir, pred_dir, *_ = folders
    result = CliRunner().invoke(main, ["eval", str(pred_dir), str(gt_dir), "--num-classes", "3",
                                       "--out", str(tmp_path / "ev"), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "mIoU" in result.output
    bad = CliRunner().invoke(main, ["eval", str(pred_dir), str(gt_dir), "--num-classes", "2",
                                    "--workers", "1"])
    assert bad.exit_code != 0 and "labels outside 0..1" in bad.output


def test_masks_of_a_folder_by_stem(folders, tmp_path):
    """jobs/_stores.mask_index (evaluate, tune) and find_mask (audit): nested and flattened
    files name the same stem; hidden files (temporaries) are not masks."""
    from segkit.errors import PathNotFoundError
    from segkit.jobs._stores import find_mask, mask_index

    gt_dir, pred_dir, _, _ = folders
    (gt_dir / ".d.png.tmp-1").write_bytes(b"half")
    assert list(mask_index(gt_dir)) == ["a", "c", "sub+b"]
    assert mask_index(gt_dir)["sub+b"] == gt_dir / "sub" / "b.png"
    assert mask_index(pred_dir)["sub+b"] == pred_dir / "sub+b.png"
    assert find_mask(gt_dir, "sub+b") == gt_dir / "sub" / "b.png"
    assert find_mask(pred_dir, "sub+b") == pred_dir / "sub+b.png"
    with pytest.raises(PathNotFoundError, match=r"no annotation for 'sub\+x' under .*sub/x.png "
                                                r"and sub\+x.png"):
        find_mask(gt_dir, "sub+x")


def test_both_spellings_of_a_mask_are_refused_by_every_lookup(tmp_path):
    """'dir/name.png' and 'dir+name.png' name one image: tune and evaluate (mask_index) and
    the audit (find_mask) refuse the pair alike instead of each picking its own."""
    from segkit.errors import InputError
    from segkit.jobs._stores import find_mask, mask_index

    write_mask(tmp_path / "batch_01" / "0002.png", np.zeros((2, 2), np.uint8))
    assert mask_index(tmp_path) == {"batch_01+0002": tmp_path / "batch_01" / "0002.png"}
    assert find_mask(tmp_path, "batch_01+0002") == tmp_path / "batch_01" / "0002.png"
    write_mask(tmp_path / "batch_01+0002.png", np.ones((2, 2), np.uint8))
    for lookup in (lambda: mask_index(tmp_path), lambda: find_mask(tmp_path, "batch_01+0002")):
        with pytest.raises(InputError, match="two masks for image 'batch_01\\+0002'"):
            lookup()
