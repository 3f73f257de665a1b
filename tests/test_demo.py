"""The demo end to end at its smallest size: every stage of the main job runs and leaves the
files, tables and numbers the index promises (the `make demo` preset is the same code, larger;
its models learn, these do not in one epoch, so no figure is checked against a target here)."""
from __future__ import annotations

import csv
import json

import pytest

pytest.importorskip("torch", reason="the demo trains with the mmseg extra (torch)")

#: table header rows and row labels the index must carry (labels, not values)
TABLE_LABELS = (
    "| variant | training masks | used for |",
    "| trained on | seed 0 | seed 1 | mean | spread (max - min) | difference to original |",
    "| original masks |", "| resampled masks |", "| audited masks |",
    "| class | original | resampled | audited | resampled - original |",
    "| step | test mIoU | difference to the row before | spread over seeds | bootstrap sd |",
    "| model seed 0 |", "| model seed 1 |", "| equal soft vote |", "| vote + CRF |",
    "| recipe |", "| tuned |",
    "| setting | held-out OOF mIoU | test mIoU |", "| equal weights |",
    "| recipe (equal + seed CRF) |",
    "| masks audited | pixels flagged | precision | recall |",
    "| stage | seconds |", "| train |", "| retrain |",
)
PICTURES = ("overlays.png", "resample_before_after.png", "curves.png", "iou.png",
            "audit_worst.png", "crf_before_after.png", "tuned/tuning.png")


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    from segkit import demo

    out = tmp_path_factory.mktemp("demo") / "out"
    lines = []
    result = demo.run(out, preset="tiny", seed=3, log=lines.append)
    return out, result, lines


@pytest.mark.slow
def test_demo_index_carries_every_table(tiny_demo):
    from segkit import demo

    out, _, _ = tiny_demo
    index = (out / "index.md").read_text()
    headings = [line for line in index.splitlines() if line.startswith("## ")]
    assert [h for h in headings if h in demo.SECTIONS or h.startswith("## Step table")] \
        == headings
    for section in demo.SECTIONS:
        assert any(h.startswith(section) for h in headings), section
    for label in TABLE_LABELS:
        assert label in index, label
    for picture in PICTURES:
        assert f"]({picture})" in index, picture
        assert (out / picture).stat().st_size > 0, picture


