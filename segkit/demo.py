"""The demo behind `make demo` / `segkit demo`: segkit's main job, end to end, on data it
generates itself (no downloads).

1. data     a trash-like COCO dataset (textured objects of the 11 classes, annotations traced
            with a wobbly hand) and a held-out test split with its truth and a sample submission
2. masks    `segkit masks`: one label PNG per image (noisy, clean and test truth)
3. folds    `segkit kfold`: greedy k-fold splits
4. resample `segkit resample`: the mode filter over every mask; every backend agrees; how much
            closer to the truth the resampled masks are
5. train    two models (the tiny Swin-UperNet config, two seeds), each on every fold
            (mmengine's Runner, on the CPU)
6. infer    `segkit infer --split`: each fold's model writes its own validation images
            (out-of-fold, OOF) and the test images, with test-time augmentation; a model's
            test store is the mean of its fold models'
7. tune     `segkit tune` on the OOF store sets: weights, per-class bias and ConvCRF, with a
            held-out part of the OOF images
8. audit    `segkit audit` on the same OOF store sets: which training masks are wrong and
            where (confident learning), checked against the clean truth the generator kept
9. ensemble `segkit ensemble`: equal soft vote, vote + ConvCRF, the recipe's setting (equal
            weights + the "seed" CRF) and `--tuned`, whose labels make the submission CSV
10. evaluate per-class IoU and mIoU of each model and each ensemble on the held-out test split
11. index   demo_out/index.md linking the pictures, tables and the submission

Every stage prints its timing; a failing stage stops the demo with a message naming it.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

import segkit

from .io.atomic import is_temporary, write_json, write_text
from .io.masks import read_mask
from .palette import TRASH_CLASSES
from .synthetic import blob_masks, make_coco_dataset
from .viz import bar_chart, colorize, overlay, panel

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "upernet_swin-tiny_demo.py"


@dataclass(frozen=True)
class Preset:
    train_images: int
    test_images: int
    size: int            # image side
    folds: int
    epochs: int          # training epochs per model
    tta: bool
    kernel_masks: int    # 512x512 masks for the backend check


PRESETS = {
    # what `make demo` runs: about 5 minutes on 2 cores
    # (2 models x 2 folds, each fold model trained on half the images for 30 epochs: 6000
    # image-epochs, less than the former 2 models x 50 epochs on 3/4 of them, which leaves
    # time for the out-of-fold inference and the tuning)
    "default": Preset(train_images=100, test_images=16, size=128, folds=2, epochs=30, tta=True,
                      kernel_masks=8),
    # a faster look (the models learn less)
    "quick": Preset(train_images=48, test_images=8, size=128, folds=2, epochs=10, tta=True,
                    kernel_masks=4),
    # the end-to-end test in `make test`: every stage, tiny sizes
    "tiny": Preset(train_images=12, test_images=3, size=64, folds=2, epochs=1, tta=False,
                   kernel_masks=1),
}

STAGES = ("data", "masks", "folds", "resample", "train", "infer", "tune", "audit", "ensemble",
          "evaluate", "index")
MODELS = ("model_a", "model_b")


class DemoError(RuntimeError):
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


class Demo:
    def __init__(self, out: Path, preset: Preset, seed: int, log: Callable[[str], None]):
        self.out, self.p, self.seed, self.log = out, preset, seed, log
        self.data = out / "data"
        self.results: dict = {"preset": preset.__dict__, "seed": seed, "stages": {}}

    # ---- helpers -----------------------------------------------------------------------
    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)

    def stems(self, folder: Path) -> list[str]:
        return sorted(p.stem for p in folder.glob("*.png") if not is_temporary(p))

    # ---- 1. data -----------------------------------------------------------------------
    def stage_data(self) -> dict:
        p = self.p
        train = make_coco_dataset(self.data / "images", n_images=p.train_images, size=p.size,
                                  seed=self.seed, edge_noise=1.0, objects=(2, 5),
                                  object_scale=(0.15, 0.4), empty_images=1)
        test = make_coco_dataset(self.data / "test_images", n_images=p.test_images, size=p.size,
                                 seed=self.seed + 1000, objects=(2, 5), object_scale=(0.15, 0.4),
                                 empty_images=0, rle_fraction=0.0, folders=("batch_03_test",))
        self.train_ds, self.test_ds = train, test
        sample = self.data / "sample_submission.csv"
        write_text(sample, "image_id,PredictionString\n" + "".join(f"{n},\n" for n in test.images))
        self.log(f"    {len(train.images)} training images ({p.size}x{p.size}, annotations with "
                 f"edge noise; the clean truth kept aside), {len(test.images)} held-out test "
                 f"images with their truth, a sample submission")
        return {"train": len(train.images), "test": len(test.images)}

    # ---- 2. masks ----------------------------------------------------------------------
    def stage_masks(self) -> dict:
        kw = dict(flatten=True, palette="trash", progress=False, log=None)
        rep = segkit.coco_to_masks(self.train_ds.ann_file, self.data / "masks", **kw)
        segkit.coco_to_masks(self.train_ds.clean_ann_file, self.data / "masks_clean", **kw)
        segkit.coco_to_masks(self.test_ds.ann_file, self.data / "test_masks", **kw)
        stems = self.stems(self.data / "masks")[:4]
        from PIL import Image

        tiles, titles = [], []
        for stem in stems:
            img = np.asarray(Image.open(self.data / "images" / (stem.replace("+", "/") + ".jpg")))
            tiles.append(overlay(img, read_mask(self.data / "masks" / f"{stem}.png"), alpha=0.6))
            titles.append(stem)
        panel(tiles, titles, self.path("overlays.png"), scale=2)
        self.log(f"    {rep.get('files', len(self.stems(self.data / 'masks')))} masks in "
                 f"data/masks (+ data/masks_clean, data/test_masks); overlays.png")
        return {"masks": len(self.stems(self.data / "masks"))}

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
            noisy = read_mask(self.data / "masks" / f"{stem}.png")
            clean = read_mask(self.data / "masks_clean" / f"{stem}.png")
            fixed = read_mask(self.data / "masks_resampled" / f"{stem}.png")
            noisy_wrong += int((noisy != clean).sum())
            fixed_wrong += int((fixed != clean).sum())
            total += noisy.size
        changed = int(rep["changed"])
        self.log(f"    resampled {len(self.stems(self.data / 'masks'))} masks; pixels that "
                 f"disagree with the clean truth: {noisy_wrong} -> {fixed_wrong} "
                 f"({100 * (1 - fixed_wrong / max(noisy_wrong, 1)):.0f}% fewer)")
        self._resample_picture()
        return {"rates_mpix_s": rates, "backends_agree": agree, "changed": changed,
                "wrong_before": noisy_wrong, "wrong_after": fixed_wrong, "pixels": total}

    def _resample_picture(self) -> None:
        stems = self.stems(self.data / "masks")
        best = max(stems, key=lambda s: int((read_mask(self.data / "masks" / f"{s}.png") > 0)
                                            .sum()))
        tiles = [colorize(read_mask(self.data / sub / f"{best}.png"))
                 for sub in ("masks", "masks_resampled", "masks_clean")]
        panel(tiles, ["annotation (noisy edges)", "after segkit resample",
                      "truth"], self.path("resample_before_after.png"), scale=3)

    # ---- 5. train ----------------------------------------------------------------------
    def stage_train(self) -> dict:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from . import mmseg as smm

        self.checkpoints: dict[str, list] = {}
        metrics: dict = {}
        for m, name in enumerate(MODELS):
            self.checkpoints[name] = []
            metrics[name] = {}
            for fold in range(self.p.folds):
                opts = {"train_cfg.max_epochs": self.p.epochs,
                        "param_scheduler.1.end": self.p.epochs,
                        "param_scheduler.1.T_max": self.p.epochs,
                        "train_cfg.val_interval": max(1, self.p.epochs // 5),
                        "randomness.seed": self.seed + 100 * m + fold,
                        "log_level": "ERROR",
                        "custom_hooks": [dict(type="ProgressBarHook",
                                              desc=f"    {name} (fold {fold})")]}
                t0 = time.perf_counter()
                work = f"{name}_fold{fold}"
                with quiet_mmseg(self.path("work", f"{work}.out")):
                    res = smm.train(str(CONFIG), work_dir=str(self.path("work", work)),
                                    fold=fold, data_root=str(self.data), cfg_options=opts)
                ckpt = res.best_checkpoint or res.last_checkpoint
                if ckpt is None:
                    raise DemoError(f"training {work} left no checkpoint in {res.work_dir}")
                self.checkpoints[name].append(ckpt)
                miou = res.metrics.get("mIoU", float("nan"))
                metrics[name][f"fold{fold}"] = {"val_mIoU": miou, "seconds":
                                                time.perf_counter() - t0,
                                                "checkpoint": str(ckpt)}
                self.log(f"    {name} fold {fold}: {self.p.epochs} epochs, validation mIoU "
                         f"{miou:.1f}% in {metrics[name][f'fold{fold}']['seconds']:.0f} s -> "
                         f"{Path(ckpt).name}")
        return metrics

    # ---- 6. infer ----------------------------------------------------------------------
    def stage_infer(self) -> dict:
        from . import mmseg as smm

        info = {}
        for name, ckpts in self.checkpoints.items():
            for fold, ckpt in enumerate(ckpts):
                kw = dict(tta=self.p.tta, workers=0, progress=True,
                          model_name=f"{name}_fold{fold}")
                with quiet_mmseg(self.path("work", f"{name}_fold{fold}.out")):
                    oof = smm.infer(str(CONFIG), ckpt, self.data / "images",
                                    self.path("stores", f"{name}_fold{fold}"),
                                    split=self.data / "splits" / f"fold{fold}" / "val.txt", **kw)
                    smm.infer(str(CONFIG), ckpt, self.data / "test_images",
                              self.path("stores", f"{name}_fold{fold}_test"), **kw)
                info[f"{name}_fold{fold}"] = len(oof)
            self._mean_store(name, [self.path("stores", f"{name}_fold{f}_test")
                                    for f in range(len(ckpts))])
        views = "with TTA (3 scales x 2 flips)" if self.p.tta else "without TTA"
        self.log(f"    {views}: each fold's model on its own validation fold (OOF: "
                 f"stores/<model>_fold<k>, {sum(info.values())} images in all) and on the "
                 f"{self.p.test_images} test images; stores/model_a, stores/model_b: the mean "
                 "of each model's fold models on the test images")
        return info

    def _mean_store(self, name: str, roots: list[Path]) -> None:
        parts = [segkit.ConfidenceStore(r) for r in roots]
        out = segkit.ConfidenceStore.create(self.path("stores", name), parts[0].classes,
                                            model=f"{name} (mean of its fold models)")
        for stem in parts[0].stems():
            mean = sum(p.read(stem).astype(np.float32) for p in parts) / len(parts)
            out.write(stem, mean)

    # ---- 7. tune -----------------------------------------------------------------------
    def stage_tune(self) -> dict:
        specs = [",".join(str(self.path("stores", f"{n}_fold{f}"))
                          for f in range(self.p.folds)) for n in MODELS]
        small = self.p.train_images < 40
        res = segkit.tune(specs, self.data / "masks", self.path("tuned"),
                          images=self.data / "images", search="weights,bias,crf",
                          budget=40 if small else 150, seed=self.seed,
                          crf_images=2 if small else 6, crf_budget=3 if small else 8,
                          workers=1 if small else 2, progress=False, log=lambda line: self.log("    " + line))
        self.tuned = res
        return {"weights": res.weights, "bias": res.bias, "crf": res.crf,
                "holdout": res.metrics["holdout"], "seconds": res.seconds}

    # ---- 8. audit ----------------------------------------------------------------------
    def stage_audit(self) -> dict:
        specs = [",".join(str(self.path("stores", f"{n}_fold{f}"))
                          for f in range(self.p.folds)) for n in MODELS]
        rep = segkit.audit(specs, self.data / "masks", self.path("audit"),
                           images=self.data / "images", top=8,
                           fix=self.data / "masks_audited", progress=False,
                           workers=1 if self.p.train_images < 40 else 2)
        # the generator kept the clean truth: how many flagged pixels are really wrong
        flagged = wrong = hit = 0
        for row in rep.rows:
            stem = row["stem"]
            noisy = read_mask(self.data / "masks" / f"{stem}.png")
            clean = read_mask(self.data / "masks_clean" / f"{stem}.png")
            issues = read_mask(self.path("audit", "issues", f"{stem}.png")) > 0
            bad = noisy != clean
            flagged += int(issues.sum())
            wrong += int(bad.sum())
            hit += int((issues & bad).sum())
        precision = hit / flagged if flagged else float("nan")
        recall = hit / wrong if wrong else float("nan")
        self.log(f"    {rep.images} masks audited: {rep.issues} pixels flagged, of which "
                 f"{100 * precision:.0f}% are truly wrong (precision); they cover "
                 f"{100 * recall:.0f}% of the wrong pixels (recall); worst: "
                 + ", ".join(r["stem"] for r in rep.rows[:3]) + " -> audit/index.html")
        return {"images": rep.images, "flagged": rep.issues, "precision": precision,
                "recall": recall, "fixed_pixels": rep.fixed,
                "worst": [r["stem"] for r in rep.rows[:5]]}

    # ---- 9. ensemble + CRF + submission ------------------------------------------------
    def stage_ensemble(self) -> dict:
        stores = [self.path("stores", n) for n in MODELS]
        sub_size = max(8, self.p.size // 2)  # the competition halves 512 to 256
        vote = segkit.ensemble(stores, [0.5, 0.5], self.path("ensemble"), progress=False)
        crf = segkit.ensemble(stores, [0.5, 0.5], self.path("ensemble_crf"), crf="convcrf",
                              images=self.data / "test_images", progress=False)
        segkit.ensemble(stores, [0.5, 0.5], self.path("ensemble_recipe"), crf="seed",
                        images=self.data / "test_images", progress=False)
        segkit.ensemble(stores, None, self.path("ensemble_tuned"),
                        tuned=self.path("tuned", "tuned.json"),
                        images=self.data / "test_images",
                        submission=self.path("submission.csv"),
                        sample=self.data / "sample_submission.csv", size=sub_size,
                        progress=False)
        from .io.submission import read_submission

        rows = read_submission(self.path("submission.csv"), size=sub_size)
        self.log(f"    soft vote -> ensemble/labels; + ConvCRF (preset convcrf, probabilities) "
                 f"-> ensemble_crf/labels; the recipe (equal weights + the seed CRF) -> "
                 f"ensemble_recipe/labels; --tuned -> ensemble_tuned/labels and submission.csv: "
                 f"{len(rows)} rows of {sub_size}x{sub_size} labels, re-read and checked")
        self._crf_picture()
        return {"images": vote.images, "crf_images": crf.images, "submission_rows": len(rows)}

    def _crf_picture(self) -> None:
        from PIL import Image

        stems = self.stems(self.path("ensemble", "labels"))
        tiles, titles = [], []
        for stem in stems[:2]:
            img = np.asarray(Image.open(self.data / "test_images" /
                                        (stem.replace("+", "/") + ".jpg")))
            truth = read_mask(self.data / "test_masks" / f"{stem}.png")
            vote = read_mask(self.path("ensemble", "labels", f"{stem}.png"))
            crf = read_mask(self.path("ensemble_crf", "labels", f"{stem}.png"))
            tiles += [img, colorize(vote), colorize(crf), colorize(truth)]
            acc = [f"{100 * (m == truth).mean():.1f}%" for m in (vote, crf)]
            titles += [stem, f"vote ({acc[0]})", f"vote + CRF ({acc[1]})", "truth"]
        panel(tiles, titles, self.path("crf_before_after.png"), scale=2)

    # ---- 10. evaluate -------------------------------------------------------------------
    def stage_evaluate(self) -> dict:
        gt = self.data / "test_masks"
        variants = {"model A": self.path("stores", "model_a"),
                    "model B": self.path("stores", "model_b"),
                    "soft vote": self.path("ensemble", "labels"),
                    "vote + CRF": self.path("ensemble_crf", "labels"),
                    "recipe": self.path("ensemble_recipe", "labels"),
                    "tuned": self.path("ensemble_tuned", "labels")}
        results = {}
        for name, pred in variants.items():
            ev = segkit.evaluate(pred, gt, len(TRASH_CLASSES), class_names=list(TRASH_CLASSES),
                                 out=self.path("eval", name.replace(" ", "_").replace("+", "")),
                                 progress=False, workers=1)
            results[name] = ev
        header = f"    {'class':14s}" + "".join(f"{n:>12s}" for n in results)
        self.log(header)
        for k, cls in enumerate(TRASH_CLASSES):
            self.log(f"    {cls:14s}" + "".join(
                f"{'n/a' if np.isnan(ev.iou[k]) else f'{ev.iou[k]:.3f}':>12s}"
                for ev in results.values()))
        self.log(f"    {'mIoU':14s}" + "".join(f"{ev.miou:12.3f}" for ev in results.values()))
        self.log(f"    {'pixel acc':14s}" + "".join(f"{ev.pixel_acc:12.3f}"
                                                   for ev in results.values()))
        bar_chart({n: ev.iou for n, ev in results.items()}, list(TRASH_CLASSES),
                  "per-class IoU on the held-out test split", self.path("iou.png"), width=760)
        return {n: {"miou": ev.miou, "pixel_acc": ev.pixel_acc,
                    "iou": [None if np.isnan(v) else float(v) for v in ev.iou]}
                for n, ev in results.items()}

    # ---- 11. index ----------------------------------------------------------------------
    def stage_index(self) -> dict:
        st = self.results["stages"]
        rs, ev = st["resample"], st["evaluate"]
        lines = ["# segkit demo", "",
                 f"Generated data (seed {self.seed}), preset `{self.preset_name}`; every number "
                 "below was measured in this run (`demo_report.json` has them all).", "",
                 "## Data and masks", "",
                 f"{st['data']['train']} training images whose annotations trace the objects "
                 f"with a wobbly hand, {st['data']['test']} held-out test images with their "
                 "truth. Overlays of masks on images:", "", "![overlays](overlays.png)", "",
                 "## Mode resampling", "",
                 "Every backend agrees with the NumPy reference ("
                 + ", ".join(f"{k} {v:,.0f} Mpix/s" for k, v in rs["rates_mpix_s"].items())
                 + " on 512x512 masks). Pixels that disagree with the truth: "
                 f"{rs['wrong_before']} before, {rs['wrong_after']} after resampling.", "",
                 "![before/after resampling](resample_before_after.png)", "",
                 "## Models, soft vote and ConvCRF", "",
                 "| | mIoU | pixel accuracy |", "|---|---:|---:|"]
        lines += [f"| {n} | {r['miou']:.3f} | {r['pixel_acc']:.3f} |" for n, r in ev.items()]
        tune = st["tune"]
        hold = tune["holdout"]
        test_names = {"equal": "soft vote", "recipe": "recipe", "tuned": "tuned"}
        lines += ["", "## Tuning on out-of-fold predictions", "",
                  "Each model was trained on every fold; each fold's model inferred its own "
                  "validation images (out of fold), so the OOF stores cover the training images. "
                  "`segkit tune` searched weights, a per-class bias and ConvCRF on them, with "
                  f"{self.tuned.info['holdout_images']} OOF images held out; the final values "
                  "were then refit on all OOF images and applied to the test stores with "
                  "`segkit ensemble --tuned`.", "",
                  "| setting | held-out OOF mIoU | test mIoU |", "|---|---:|---:|"]
        for key, label in (("equal", "equal weights"),
                           ("recipe", "recipe (equal + seed CRF)"), ("tuned", "tuned")):
            h = hold.get(key)
            held = "n/a" if h is None else f"{h['miou']:.3f}"
            lines.append(f"| {label} | {held} | {ev[test_names[key]]['miou']:.3f} |")
        lines += ["", "Tuned weights: " + ", ".join(f"{w:.3f}" for w in tune["weights"])
                  + "; bias: " + ("none" if tune["bias"] is None else
                                  ", ".join(f"{b:+.2f}" for b in tune["bias"]))
                  + f"; CRF: {tune['crf'] or 'off'}.", "", "![tuning](tuned/tuning.png)"]
        au = st["audit"]
        lines += ["", "## Label audit", "",
                  f"`segkit audit` on the same OOF stores flagged {au['flagged']} annotation "
                  f"pixels of {au['images']} masks; against the clean truth the generator kept, "
                  f"{100 * au['precision']:.0f}% of them are truly wrong (precision) and they "
                  f"cover {100 * au['recall']:.0f}% of the wrong pixels (recall). Worst masks "
                  "first, with photos and overlays: [audit/index.html](audit/index.html); "
                  "corrected masks in `data/masks_audited`."]
        lines += ["", "![per-class IoU](iou.png)", "",
                  "![vote and CRF](crf_before_after.png)", "",
                  "## Files", "",
                  "- `data/`: images, COCO files, masks (`masks`, `masks_clean`, "
                  "`masks_resampled`, `test_masks`), `splits/` (folds)",
                  "- `work/model_*_fold*`: mmengine work folders (logs, checkpoints)",
                  "- `stores/`: confidence stores (float16 probabilities per image): "
                  "`<model>_fold<k>` out of fold, `<model>_fold<k>_test`, `<model>` (test)",
                  "- `tuned/tuned.json`, `tuned/tuning.png`: the tuned setting and its search",
                  "- `audit/`: `audit.csv`, `issues/<stem>.png`, `index.html` (the label audit)",
                  "- `ensemble*/labels`: label PNGs of each ensemble",
                  "- [`submission.csv`](submission.csv): the competition's format",
                  "- `eval/*/eval.json`: confusion matrices and per-class IoU", ""]
        write_text(self.path("index.md"), "\n".join(lines))
        return {"index": str(self.path("index.md"))}

    # ---- driver ------------------------------------------------------------------------
    def run(self, preset_name: str) -> dict:
        self.preset_name = preset_name
        t_all = time.perf_counter()
        for i, stage in enumerate(STAGES, 1):
            self.log(f"[{i}/{len(STAGES)}] {stage}")
            t0 = time.perf_counter()
            try:
                result = getattr(self, f"stage_{stage}")()
            except DemoError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure names its stage
                detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                raise DemoError(f"stage '{stage}' failed: {detail}") from exc
            seconds = time.perf_counter() - t0
            self.results["stages"][stage] = result
            self.results.setdefault("seconds", {})[stage] = round(seconds, 2)
            self.log(f"    ({seconds:.1f} s)")
        self.results["seconds"]["total"] = round(time.perf_counter() - t_all, 2)
        write_json(self.path("demo_report.json"), self.results, default=str)
        self.log(f"done in {self.results['seconds']['total']:.0f} s: open {self.out}/index.md")
        return self.results


def run(out: str | Path = "demo_out", *, preset: str = "default", seed: int = 0,
        log: Callable[[str], None] = print) -> dict:
    """Run the demo into `out` (see the module docstring); returns the measured results."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(map(repr, PRESETS))}; got {preset!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log(f"segkit demo ({preset}) -> {out}/")
    for info in segkit.backends().values():
        log(f"    backend {info}")
    return Demo(out, PRESETS[preset], seed, log).run(preset)


def load_report(out: str | Path) -> dict:
    return json.loads((Path(out) / "demo_report.json").read_text())
