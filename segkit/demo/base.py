"""The demo's driver and its first stages: data, masks, folds, resample."""
from __future__ import annotations

import contextlib
import io
import logging
import time
import traceback
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

import segkit

from ..errors import SegkitError
from ..io.atomic import is_temporary, write_json, write_text
from ..io.masks import read_mask
from ..synthetic import blob_masks, make_coco_dataset
from ..viz import colorize, overlay, panel
from .presets import Preset

STAGES = ("data", "masks", "folds", "resample", "train", "infer", "tune", "audit", "retrain",
          "ensemble", "evaluate", "index")


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


class DemoBase:
    def __init__(self, out: Path, preset: Preset, seed: int, log: Callable[[str], None]):
        self.out, self.p, self.seed, self.log = out, preset, seed, log
        self.data = out / "data"
        self.results: dict = {"preset": dict(preset.__dict__), "seed": seed, "stages": {}}

    # ---- helpers -----------------------------------------------------------------------
    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)

    def stems(self, folder: Path) -> list[str]:
        return sorted(p.stem for p in folder.glob("*.png") if not is_temporary(p))

    def image(self, folder: str, stem: str) -> np.ndarray:
        from PIL import Image

        return np.asarray(Image.open(self.data / folder / (stem.replace("+", "/") + ".jpg")))

    # ---- 1. data -----------------------------------------------------------------------
    def stage_data(self) -> dict:
        p = self.p
        opts = scene_options(p.size)
        train = make_coco_dataset(self.data / "images", n_images=p.train_images,
                                  seed=self.seed, empty_images=1, **opts)
        test = make_coco_dataset(self.data / "test_images", n_images=p.test_images,
                                 seed=self.seed + 1000, empty_images=0, rle_fraction=0.0,
                                 folders=("batch_03_test",), **opts)
        self.train_ds, self.test_ds = train, test
        sample = self.data / "sample_submission.csv"
        write_text(sample, "image_id,PredictionString\n" + "".join(f"{n},\n" for n in test.images))
        self.log(f"    {len(train.images)} training images ({p.size}x{p.size}; annotations "
                 f"traced with a wobbly hand, small objects sometimes missed; the clean truth "
                 f"kept aside), {len(test.images)} held-out test images with their truth")
        return {"train": len(train.images), "test": len(test.images),
                "generator": {k: list(v) if isinstance(v, tuple) else v
                              for k, v in opts.items()}}

    # ---- 2. masks ----------------------------------------------------------------------
    def stage_masks(self) -> dict:
        kw = dict(flatten=True, palette="trash", progress=False, log=None)
        segkit.coco_to_masks(self.train_ds.ann_file, self.data / "masks", **kw)
        segkit.coco_to_masks(self.train_ds.clean_ann_file, self.data / "masks_clean", **kw)
        segkit.coco_to_masks(self.test_ds.ann_file, self.data / "test_masks", **kw)
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
            counts += np.bincount(read_mask(self.data / "masks_clean" / f"{stem}.png").ravel(),
                                  minlength=256)
        share = counts[:11] / max(1, counts.sum())
        self.log(f"    {len(stems)} masks in data/masks (+ data/masks_clean, data/test_masks); "
                 f"background {100 * share[0]:.0f}% of the pixels, each class "
                 f"{100 * share[1:].min():.1f}-{100 * share[1:].max():.1f}%; overlays.png")
        return {"masks": len(stems), "class_share": share.round(4).tolist()}

    # ---- 3. folds ----------------------------------------------------------------------
    def stage_folds(self) -> dict:
        res = segkit.kfold(self.train_ds.ann_file, k=self.p.folds, method="greedy",
                           seed=self.seed, out=self.data / "splits", flatten=True, log=None)
        for line in res.table().splitlines():
            self.log("    " + line)
        return {"folds": self.p.folds, "val_sizes": [len(f) for f in res.folds]}

    # ---- 4. resample -------------------------------------------------------------------
    def stage_resample(self) -> dict:
        # (a) the kernel: every backend on 512x512 masks, identical outputs
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
        # (b) the dataset job
        rep = segkit.resample(self.data / "masks", self.data / "masks_resampled",
                              progress=False, log=lambda line: self.log("    " + line))
        noisy_wrong = fixed_wrong = total = 0
        for stem in self.stems(self.data / "masks"):
            clean = read_mask(self.data / "masks_clean" / f"{stem}.png")
            noisy_wrong += int((read_mask(self.data / "masks" / f"{stem}.png") != clean).sum())
            fixed_wrong += int((read_mask(self.data / "masks_resampled" / f"{stem}.png")
                                != clean).sum())
            total += clean.size
        self.log(f"    pixels that disagree with the clean truth: {noisy_wrong} "
                 f"({100 * noisy_wrong / total:.1f}%) -> {fixed_wrong} "
                 f"({100 * fixed_wrong / total:.1f}%) after resampling")
        self._resample_picture()
        return {"rates_mpix_s": rates, "backends_agree": agree, "changed": int(rep["changed"]),
                "wrong_before": noisy_wrong, "wrong_after": fixed_wrong, "pixels": total}

    def _resample_picture(self) -> None:
        stems = self.stems(self.data / "masks")
        best = max(stems, key=lambda s: int((read_mask(self.data / "masks" / f"{s}.png") > 0)
                                            .sum()))
        tiles = [self.image("images", best)] + [
            colorize(read_mask(self.data / sub / f"{best}.png"))
            for sub in ("masks", "masks_resampled", "masks_clean")]
        panel(tiles, ["photo", "annotation", "after segkit resample", "truth"],
              self.path("resample_before_after.png"), scale=max(1, 256 // self.p.size))

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

    def run(self, preset_name: str) -> dict:
        self.preset_name = preset_name
        t_all = time.perf_counter()
        seconds = self.results.setdefault("seconds", {})
        for i, stage in enumerate(STAGES, 1):
            self.log(f"[{i}/{len(STAGES)}] {stage}{self.estimate(stage, seconds)}")
            t0 = time.perf_counter()
            try:
                result = getattr(self, f"stage_{stage}")()
            except DemoError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure names its stage
                detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                raise DemoError(f"stage '{stage}' failed: {detail}") from exc
            self.results["stages"][stage] = result
            seconds[stage] = round(time.perf_counter() - t0, 2)
            seconds["total"] = round(time.perf_counter() - t_all, 2)
            self.log(f"    ({seconds[stage]:.1f} s; {seconds['total']:.0f} s so far)")
            if stage == "evaluate":  # the index reports the totals
                write_json(self.path("demo_report.json"), self.results, default=str)
        seconds["total"] = round(time.perf_counter() - t_all, 2)
        write_json(self.path("demo_report.json"), self.results, default=str)
        self.log(f"done in {seconds['total']:.0f} s: open {self.out}/index.md")
        return self.results
