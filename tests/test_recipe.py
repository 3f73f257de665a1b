"""segkit recipe init + run at a tiny size (64-px images, 1 epoch, 2 folds, the tiny model):
on a mask-folder dataset whose void value is 11 (a run stopped after its first training that
resumes, a rerun that does nothing, setting changes that rerun only what they touch) and on a
COCO dataset."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mmseg", reason="the recipe trains mmseg models (pip install '.[mmseg]')")

from segkit.io.masks import read_mask  # noqa: E402
from segkit.recipe import init_recipe, recipe_status, run_recipe  # noqa: E402

from ._recipe_data import coco_dataset, edit, make_tiny, mask_folder_dataset  # noqa: E402

pytestmark = pytest.mark.slow


class Stop(Exception):
    """Injected after the first training: a run killed in the middle of training."""


def states(report: dict) -> dict[str, str]:
    return {k: v["state"] for k, v in report["stages"].items()}


@pytest.fixture(scope="module")
def masks_run(tmp_path_factory):
    """init on the void-11 mask folder, a run stopped after one training, then the resumed
    run; returns (folder, report, what the stopped run left)."""
    root = tmp_path_factory.mktemp("recipe_masks")
    d = mask_folder_dataset(root / "data", void=11)
    folder = root / "r"
    init_recipe(folder, images=d["images"], masks=d["masks"], test_images=d["test_images"],
                test_masks=d["test_masks"], ignore_index=11, log=None)
    make_tiny(folder, train=dict(variants=("original", "resampled")))
    trained = []

    def stop_after_first(tasks, **kw):  # run_trainings, killed after its first training
        from segkit.recipe.trainings import run_trainings

        trained.append(tasks[0].name)
        run_trainings(tasks[:1], **kw)
        raise Stop(tasks[0].name)

    with pytest.raises(Stop):
        run_recipe(folder, progress=False, log=None, hooks={"run_trainings": stop_after_first})
    left = {"trained": list(trained), "status": recipe_status(folder)}
    lines: list[str] = []
    report = run_recipe(folder, progress=False, log=lines.append)
    return folder, report, left, lines


def test_stopped_run_resumes_from_the_finished_training(masks_run):
    folder, report, left, _ = masks_run
    by_stage = {r["stage"]: r["state"] for r in left["status"]}
    assert by_stage["masks"] == by_stage["folds"] == by_stage["resample"] == "done"
    assert by_stage["train"] == "stale" and by_stage["oof"] == "missing"
    why = {r["stage"]: r["why"] for r in left["status"]}["train"]
    assert why[0].startswith("did not finish (started "), why
    first = left["trained"][0]
    record = json.loads((folder / "state" / "train.json").read_text())
    runs = record["result"]["runs"]
    assert runs[first]["reused"] is True
    assert sum(r["reused"] for r in runs.values()) == 1
    assert len(runs) == 4  # 1 model x 2 variants x 1 seed x 2 folds


def test_run_writes_the_report_and_the_submission(masks_run):
    folder, report, _, lines = masks_run
    assert json.loads((folder / "report.json").read_text())["dataset"] == report["dataset"]
    assert (folder / "report" / "index.html").is_file()
    ds = report["dataset"]
    assert ds["source"] == "masks" and ds["ignore_index"] == 11 and ds["images"] == 8
    assert ds["ignored_pixels"] > 0 and len(ds["class_pixels"]) == len(ds["classes"])
    assert report["resample"]["ignore_index"] == 11
    assert set(report["models"]) == {f"swin_cpu_{v}_s0_fold{f}" for v in
                                     ("original", "resampled") for f in (0, 1)}
    assert 0 <= report["oof"]["miou"] <= 1
    assert set(report["test"]["steps"]) >= {"equal soft vote", "vote + CRF", "tuned"}
    assert set(report["test"]["ablation"]) == {"original", "resampled"}
    sub = report["submission"]
    assert sub["rows"] == 2
    rows = (folder / "submission.csv").read_text().splitlines()
    assert rows[0] == "image_id,PredictionString" and len(rows) == 3
    values = {int(v) for row in rows[1:] for v in row.split(",", 1)[1].split()}
    assert values <= set(range(len(ds["classes"]))), values  # labels, never the void
    assert all(s in report["stages"] for s in ("masks", "train", "tune", "audit", "report"))
    assert all(v["seconds"] >= 0 for v in report["stages"].values())
    # inside the folder the void is 255; the exported fixed masks give 11 back
    inside = np.unique(np.concatenate([read_mask(p).ravel()
                                       for p in (folder / "data" / "masks").glob("*.png")]))
    assert 255 in inside and 11 not in inside
    fixed = np.unique(np.concatenate([read_mask(p).ravel()
                                      for p in (folder / "fixed_masks").glob("*.png")]))
    assert 11 in fixed and 255 not in fixed
    assert any(line.startswith("[4/13] train") for line in lines), lines


def test_rerun_of_a_finished_folder_does_nothing(masks_run):
    folder, _, _, _ = masks_run
    before = (folder / "state" / "train.json").stat().st_mtime_ns
    report = run_recipe(folder, progress=False, log=None)
    assert {k for k, v in states(report).items() if v == "ran"} == {"report"}
    assert (folder / "state" / "train.json").stat().st_mtime_ns == before
    assert all(r["state"] in ("done", "skipped") for r in recipe_status(folder))
    # the command line: the same, one line per stage
    from click.testing import CliRunner

    from segkit.cli import main

    res = CliRunner().invoke(main, ["recipe", "run", str(folder), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "[4/13] train: done before (unchanged)" in res.output
    assert "[13/13] report:" in res.output


def test_a_setting_change_reruns_only_what_reads_it(masks_run):
    folder, _, _, _ = masks_run
    edit(folder, submission=dict(size=16))
    stale = {r["stage"]: r["why"] for r in recipe_status(folder) if r["state"] == "stale"}
    assert stale == {"submission": ["setting submission.size changed (64 -> 16)"]}
    report = run_recipe(folder, progress=False, log=None)
    assert {k for k, v in states(report).items() if v == "ran"} == {"submission", "report"}
    assert report["submission"]["size"] == 16
    # a tune setting: tune and what comes after it, not the trainings nor the audit
    edit(folder, tune=dict(budget=5))
    report = run_recipe(folder, progress=False, log=None)
    ran = {k for k, v in states(report).items() if v == "ran"}
    assert ran == {"tune", "ensembles", "submission", "evaluate", "report"}, ran


def write_store(root: Path, classes: list[str], probs_of: dict[str, np.ndarray]) -> None:
    """What docs/guide/recipe.md shows: a store from any model's (C, H, W) probabilities."""
    import segkit

    store = segkit.ConfidenceStore.create(root, classes, model="my torch model")
    for stem, probs in probs_of.items():
        store.write(stem, probs)


