"""The demo's driver: the generated scenes and the recipe written for them, then
``segkit recipe run`` (:func:`segkit.recipe.run_recipe`) with the demo's comparisons with the
clean truth added after the stages (the ``after_stage`` hook), then the index."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import time
import traceback
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

import segkit

from ..errors import SegkitError
from ..io.atomic import is_temporary, write_json, write_text
from ..io.masks import read_mask
from ..palette import TRASH_CLASSES, TRASH_PALETTE
from ..recipe import STAGE_NAMES, run_recipe
from ..recipe.settings import (AuditSettings, CrfSettings, DatasetSettings, FoldSettings,
                               InferSettings, ModelSettings, PrepareSettings, Recipe,
                               SubmissionSettings, TrainSettings, TuneSettings)
from ..recipe.toml_file import write_recipe
from ..synthetic import blob_masks, make_coco_dataset
from ..viz import colorize, overlay, panel
from .presets import RECIPE_VARIANT, Preset

#: data (the generator), the recipe's stages and its report, then the demo's index
STAGES = ("data", *STAGE_NAMES, "index")
#: the recipe's [[models]] name of the demo's model (its runs: tiny_<variant>_s<seed>_fold<k>)
MODEL = "tiny"


class DemoError(SegkitError, RuntimeError):
    """A stage failed; the message names it."""


@contextlib.contextmanager
def quiet_mmseg(log_file: Path):
    """mmseg/mmengine's own chatter (deprecation warnings, prints, INFO logs) goes to
    `log_file` instead of the terminal; progress bars (stderr) and errors still show."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a") as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            try:
                yield
            finally:
                sink.write(buffer.getvalue())
        logging.getLogger("mmengine").setLevel(logging.ERROR)


def scene_options(size: int) -> dict:
    """The generator's settings for the demo's trash scenes at side `size` (scaled from 64 px):
    3-6 objects of radius 30-55% of the side (the background about 45% of the pixels), classes
    dealt evenly, annotations traced with a wobbly hand (points every 2 px moved by 1 px),
    and objects under 60 px left unannotated half the time."""
    k = size / 64
    return dict(size=size, objects=(3, 7), object_scale=(0.3, 0.55), balanced=True,
                noise=4.0, edge_noise=1.0 * k, vertex_step=2.0 * k,
                missed=(int(60 * k * k), 0.5))


