"""The demo end to end at its smallest size: every stage of the main job runs and leaves the
files and numbers the index promises (the `make demo` preset is the same code, larger)."""
from __future__ import annotations

import csv
import json

import pytest

pytest.importorskip("torch", reason="the demo trains with the mmseg extra (torch)")


@pytest.mark.slow
def test_demo_tiny_end_to_end(tmp_path):
    from segkit import demo

    lines = []
    result = demo.run(tmp_path / "out", preset="tiny", seed=3, log=lines.append)
    out = tmp_path / "out"
    assert list(result["stages"]) == list(demo.STAGES)
    for name in ("index.md", "demo_report.json", "overlays.png", "resample_before_after.png",
                 "crf_before_after.png", "iou.png", "submission.csv"):
        assert (out / name).stat().st_size > 0, name
    st = result["stages"]
    assert st["resample"]["backends_agree"]
    # resampling moved the noisy annotations towards the truth
    assert st["resample"]["wrong_after"] < st["resample"]["wrong_before"]
    assert set(st["train"]) == {"model_a", "model_b"}
    # the submission follows the sample's order, one row per test image
    with open(out / "data" / "sample_submission.csv") as f:
        sample_ids = [r["image_id"] for r in csv.DictReader(f)]
    with open(out / "submission.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["image_id"] for r in rows] == sample_ids
    side = demo.PRESETS["tiny"].size // 2
    assert all(len(r["PredictionString"].split()) == side * side for r in rows)
    # out of fold: each model's fold stores are disjoint and cover every training image
    import segkit
    from segkit.io.store import open_store

    masks = sorted(p.stem for p in (out / "data" / "masks").glob("*.png"))
    for name in ("model_a", "model_b"):
        oof = open_store(",".join(str(out / "stores" / f"{name}_fold{f}")
                                  for f in range(demo.PRESETS["tiny"].folds)))
        assert oof.stems() == masks
        assert segkit.ConfidenceStore(out / "stores" / name).stems() == \
            sorted(p.stem for p in (out / "data" / "test_masks").glob("*.png"))
    # tuned on OOF, applied to the test set; the index shows both mIoUs of the three settings
    tuned = json.loads((out / "tuned" / "tuned.json").read_text())
    assert len(tuned["weights"]) == 2 and abs(sum(tuned["weights"]) - 1) < 1e-9
    assert set(st["tune"]["holdout"]) == {"equal", "recipe", "tuned"}
    assert {"recipe", "tuned", "soft vote"} <= set(st["evaluate"])
    index = (out / "index.md").read_text()
    assert "## Tuning on out-of-fold predictions" in index
    for label in ("| equal weights |", "| recipe (equal + seed CRF) |", "| tuned |"):
        assert label in index
    # the audit ran on the OOF stores and its page and numbers are in the index
    au = st["audit"]
    assert au["images"] == len(masks)
    assert (out / "audit" / "index.html").stat().st_size > 0
    assert "## Label audit" in index and "audit/index.html" in index
    assert au["flagged"] == 0 or 0.0 <= au["precision"] <= 1.0
    # every evaluation is a real mIoU in [0, 1]
    for name, ev in st["evaluate"].items():
        assert 0.0 <= ev["miou"] <= 1.0, name
    report = json.loads((out / "demo_report.json").read_text())
    assert report["seconds"]["total"] > 0
    assert any("mIoU" in line for line in lines)


def test_demo_stage_failure_names_the_stage(tmp_path, monkeypatch):
    from segkit import demo

    def broken(self):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(demo.Demo, "stage_masks", broken)
    with pytest.raises(demo.DemoError, match=r"stage 'masks' failed: OSError: disk full"):
        demo.run(tmp_path / "out", preset="tiny", log=lambda _: None)


def test_demo_rejects_unknown_preset(tmp_path):
    from segkit import demo

    with pytest.raises(ValueError, match="preset must be one of"):
        demo.run(tmp_path, preset="huge")
