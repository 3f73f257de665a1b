"""The model stages: train (models x folds x variants x seeds), out-of-fold inference, test
inference (a run's k fold models averaged into one test store), and the retraining on the
audit's fixed masks."""
from __future__ import annotations

import contextlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np

import segkit

from ..io.atomic import write_json
from .stage import Context, Stage, config_inputs, quiet, settings_of, store_inputs
from .state import identity
from .trainings import TrainTask, run_trainings


def train_variants(ctx: Context, fixed: bool) -> list[str]:
    return [v for v in ctx.recipe.train.variants if (v == "fixed") == fixed]


def tasks_for(ctx: Context, variants: list[str]) -> list:
    tasks = []
    for m in ctx.recipe.models:
        for v in variants:
            for s in ctx.recipe.train.seeds:
                for f in range(ctx.recipe.folds.k):
                    name = ctx.run_name(m.name, v, s, f)
                    pretrained = "none" if m.pretrained in ("", "none") else \
                        str(ctx.user(m.pretrained))
                    tasks.append(TrainTask(
                        name=name, config=str(ctx.user(m.config)),
                        work_dir=str(ctx.path("work", name)), data_root=str(ctx.data),
                        fold=f, train_masks=ctx.variant_masks(v),
                        val_masks="masks_val" if ctx.recipe.dataset.val_masks else "masks",
                        classes_file=str(ctx.classes_file), seed=s, epochs=m.epochs,
                        ignore_index=255,
                        cfg_options=(("train_dataloader.batch_size", m.batch_size),),
                        pretrained=pretrained))
    return tasks


def train(ctx: Context, variants: list[str]) -> dict:
    """Every training of `variants` in one run_trainings call (so that the engine can run
    them side by side); finished ones are reused by run_trainings itself."""
    run = ctx.hooks.get("run_trainings", run_trainings)  # a test seam: wraps the real one
    tasks = tasks_for(ctx, variants)
    real_stdout = sys.stdout

    def log_now(line: str) -> None:  # past quiet()'s capture, as each training ends
        with contextlib.redirect_stdout(real_stdout):
            ctx.log(line)

    with quiet(ctx.path("logs", "train.log")):
        results = run(tasks, engine=ctx.engine,
                      gpus_per_task=ctx.recipe.train.gpus_per_task or None,
                      progress=ctx.progress, log=log_now)
    model_of = {ctx.run_name(m.name, v, s, f): (m.name, v) for m in ctx.recipe.models
                for v in variants for s in ctx.recipe.train.seeds
                for f in range(ctx.recipe.folds.k)}
    out = {}
    for t in tasks:
        r = results[t.name]
        model, variant = model_of[t.name]
        out[t.name] = {"model": model, "variant": variant, "fold": t.fold,
                       "seed": t.seed, "val_mIoU": r["val_mIoU"], "curve": r["curve"],
                       "seconds": r["seconds"], "checkpoint": r["checkpoint"],
                       "reused": bool(r.get("reused"))}
    reused = sum(r["reused"] for r in out.values())
    ctx.log(f"    {len(out)} trainings ({reused} reused from an earlier run)")
    return {"runs": out}


class Train(Stage):
    name = "train"
    after = ("masks", "resample", "folds")

    def active(self, ctx: Context) -> str | None:
        if not ctx.recipe.models:
            return "no [[models]]"
        return None if train_variants(ctx, False) else "only the fixed variant is trained"

    def reads(self, ctx: Context) -> dict:
        return settings_of(ctx.recipe, "models", "train.variants", "train.seeds")

    def inputs(self, ctx: Context) -> dict:
        return config_inputs(ctx)

    def made(self, ctx: Context) -> list[str]:
        return [f"work/{t.name}/result.json" for t in tasks_for(ctx, train_variants(ctx, False))]

    def estimate(self, ctx: Context) -> str:
        tasks = tasks_for(ctx, train_variants(ctx, False))
        epochs = sum(t.epochs or 0 for t in tasks)
        return f"{len(tasks)} trainings, {epochs} epochs in all"

    def run(self, ctx: Context) -> dict:
        return train(ctx, train_variants(ctx, False))


def infer_store(ctx: Context, run: dict, config: str, images: Path, out: Path,
                split: Path | None = None) -> None:
    """A store of `run`'s checkpoint; a store made by another checkpoint is removed first
    (item-level resume never mixes two models)."""
    from .. import mmseg as smm

    source = out.with_name(out.name + ".source.json")
    ident = {"checkpoint": run["checkpoint"], "weights": identity(run["checkpoint"]),
             "split": str(split) if split else None, "tta": ctx.recipe.infer.tta}
    if source.is_file() and json.loads(source.read_text()) != ident:
        shutil.rmtree(out, ignore_errors=True)
    elif not source.is_file():
        shutil.rmtree(out, ignore_errors=True)
    write_json(source, ident)
    with quiet(ctx.path("logs", "infer.log")):
        smm.infer(config, run["checkpoint"], images, out, tta=ctx.recipe.infer.tta, workers=0,
                  progress=False, model_name=out.name, batch_size=ctx.recipe.infer.batch_size,
                  split=split)


def mean_store(name: Path, roots: list[Path]) -> None:
    """The mean of fold models' test stores (one store per run)."""
    parts = [segkit.ConfidenceStore(r) for r in roots]
    shutil.rmtree(name, ignore_errors=True)
    out = segkit.ConfidenceStore.create(name, parts[0].classes,
                                        model=f"{name.name} (mean of its fold models)")
    for stem in parts[0].stems():
        mean = sum(p.read(stem).astype(np.float32) for p in parts) / len(parts)
        out.write(stem, mean)


