"""segkit.recipe.trainings: independent trainings of the cpu preset on a tiny generated dataset
whose void label is 10 (not 255): the options a task sets, one after another in this process,
a rerun that skips finished tasks, a changed seed that retrains, a training killed after its
first epoch that resumes from its checkpoint, two trainings side by side on a local Ray
instance, and one per "GPU" in subprocesses (on the CPU here: the subprocess path, not the GPU
placement, which needs a machine with several GPUs)."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os

import pytest

if importlib.util.find_spec("mmseg") is None:
    pytest.skip("mmsegmentation is not installed: pip install 'segkit[mmseg]' (make test "
                "installs it)", allow_module_level=True)

from mmengine.hooks import Hook  # noqa: E402
from mmseg.registry import HOOKS  # noqa: E402

import segkit.recipe.trainings as tr  # noqa: E402
from segkit.errors import DataError, InputError  # noqa: E402
from segkit.recipe.configs import write_model_config  # noqa: E402
from segkit.recipe.trainings import TrainingError, TrainTask, run_trainings  # noqa: E402

from .mmseg_data import make_dataset, one_torch_thread  # noqa: E402,F401

VOID = 10  # make_dataset paints labels 0..10: here 10 is the void label, 10 classes remain


@HOOKS.register_module(force=True)
class FailOnceHook(Hook):
    """Raises as the second epoch starts (the first one trained, checkpointed and validated)
    while `marker` exists, and removes it: a training killed part way, the task unchanged."""

    def __init__(self, marker: str):
        self.marker = marker

    def before_train_epoch(self, runner) -> None:
        if runner.epoch >= 1 and os.path.exists(self.marker):
            os.remove(self.marker)
            raise RuntimeError("killed after epoch 1")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe_train")
    data = root / "data"
    make_dataset(data, n=6, size=64, folds=3)  # each fold: 4 training images, 2 validation
    classes = root / "classes.json"
    classes.write_text(json.dumps([f"class{i}" for i in range(10)]))
    config = write_model_config(root / "swin_cpu.py", "cpu", num_classes=10, crop=64,
                                epochs=1, batch_size=4)
    return root, data, classes, config


def task(setup, name, fold=0, **kw) -> TrainTask:
    root, data, classes, config = setup
    args = dict(name=name, config=str(config), work_dir=str(root / "work" / name),
                data_root=str(data), fold=fold, train_masks="masks_resampled",
                classes_file=str(classes), ignore_index=VOID, epochs=1) | kw
    return TrainTask(**args)


def test_task_options_point_the_config_at_the_task(setup):
    from mmengine.config import Config

    t = task(setup, "opts", epochs=7, seed=3, cfg_options=(("train_dataloader.batch_size", 2),))
    opts = tr.task_options(t, Config.fromfile(t.config), progress=True)
    assert opts["train_dataloader.dataset.data_prefix.seg_map_path"] == "masks_resampled"
    assert opts["val_dataloader.dataset.data_prefix.seg_map_path"] == "masks"
    for key in ("train_dataloader.dataset", "val_dataloader.dataset", "test_dataloader.dataset"):
        assert opts[f"{key}.classes_file"] == t.classes_file
        assert opts[f"{key}.ignore_index"] == VOID
    for key in ("model.decode_head.ignore_index", "model.auxiliary_head.ignore_index",
                "model.data_preprocessor.seg_pad_val", "val_evaluator.ignore_index",
                "test_evaluator.ignore_index"):
        assert opts[key] == VOID, key
    assert opts["randomness.seed"] == 3 and opts["train_cfg.max_epochs"] == 7
    assert opts["param_scheduler.1.end"] == opts["param_scheduler.1.T_max"] == 7
    assert "param_scheduler.0.end" not in opts  # the warm-up counts iterations
    assert opts["custom_hooks"] == [dict(type="ProgressBarHook", desc="opts")]
    assert opts["train_dataloader.batch_size"] == 2


@pytest.fixture(scope="module")
def local_run(setup):
    lines: list[str] = []
    tasks = [task(setup, "a_fold0", fold=0), task(setup, "a_fold1", fold=1)]
    return tasks, run_trainings(tasks, progress=False, log=lines.append), lines


def test_local_trainings_run_one_after_another(local_run):
    tasks, results, lines = local_run
    assert list(results) == ["a_fold0", "a_fold1"]
    for t in tasks:
        r = results[t.name]
        assert r["reused"] is False and r["resumed"] is False
        assert os.path.isfile(r["checkpoint"]) and r["checkpoint"].startswith(t.work_dir)
        assert [e for e, _ in r["curve"]] == [1] and 0 <= r["val_mIoU"] <= 1
        assert r["val_mIoU"] == r["curve"][0][1] and r["seconds"] > 0
        stored = json.loads(open(os.path.join(t.work_dir, "result.json")).read())
        assert stored["hash"] == tr.task_hash(t) and stored["result"] == r
        assert os.path.getsize(os.path.join(t.work_dir, "train.log")) > 0  # mmseg's chatter
    assert len(lines) == 2 and lines[0].startswith("a_fold0: validation mIoU ")


def test_rerun_skips_finished_and_retrains_a_changed_task(local_run, setup):
    tasks, first, _ = local_run
    lines: list[str] = []
    again = run_trainings(tasks, progress=False, log=lines.append)
    assert all(r["reused"] for r in again.values()) and "skipped" in lines[0]
    assert {k: {**v, "reused": False} for k, v in again.items()} == first
    changed = [tasks[0], dataclasses.replace(tasks[1], seed=5)]
    res = run_trainings(changed, progress=False, log=None)
    assert res["a_fold0"]["reused"] is True
    assert res["a_fold1"]["reused"] is False
    assert json.loads(open(os.path.join(tasks[1].work_dir, "result.json")).read())["task"][
        "seed"] == 5
    # and the old seed's result is gone with its folder: asking for it trains again
    assert tr.finished(tasks[1], tr.task_hash(tasks[1])) is None


def test_killed_training_resumes_from_its_checkpoint(setup, tmp_path):
    marker = tmp_path / "kill"
    marker.write_text("")
    t = task(setup, "killed", epochs=2,
             cfg_options=(("custom_hooks", [dict(type="FailOnceHook", marker=str(marker))]),))
    with pytest.raises(TrainingError, match="killed: RuntimeError: killed after epoch 1"):
        run_trainings([t], progress=False, log=None)
    assert open(os.path.join(t.work_dir, "last_checkpoint")).read().strip().endswith(
        "epoch_1.pth")
    assert not os.path.exists(os.path.join(t.work_dir, "result.json"))
    res = run_trainings([t], progress=False, log=None)["killed"]
    assert res["resumed"] is True and res["last_checkpoint"].endswith("epoch_2.pth")
    from segkit.mmseg.checkpoint import load

    assert load(res["last_checkpoint"])["meta"]["iter"] == 2  # 1 iteration per epoch
    assert [e for e, _ in res["curve"]] == [1, 2]  # both attempts' validations
    runs = sorted(p for p in os.listdir(t.work_dir)
                  if os.path.isdir(os.path.join(t.work_dir, p)))
    assert len(runs) == 2  # two Runner runs: the killed one and the resumed one
    second = open(os.path.join(t.work_dir, runs[1], "vis_data", "scalars.json")).read()
    assert '"epoch": 1,' not in second and '"epoch": 2,' in second  # only epoch 2 trained


def test_bad_tasks_and_arguments(setup, tmp_path):
    t = task(setup, "bad")
    for kwargs, message in [
        ({"engine": "slurm"}, "engine must be one of 'local', 'ray'; got 'slurm'"),
        ({"gpus_per_task": 0}, "gpus_per_task must be a positive number or None; got 0"),
        ({"gpus_per_task": 2}, "the local engine runs one training per GPU"),
    ]:
        with pytest.raises(InputError, match=message):
            run_trainings([t], log=None, **kwargs)
    with pytest.raises(InputError, match="tasks share a name: 'bad'"):
        run_trainings([t, dataclasses.replace(t, work_dir=str(tmp_path / "x"))], log=None)
    with pytest.raises(InputError, match="tasks share a work_dir"):
        run_trainings([t, dataclasses.replace(t, name="other")], log=None)
    for field, value, message in [
        ("config", str(tmp_path / "nope.py"), "config .*nope.py' not found"),
        ("data_root", str(tmp_path / "nodata"), "data_root .*nodata' is not a folder"),
        ("classes_file", str(tmp_path / "c.json"), "classes_file .*c.json' not found"),
        ("fold", -1, "fold must be a non-negative int; got -1"),
        ("epochs", 0, "epochs must be a positive int or None; got 0"),
        ("cfg_options", (("a", 1, 2),), "cfg_options must be .key, value. pairs"),
    ]:
        with pytest.raises(InputError, match=f"task 'bad': {message}"):
            run_trainings([dataclasses.replace(t, **{field: value})], log=None)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="holds files that no segkit training wrote"):
        run_trainings([dataclasses.replace(t, work_dir=str(foreign))], progress=False, log=None)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_one_per_gpu_in_subprocesses(setup, monkeypatch):
    """The one-per-GPU path with two pretend GPUs: each task in its own subprocess with its
    CUDA_VISIBLE_DEVICES (the trainings run on the CPU here)."""
    monkeypatch.setattr(tr, "visible_gpus", lambda: 2)
    tasks = [task(setup, "gpu_fold0", fold=0), task(setup, "gpu_fold2", fold=2)]
    res = run_trainings(tasks, progress=False, log=None)
    for t in tasks:
        assert res[t.name]["reused"] is False and os.path.isfile(res[t.name]["checkpoint"])
        assert [e for e, _ in res[t.name]["curve"]] == [1]
        # the subprocess's output (mmseg's chatter, no progress bar) went to the log file
        assert "Epoch(train)" in open(os.path.join(t.work_dir, "train.log")).read()
    assert all(r["reused"] for r in run_trainings(tasks, log=None).values())


def test_two_trainings_side_by_side_on_ray(setup, ray_local):
    tasks = [task(setup, "ray_fold0", fold=0), task(setup, "ray_fold1", fold=1)]
    lines: list[str] = []
    res = run_trainings(tasks, engine="ray", progress=False, log=lines.append)
    assert sorted(res) == ["ray_fold0", "ray_fold1"] and len(lines) == 2
    for t in tasks:
        r = res[t.name]
        assert r["reused"] is False and os.path.isfile(r["checkpoint"])
        assert [e for e, _ in r["curve"]] == [1]
    # side by side: each one's span of wall-clock time overlaps the other's
    (a0, a1), (b0, b1) = [json.loads(open(os.path.join(t.work_dir, "task.json")).read())[
        "attempts"][-1] for t in tasks]
    assert a0 < b1 and b0 < a1
    again = run_trainings(tasks, engine="ray", progress=False, log=None)
    assert all(r["reused"] for r in again.values())