def model_config(p: Preset, crf: bool = False) -> str:
    """The demo's model config for the recipe: the repository's demo config with the demo's
    schedule (validation `val_points` times along training, the last weights kept)."""
    base = p.crf_config_path if crf else p.config_path
    interval = max(1, p.epochs // max(1, p.val_points))
    lines = [f"# segkit demo: {base.name} validated {p.val_points} times along training "
             "against the clean truth (dataset.val_masks); the last weights are used (no "
             "checkpoint is picked on the truth).",
             f"_base_ = [{str(base)!r}]",
             # the epochs come from recipe.toml (models.epochs): the recipe sets max_epochs
             # and the schedulers that span the run together
             f"train_cfg = dict(val_interval={interval})",
             f"default_hooks = dict(checkpoint=dict(interval={p.epochs}, save_best=None))",
             "log_level = 'ERROR'"]
    if p.gpu:
        lines.append("train_dataloader = dict(num_workers=4)")
    return "\n".join(lines) + "\n"


class DemoBase:
    def __init__(self, out: Path, preset: Preset, seed: int, log: Callable[[str], None]):
        self.out, self.p, self.seed, self.log = out, preset, seed, log
        self.scenes = out / "scenes"   # what the generator wrote (the recipe's dataset)
        self.data = out / "data"       # the recipe's data root (masks, splits, ...)
        self.results: dict = {"preset": dict(preset.__dict__), "seed": seed, "stages": {}}

    # ---- helpers -----------------------------------------------------------------------
    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)

    def stems(self, folder: Path) -> list[str]:
        return sorted(p.stem for p in folder.glob("*.png") if not is_temporary(p))

    def image(self, folder: str, stem: str) -> np.ndarray:
        from PIL import Image

        return np.asarray(Image.open(self.scenes / folder / (stem.replace("+", "/") + ".jpg")))

    def run_name(self, variant: str, seed: int, fold: int | None = None) -> str:
        """The recipe's name of a demo run (variant as the demo calls it)."""
        return f"{MODEL}_{RECIPE_VARIANT[variant]}_s{seed}" + (
            "" if fold is None else f"_fold{fold}")

    # ---- 1. data -----------------------------------------------------------------------
    def stage_data(self) -> dict:
        p = self.p
        if (self.data / "images").is_dir() and not (self.data / "images").is_symlink():
            shutil.rmtree(self.data)  # a demo_out of the former layout (images under data/)
        opts = scene_options(p.size)
        train = make_coco_dataset(self.scenes / "images", n_images=p.train_images,
                                  seed=self.seed, empty_images=1, **opts)
        test = make_coco_dataset(self.scenes / "test_images", n_images=p.test_images,
                                 seed=self.seed + 1000, empty_images=0, rle_fraction=0.0,
                                 folders=("batch_03_test",), **opts)
        self.train_ds, self.test_ds = train, test
        kw = dict(flatten=True, palette="trash", progress=False, log=None, workers=1)
        for ann, folder in ((train.clean_ann_file, "masks_clean"),
                            (test.ann_file, "test_masks")):
            shutil.rmtree(self.scenes / folder, ignore_errors=True)
            segkit.coco_to_masks(ann, self.scenes / folder, **kw)
            for extra in ("labels.json", "masks_report.json"):
                (self.scenes / folder / extra).unlink(missing_ok=True)
        write_text(self.scenes / "sample_submission.csv",
                   "image_id,PredictionString\n" + "".join(f"{n},\n" for n in test.images))
        write_json(self.path("classes.json"), {"classes": list(TRASH_CLASSES),
                                               "palette": np.asarray(TRASH_PALETTE).tolist()})
        write_recipe(self.out, self.recipe(), header=(
            f"Written by `segkit demo` (preset {self.preset_name!r}, data seed {self.seed}) "
            "for the scenes it generated in scenes/: the same stages as `segkit recipe run`."))
        self.log(f"    {len(train.images)} training images ({p.size}x{p.size}; annotations "
                 f"traced with a wobbly hand, small objects sometimes missed; the clean truth "
                 f"kept aside), {len(test.images)} held-out test images with their truth; "
                 f"recipe.toml for `segkit recipe run {self.out}`")
        return {"train": len(train.images), "test": len(test.images), "recipe": "recipe.toml",
                "generator": {k: list(v) if isinstance(v, tuple) else v
                              for k, v in opts.items()}}

    def recipe(self) -> Recipe:
        """The demo's recipe.toml: the scenes, the demo's model and sizes."""
        p = self.p
        small = p.train_images < 40
        configs = self.path("configs")
        write_text(configs / "demo.py", model_config(p))
        return Recipe(
            preset="gpu" if p.gpu else "cpu",
            dataset=DatasetSettings(images="scenes/images",
                                    coco=str(Path("scenes/images") / self.train_ds.ann_file.name),
                                    test_images="scenes/test_images",
                                    test_masks="scenes/test_masks",
                                    val_masks="scenes/masks_clean",
                                    classes_file="classes.json", ignore_index=255),
            prepare=PrepareSettings(resample=True, size=3, ties="keep"),
            folds=FoldSettings(k=p.folds, seed=self.seed, method="greedy"),
            models=(ModelSettings(name=MODEL, config="configs/demo.py", epochs=p.epochs,
                                  batch_size=8, pretrained="none"),),
            train=TrainSettings(variants=tuple(RECIPE_VARIANT[v] for v in p.variants),
                                seeds=tuple(range(p.seeds)), ensemble_variant="resampled"),
            infer=InferSettings(tta=p.tta, batch_size=8),
            tune=TuneSettings(search=("weights", "bias", "crf"), budget=p.tune_budget,
                              holdout=0.2, crf_steps=6 if small else 400,
                              crf_images=8 if small else 32, crf_crop=p.size),
            audit=replace(AuditSettings(), top=8),
            crf=CrfSettings(),  # the convcrf preset (11x11 on a 4x pooled grid)
            submission=SubmissionSettings(size=max(8, p.size // 2),
                                          sample="scenes/sample_submission.csv"))

    # ---- the demo's part of the recipe's masks, resample and folds stages --------------
    def stage_masks(self, ctx, result: dict) -> dict:
        stems = self.stems(self.data / "masks")
        tiles, titles = [], []
        for stem in stems[:4]:
            tiles.append(overlay(self.image("images", stem),
                                 read_mask(self.data / "masks" / f"{stem}.png"), alpha=0.6))
            titles.append(stem)
        for stem in stems[:4]:
            tiles.append(self.image("images", stem))
            titles.append("photo")
        panel(tiles, titles, self.path("overlays.png"), scale=max(1, 256 // self.p.size))
        counts = np.zeros(256, np.int64)
        for stem in stems:
            counts += np.bincount(read_mask(self.scenes / "masks_clean" / f"{stem}.png")
                                  .ravel(), minlength=256)
        share = counts[:11] / max(1, counts.sum())
        self.log(f"    clean truth: background {100 * share[0]:.0f}% of the pixels, each "
                 f"class {100 * share[1:].min():.1f}-{100 * share[1:].max():.1f}%; "
                 "overlays.png")
        return {**result, "class_share": share.round(4).tolist()}

    def backend_check(self) -> tuple[dict, bool]:
        """Every mode-filter backend on 512x512 masks: their rates and whether all agree."""
        masks = blob_masks(self.p.kernel_masks, 512, 512, 11, noise=0.05, seed=self.seed)
        outs, rates = {}, {}
        for name, info in segkit.backends().items():
            if not info.available or name == "numpy":
                continue
            segkit.mode_filter(masks[:1], backend=name)  # compile / warm up
            t0 = time.perf_counter()
            outs[name] = segkit.mode_filter(masks, backend=name)
            rates[name] = masks.size / (time.perf_counter() - t0) / 1e6
        crop = masks[0, :40, :40]
        agree = all(np.array_equal(outs["cpp"], o) for o in outs.values()) and np.array_equal(
            segkit.mode_filter(crop, backend="numpy"), segkit.mode_filter(crop, backend="cpp"))
        if not agree:
            raise DemoError("the mode filter backends disagree: this is a bug, please report it")
        self.log("    mode filter on {} 512x512 masks: {}; every backend (and the NumPy "
                 "reference) agrees".format(len(masks), ", ".join(
                     f"{k} {v:,.0f} Mpix/s" for k, v in rates.items())))
        return rates, agree

    def stage_resample(self, ctx, result: dict) -> dict:
        rates, agree = self.backend_check()
        noisy_wrong = fixed_wrong = total = 0
        for stem in self.stems(self.data / "masks"):
            clean = read_mask(self.scenes / "masks_clean" / f"{stem}.png")
            noisy_wrong += int((read_mask(self.data / "masks" / f"{stem}.png") != clean).sum())
            fixed_wrong += int((read_mask(self.data / "masks_resampled" / f"{stem}.png")
                                != clean).sum())
            total += clean.size
        self.log(f"    pixels that disagree with the clean truth: {noisy_wrong} "
                 f"({100 * noisy_wrong / total:.1f}%) -> {fixed_wrong} "
                 f"({100 * fixed_wrong / total:.1f}%) after resampling")
        self._resample_picture()
        return {**result, "rates_mpix_s": rates, "backends_agree": agree,
                "changed": result.get("changed_pixels"), "wrong_before": noisy_wrong,
                "wrong_after": fixed_wrong, "pixels": total}

    def _resample_picture(self) -> None:
        stems = self.stems(self.data / "masks")
        best = max(stems, key=lambda s: int((read_mask(self.data / "masks" / f"{s}.png") > 0)
                                            .sum()))
        tiles = [self.image("images", best)] + [
            colorize(read_mask(folder / f"{best}.png"))
            for folder in (self.data / "masks", self.data / "masks_resampled",
                           self.scenes / "masks_clean")]
        panel(tiles, ["photo", "annotation", "after segkit resample", "truth"],
              self.path("resample_before_after.png"), scale=max(1, 256 // self.p.size))

    def stage_folds(self, ctx, result: dict) -> dict:
        return {**result, "folds": result.get("k"), "val_sizes": result.get("val_sizes")}

    # ---- driver ------------------------------------------------------------------------
    def estimate(self, stage: str, done: dict) -> str:
        """'about N s' for `stage` from the preset's measured times, scaled by how this run
        compares so far (empty when the preset has no figure)."""
        expect = dict(self.p.expect)
        if stage not in expect:
            return ""
        ratio = 1.0
        known = [s for s in done if s in expect and expect[s] > 5]
        if known:
            ratio = sum(done[s] for s in known) / sum(expect[s] for s in known)
        return f" (about {expect[stage] * ratio:.0f} s)"

    def _head(self, i: int, n: int, name: str) -> str:
        k = STAGES.index(name) + 1
        self._current = name
        return f"[{k}/{len(STAGES)}] {name}{self.estimate(name, self.results['seconds'])}"

    def _after_stage(self, name: str, ctx, state: dict) -> None:
        """The recipe finished stage `name`: the demo's comparisons for it, its time."""
        t0 = time.perf_counter()
        result = ctx.results.get(name, {})
        extra = getattr(self, f"stage_{name}", None)
        try:
            if extra is not None and state.get("state") != "skipped":
                result = extra(ctx, result)
        except DemoError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure names its stage
            raise DemoError(f"stage '{name}' failed: {_describe(exc)}") from exc
        self.results["stages"][name] = json.loads(json.dumps(result, default=str))
        secs = self.results["seconds"]
        secs[name] = round(float(state.get("seconds") or 0.0) + time.perf_counter() - t0, 2)
        secs["total"] = round(time.perf_counter() - self._t_all, 2)
        if extra is not None and state.get("state") == "ran":
            self.log(f"    (with the demo's comparisons: {secs[name]:.1f} s)")

    def _timed(self, stage: str, fn) -> None:
        i = STAGES.index(stage) + 1
        self.log(f"[{i}/{len(STAGES)}] {stage}{self.estimate(stage, self.results['seconds'])}")
        t0 = time.perf_counter()
        try:
            self.results["stages"][stage] = fn()
        except DemoError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure names its stage
            raise DemoError(f"stage '{stage}' failed: {_describe(exc)}") from exc
        secs = self.results["seconds"]
        secs[stage] = round(time.perf_counter() - t0, 2)
        secs["total"] = round(time.perf_counter() - self._t_all, 2)
        self.log(f"    ({secs[stage]:.1f} s; {secs['total']:.0f} s so far)")

    def run(self, preset_name: str) -> dict:
        self.preset_name = preset_name
        self._t_all = time.perf_counter()
        self._current = "masks"
        self.results.setdefault("seconds", {})
        self._timed("data", self.stage_data)
        try:
            report = run_recipe(self.out, progress=True, log=self.log,
                                hooks={"head": self._head, "after_stage": self._after_stage})
        except DemoError:
            raise
        except SegkitError as exc:  # the recipe's StageError names the stage
            raise DemoError(str(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - every failure names its stage
            raise DemoError(f"stage '{self._current}' failed: {_describe(exc)}") from exc
        rep = report["stages"]["report"]
        self.results["stages"]["report"] = {"json": "report.json",
                                            "html": "report/index.html"}
        self.results["seconds"]["report"] = round(float(rep.get("seconds") or 0.0), 2)
        self.results["seconds"]["total"] = round(time.perf_counter() - self._t_all, 2)
        write_json(self.path("demo_report.json"), self.results, default=str)
        self._timed("index", self.stage_index)
        write_json(self.path("demo_report.json"), self.results, default=str)
        self.log(f"done in {self.results['seconds']['total']:.0f} s: open {self.out}/index.md "
                 f"(the recipe's own report: {self.out}/report/index.html)")
        return self.results


def _describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()