def test_stores_from_elsewhere_join_tune_audit_and_the_ensembles(masks_run):
    import segkit

    folder = masks_run[0]
    classes = json.loads((folder / "classes.json").read_text())["classes"]
    ext = folder.parent / "elsewhere"
    rng = np.random.default_rng(0)
    sources = {f"oof{f}": f"swin_cpu_resampled_s0_fold{f}" for f in (0, 1)}
    sources["test"] = "swin_cpu_resampled_s0_test"
    for name, run in sources.items():
        src = segkit.ConfidenceStore(folder / "stores" / run)
        probs = {}
        for stem in src.stems():
            p = src.read(stem).astype(np.float32) + rng.random((len(classes), 64, 64)) * 0.1
            probs[stem] = p / p.sum(0)
        write_store(ext / name, classes, probs)
    with open(folder / "recipe.toml", "a") as f:
        f.write(f'\n[[stores]]\nname = "other"\noof = ["{ext / "oof0"}", "{ext / "oof1"}"]\n'
                f'test = "{ext / "test"}"\n')
    report = run_recipe(folder, progress=False, log=None)
    ran = {k for k, v in states(report).items() if v == "ran"}
    assert ran == {"oof", "tune", "audit", "ensembles", "submission", "evaluate", "report"}, ran
    assert len(report["tune"]["weights"]) == 2
    assert "other" in report["test"]["steps"]
    assert report["stages"]["train"]["state"] == "reused"


def test_a_removed_training_is_redone_and_what_follows_it_reruns(masks_run):
    import shutil

    folder = masks_run[0]
    shutil.rmtree(folder / "work" / "swin_cpu_resampled_s0_fold1")
    why = {r["stage"]: r["why"] for r in recipe_status(folder)}
    assert why["train"] == ["its output work/swin_cpu_resampled_s0_fold1/result.json changed "
                            "or is missing"]
    report = run_recipe(folder, progress=False, log=None)
    runs = json.loads((folder / "state" / "train.json").read_text())["result"]["runs"]
    assert [k for k, r in runs.items() if not r["reused"]] == ["swin_cpu_resampled_s0_fold1"]
    ran = {k for k, v in states(report).items() if v == "ran"}
    assert {"train", "oof", "test", "tune", "audit", "ensembles", "evaluate"} <= ran, ran
    assert report["stages"]["masks"]["state"] == "reused"


def test_coco_dataset_runs_end_to_end(tmp_path):
    train, test = coco_dataset(tmp_path / "data", n=6)
    folder = tmp_path / "r"
    init_recipe(folder, images=train.root, coco=train.ann_file, test_images=test.root,
                log=None)
    make_tiny(folder, audit=dict(enabled=False), tune=dict(search=("bias",)))
    report = run_recipe(folder, progress=False, log=None)
    assert report["dataset"]["source"] == "coco"
    assert report["dataset"]["classes"][0] == "Background"
    assert states(report)["audit"] == "skipped" and states(report)["evaluate"] == "skipped"
    assert report["submission"]["rows"] == 2
    assert (folder / "report" / "index.html").is_file()
    splits = (folder / "data" / "splits" / "fold0" / "val.txt").read_text().split()
    assert all("+" in s for s in splits)