def _runs(ctx: Context) -> dict:
    runs = dict(ctx.results.get("train", {}).get("runs", {}))
    runs.update(ctx.results.get("retrain", {}).get("runs", {}))
    return runs


def _config(ctx: Context, model: str) -> str:
    return str(ctx.user(next(m.config for m in ctx.recipe.models if m.name == model)))


class OOF(Stage):
    name = "oof"
    after = ("train",)

    def reads(self, ctx: Context) -> dict:
        return settings_of(ctx.recipe, "infer.tta", "infer.batch_size",
                           "train.ensemble_variant", "stores")

    def inputs(self, ctx: Context) -> dict:
        return store_inputs(ctx)

    def made(self, ctx: Context) -> list[str]:
        return [f"stores/{ctx.run_name(m, v, s, f)}" for m, v, s in ctx.members()
                for f in range(ctx.recipe.folds.k)]

    def run(self, ctx: Context) -> dict:
        runs = _runs(ctx)
        for m, v, s in ctx.members():
            for f in range(ctx.recipe.folds.k):
                name = ctx.run_name(m, v, s, f)
                infer_store(ctx, runs[name], _config(ctx, m), ctx.data / "images",
                            ctx.path("stores", name),
                            split=ctx.data / "splits" / f"fold{f}" / "val.txt")
        ctx.log(f"    {len(ctx.members())} ensemble member(s): each fold model on its own "
                "validation fold")
        score = oof_score(ctx)
        ctx.log(f"    out-of-fold mIoU of the members' equal vote: {score['miou']:.3f}")
        return {"stores": len(ctx.members()) * ctx.recipe.folds.k, "score": score}


def oof_score(ctx: Context) -> dict:
    """Out-of-fold mIoU and per-class IoU of the ensemble members' equal vote (every image
    predicted by the fold model that did not train on it)."""
    from ..io.masks import read_mask
    from ..ops.confusion import iou_scores

    c = ctx.num_classes
    members = [[segkit.ConfidenceStore(p) for p in spec.split(",")]
               for spec in ctx.oof_specs()]
    cm = np.zeros((c, c), np.int64)
    for stores in members[:1]:
        for fold_store in stores:
            for stem in fold_store.stems():
                mean = sum(next(s for s in m if stem in s).read(stem)
                           .astype(np.float32) for m in members)
                truth = read_mask(ctx.data / "masks" / f"{stem}.png").astype(np.int64)
                keep = truth < c
                pred = mean.argmax(0)
                cm += np.bincount(truth[keep] * c + pred[keep],
                                  minlength=c * c).reshape(c, c)
    sc = iou_scores(cm)
    return {"miou": float(sc["miou"]),
            "iou": [None if not np.isfinite(v) else float(v) for v in sc["iou"]]}


def test_runs(ctx: Context, fixed: bool) -> list[tuple[str, str, int]]:
    """(model, variant, seed) whose test stores are made: every trained variant when test
    masks exist (the ablation), else only the ensemble's."""
    variants = train_variants(ctx, fixed)
    if not ctx.has_test_masks:
        variants = [v for v in variants if v == ctx.recipe.train.ensemble_variant]
    return [(m.name, v, s) for m in ctx.recipe.models for v in variants
            for s in ctx.recipe.train.seeds]


def infer_test(ctx: Context, fixed: bool) -> dict:
    runs = _runs(ctx)
    made = []
    for m, v, s in test_runs(ctx, fixed):
        folds = []
        for f in range(ctx.recipe.folds.k):
            name = ctx.run_name(m, v, s, f)
            infer_store(ctx, runs[name], _config(ctx, m), ctx.data / "test_images",
                        ctx.path("stores", name + "_test"))
            folds.append(ctx.path("stores", name + "_test"))
        mean_store(ctx.path("stores", ctx.run_name(m, v, s) + "_test"), folds)
        made.append(ctx.run_name(m, v, s))
    return {"stores": made}


class Test(Stage):
    name = "test"
    after = ("train",)

    def active(self, ctx: Context) -> str | None:
        if not ctx.has_test:
            return "no dataset.test_images"
        return None if ctx.recipe.models else "no [[models]]"

    def reads(self, ctx: Context) -> dict:
        return settings_of(ctx.recipe, "infer.tta", "infer.batch_size",
                           "train.ensemble_variant", "dataset.test_images")

    def inputs(self, ctx: Context) -> dict:
        return {"test_images": identity(ctx.user(ctx.recipe.dataset.test_images))}

    def made(self, ctx: Context) -> list[str]:
        return [f"stores/{ctx.run_name(m, v, s)}_test" for m, v, s in test_runs(ctx, False)]

    def run(self, ctx: Context) -> dict:
        res = infer_test(ctx, False)
        ctx.log(f"    {len(res['stores'])} test store(s): the mean of each run's fold models")
        return res


class Retrain(Stage):
    name = "retrain"
    after = ("audit", "folds", "test")

    def active(self, ctx: Context) -> str | None:
        return None if "fixed" in ctx.recipe.train.variants and ctx.recipe.models else \
            "'fixed' is not in train.variants"

    def reads(self, ctx: Context) -> dict:
        return settings_of(ctx.recipe, "models", "train.seeds", "infer.tta", "infer.batch_size")

    def inputs(self, ctx: Context) -> dict:
        return config_inputs(ctx)

    def run(self, ctx: Context) -> dict:
        res = train(ctx, ["fixed"])
        ctx.results["retrain"] = res
        if ctx.has_test:
            res["test"] = infer_test(ctx, True)
        return res