@pytest.mark.slow
def test_demo_tiny_end_to_end(tiny_demo):
    from segkit import demo
    import segkit
    from segkit.io.store import open_store

    out, result, lines = tiny_demo
    p = demo.PRESETS["tiny"]
    assert list(result["stages"]) == list(demo.STAGES)
    st = result["stages"]
    assert st["resample"]["backends_agree"]
    # resampling moved the noisy annotations towards the truth
    assert st["resample"]["wrong_after"] < st["resample"]["wrong_before"]
    # every (variant, seed, fold) trained, each with its validation curve
    runs = result["runs"]
    assert sorted(runs) == sorted(f"{v}_s{s}_fold{f}" for v in p.variants
                                  for s in range(p.seeds) for f in range(p.folds))
    assert all(r["curve"] and 0.0 <= r["curve"][-1][1] <= 1.0 for r in runs.values())
    # the submission follows the sample's order, one row per test image
    with open(out / "scenes" / "sample_submission.csv") as f:
        sample_ids = [r["image_id"] for r in csv.DictReader(f)]
    with open(out / "submission.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["image_id"] for r in rows] == sample_ids
    side = p.size // 2
    assert all(len(r["PredictionString"].split()) == side * side for r in rows)
    # out of fold: each seed's fold stores are disjoint and cover every training image
    masks = sorted(q.stem for q in (out / "data" / "masks").glob("*.png"))
    tests = sorted(q.stem for q in (out / "data" / "test_masks").glob("*.png"))
    for s in range(p.seeds):
        oof = open_store(",".join(str(out / "stores" / f"tiny_resampled_s{s}_fold{f}")
                                  for f in range(p.folds)))
        assert oof.stems() == masks
        for v in p.variants:
            test_store = out / "stores" / f"tiny_{demo.RECIPE_VARIANT[v]}_s{s}_test"
            assert segkit.ConfidenceStore(test_store).stems() == tests
    # the audited models trained on the audit's fixed masks
    assert sorted(q.stem for q in (out / "data" / "masks_fixed").glob("*.png")) == masks
    tuned = json.loads((out / "tuned" / "tuned.json").read_text())
    assert len(tuned["weights"]) == p.seeds and abs(sum(tuned["weights"]) - 1) < 1e-9
    assert set(st["tune"]["holdout"]) == {"equal", "recipe", "tuned"}
    au = st["audit"]
    assert au["images"] == len(masks)
    assert au["flagged"] == 0 or 0.0 <= au["precision"] <= 1.0
    ev = st["evaluate"]
    assert set(ev["steps"]) == {"model seed 0", "model seed 1", "equal soft vote",
                                "vote + CRF", "recipe", "tuned"}
    assert set(ev["ablation"]) == set(p.variants)
    for name, r in ev["steps"].items():
        assert 0.0 <= r["miou"] <= 1.0 and r["boot_sd"] >= 0.0, name
    report = json.loads((out / "demo_report.json").read_text())
    assert report["seconds"]["total"] > 0
    assert any(line.startswith(f"[5/{len(demo.STAGES)}] train") for line in lines)


def test_demo_stage_failure_names_the_stage(tmp_path, monkeypatch):
    from segkit import demo

    def broken(self, *args):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(demo.Demo, "stage_masks", broken)
    with pytest.raises(demo.DemoError, match=r"stage 'masks' failed: OSError: disk full"):
        demo.run(tmp_path / "out", preset="tiny", log=lambda _: None)


def test_demo_rejects_unknown_preset(tmp_path):
    from segkit import demo
    from segkit.errors import InputError

    with pytest.raises(InputError, match="preset must be one of .*'gpu'.*; got 'huge'"):
        demo.run(tmp_path, preset="huge")


def test_gpu_preset_without_a_gpu_says_so(tmp_path, monkeypatch):
    import torch

    from segkit import demo
    from segkit.errors import UnavailableError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UnavailableError, match="preset 'gpu' .* needs a CUDA GPU"):
        demo.run(tmp_path / "out", preset="gpu", log=lambda _: None)
    assert not (tmp_path / "out").exists()  # failed before writing anything


def test_stage_estimates_scale_with_the_run(tmp_path):
    from segkit import demo

    d = demo.Demo(tmp_path, demo.PRESETS["default"], 0, lambda _: None)
    expect = dict(demo.PRESETS["default"].expect)
    assert d.estimate("train", {}) == f" (about {expect['train']} s)"
    # a run going twice as slow as measured doubles the estimates of the stages left
    done = {"train": 2 * expect["train"]}
    assert d.estimate("tune", done) == f" (about {2 * expect['tune']} s)"
    assert d.estimate("index", done) == ""


@pytest.mark.slow
def test_demo_is_the_recipe_on_generated_data(tiny_demo):
    """The demo ran the recipe's stages through segkit.recipe (its ledger says every stage is
    done for the recipe.toml it wrote), and its trainings validated against the clean truth."""
    import numpy as np

    from segkit.io.masks import read_mask
    from segkit.recipe import load_recipe, recipe_status

    out, result, _ = tiny_demo
    recipe = load_recipe(out)
    assert recipe.dataset.val_masks == "scenes/masks_clean"
    assert recipe.train.variants == ("original", "resampled", "fixed")
    rows = {r["stage"]: r for r in recipe_status(out)}
    assert all(r["state"] == "done" for r in rows.values()), rows
    assert list(rows) == [s for s in result["stages"] if s not in ("data", "index")]
    # the recipe copied the clean truth as the trainings' validation masks, and used it
    for q in sorted((out / "scenes" / "masks_clean").glob("*.png")):
        assert np.array_equal(read_mask(q), read_mask(out / "data" / "masks_val" / q.name))
    task = json.loads((out / "work" / "tiny_resampled_s0_fold0" / "task.json").read_text())
    assert task["task"]["val_masks"] == "masks_val"
    assert (out / "report.json").is_file() and (out / "report" / "index.html").is_file()
    # the original recipe's ensemble beside the recipe's three
    for folder in ("vote", "vote_crf", "recipe", "tuned"):
        assert any((out / "ensembles" / folder / "labels").glob("*.png")), folder
