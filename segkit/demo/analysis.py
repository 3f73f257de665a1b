"""The demo's analysis stages: tune, audit, ensemble, evaluate (the step table and the
ablation on the held-out test split)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

import segkit

from ..io.masks import read_mask
from ..ops.confusion import iou_scores
from ..palette import TRASH_CLASSES
from .models import run_name

C = len(TRASH_CLASSES)


def per_image_confusions(pred: Path, gt: Path, stems: list[str]) -> np.ndarray:
    """(n, C, C) confusion matrices (truth x prediction) of each test image; `pred` is a label
    PNG folder or a confidence store (argmax)."""
    store = segkit.ConfidenceStore(pred) if (pred / "meta.json").is_file() else None
    out = np.zeros((len(stems), C, C), np.int64)
    for i, stem in enumerate(stems):
        truth = read_mask(gt / f"{stem}.png").astype(np.int64)
        labels = (store.read(stem).argmax(0) if store is not None
                  else read_mask(pred / f"{stem}.png")).astype(np.int64)
        keep = truth < C
        out[i] = np.bincount(truth[keep] * C + labels[keep], minlength=C * C).reshape(C, C)
    return out


def bootstrap_sd(cms: np.ndarray, draws: int = 200, seed: int = 0) -> float:
    """Standard deviation of the mIoU over test sets redrawn from the test images."""
    rng = np.random.default_rng(seed)
    n = len(cms)
    vals = [iou_scores(cms[rng.integers(0, n, n)].sum(0))["miou"] for _ in range(draws)]
    return float(np.std(vals))


class AnalysisStages:
    """Mixin of the Demo."""

    # ---- tune ----------------------------------------------------------------------------
    def stage_tune(self) -> dict:
        """`segkit tune` with the CRF fitted by gradient: demo-sized fit (crops of the whole
        64x64 image, 400 steps of 4: 4.4 s on 2 idle cores)."""
        small = self.p.train_images < 40
        res = segkit.tune(self.oof_specs(), self.data / "masks", self.path("tuned"),
                          images=self.data / "images", search="weights,bias,crf",
                          budget=self.p.tune_budget, seed=self.seed,
                          crf_images=8 if small else 32, crf_crop=self.p.size,
                          crf_batch=2 if small else 4, crf_steps=6 if small else 400,
                          crf_lr=0.02, workers=1 if small else 2, progress=False,
                          log=lambda line: self.log("    " + line))
        self.tuned = res
        fit = res.crf_fit or {}
        return {"weights": res.weights, "bias": res.bias, "crf": res.crf,
                "crf_name": res.crf_name, "holdout": res.metrics["holdout"],
                "crf_candidates": {k: v["miou"] for k, v in
                                   (res.metrics.get("crf_candidates") or {}).items()},
                "crf_fit": {"learned": fit.get("learned"), "steps": len(fit.get("loss", [])),
                            "loss_first": (fit.get("loss") or [None])[0],
                            "loss_last": (fit.get("loss") or [None])[-1],
                            "seconds": fit.get("seconds")},
                "holdout_images": res.info.get("holdout_images"), "seconds": res.seconds}

    # ---- audit ---------------------------------------------------------------------------
    def stage_audit(self) -> dict:
        rep = segkit.audit(self.oof_specs(), self.data / "masks", self.path("audit"),
                           images=self.data / "images", top=8,
                           fix=self.data / "masks_audited", progress=False,
                           workers=1 if self.p.train_images < 40 else 2)
        flagged = wrong = hit = fixed_wrong = 0
        for stem in self.stems(self.data / "masks"):
            noisy = read_mask(self.data / "masks" / f"{stem}.png")
            clean = read_mask(self.data / "masks_clean" / f"{stem}.png")
            issues_file = self.path("audit", "issues", f"{stem}.png")
            issues = (read_mask(issues_file) > 0) if issues_file.is_file() else noisy < 0
            bad = noisy != clean
            flagged += int(issues.sum())
            wrong += int(bad.sum())
            hit += int((issues & bad).sum())
            fixed = self.data / "masks_audited" / f"{stem}.png"
            fixed_wrong += int((read_mask(fixed) != clean).sum()) if fixed.is_file() \
                else int(bad.sum())
        precision = hit / flagged if flagged else float("nan")
        recall = hit / wrong if wrong else float("nan")
        self.log(f"    {rep.images} masks audited: {rep.issues} pixels flagged; against the "
                 f"clean truth {100 * precision:.0f}% of them are wrong (precision), covering "
                 f"{100 * recall:.0f}% of the wrong pixels (recall); the fixed masks have "
                 f"{fixed_wrong} wrong pixels (the annotations {wrong})")
        self._audit_picture(rep.rows[:3])
        return {"images": rep.images, "flagged": rep.issues, "precision": precision,
                "recall": recall, "fixed_pixels": rep.fixed, "wrong_annotated": wrong,
                "wrong_fixed": fixed_wrong, "worst": [r["stem"] for r in rep.rows[:5]]}

    def _audit_picture(self, rows) -> None:
        from ..viz import colorize, panel

        tiles, titles = [], []
        for row in rows:
            stem = row["stem"]
            issues = self.path("audit", "issues", f"{stem}.png")
            if not issues.is_file():
                continue
            flag = np.repeat((read_mask(issues) > 0)[..., None] * 255, 3, -1).astype(np.uint8)
            tiles += [self.image("images", stem),
                      colorize(read_mask(self.data / "masks" / f"{stem}.png")), flag,
                      colorize(read_mask(self.data / "masks_clean" / f"{stem}.png"))]
            titles += [stem, "annotation", "flagged", "truth"]
        if tiles:
            panel(tiles, titles, self.path("audit_worst.png"),
                  scale=max(1, 192 // self.p.size))

    # ---- ensemble --------------------------------------------------------------------------
    def stage_ensemble(self) -> dict:
        stores = [self.path("stores", run_name("resampled", s)) for s in range(self.p.seeds)]
        equal = [1.0 / len(stores)] * len(stores)
        imgs = self.data / "test_images"
        sub_size = max(8, self.p.size // 2)  # the competition halves 512 to 256
        segkit.ensemble(stores, equal, self.path("ensemble"), progress=False)
        segkit.ensemble(stores, equal, self.path("ensemble_crf"), crf="convcrf", images=imgs,
                        progress=False)
        segkit.ensemble(stores, equal, self.path("ensemble_recipe"), crf="seed", images=imgs,
                        progress=False)
        segkit.ensemble(stores, None, self.path("ensemble_tuned"),
                        tuned=self.path("tuned", "tuned.json"), images=imgs,
                        submission=self.path("submission.csv"),
                        sample=self.data / "sample_submission.csv", size=sub_size,
                        progress=False)
        from ..io.submission import read_submission

        rows = read_submission(self.path("submission.csv"), size=sub_size)
        self.log(f"    equal soft vote -> ensemble/; + ConvCRF (preset convcrf) -> ensemble_crf/;"
                 f" the recipe (equal weights + the seed CRF) -> ensemble_recipe/; --tuned -> "
                 f"ensemble_tuned/ and submission.csv ({len(rows)} rows of {sub_size}x{sub_size})")
        self._crf_picture()
        return {"images": len(self.stems(self.path("ensemble", "labels"))),
                "submission_rows": len(rows)}

    def _crf_picture(self) -> None:
        from ..viz import colorize, panel

        tiles, titles = [], []
        for stem in self.stems(self.path("ensemble", "labels"))[:2]:
            truth = read_mask(self.data / "test_masks" / f"{stem}.png")
            vote = read_mask(self.path("ensemble", "labels", f"{stem}.png"))
            crf = read_mask(self.path("ensemble_crf", "labels", f"{stem}.png"))
            tiles += [self.image("test_images", stem), colorize(vote), colorize(crf),
                      colorize(truth)]
            acc = [f"{100 * (m == truth).mean():.1f}%" for m in (vote, crf)]
            titles += [stem, f"vote ({acc[0]})", f"vote + CRF ({acc[1]})", "truth"]
        panel(tiles, titles, self.path("crf_before_after.png"),
              scale=max(1, 192 // self.p.size))

    # ---- evaluate ------------------------------------------------------------------------
    def stage_evaluate(self) -> dict:
        gt = self.data / "test_masks"
        stems = self.stems(gt)
        seeds = range(self.p.seeds)

        def score(pred: Path) -> dict:
            cms = per_image_confusions(pred, gt, stems)
            sc = iou_scores(cms.sum(0))
            return {"miou": sc["miou"], "pixel_acc": sc["pixel_acc"],
                    "iou": [None if np.isnan(v) else float(v) for v in sc["iou"]],
                    "boot_sd": bootstrap_sd(cms, seed=self.seed)}

        ablation = {v: {s: score(self.path("stores", run_name(v, s))) for s in seeds}
                    for v in self.p.variants}
        steps = {f"model seed {s}": ablation["resampled"][s] for s in seeds}
        for name, folder in (("equal soft vote", "ensemble"), ("vote + CRF", "ensemble_crf"),
                             ("recipe", "ensemble_recipe"), ("tuned", "ensemble_tuned")):
            steps[name] = score(self.path(folder, "labels"))
        self.log(f"    {'test mIoU':24s}" + "".join(f"{n:>17s}" for n in steps))
        self.log(f"    {'':24s}" + "".join(f"{r['miou']:17.3f}" for r in steps.values()))
        for v, per_seed in ablation.items():
            vals = [r["miou"] for r in per_seed.values()]
            self.log(f"    trained on {v:10s} masks: test mIoU " + ", ".join(
                f"{x:.3f}" for x in vals) + f" (seeds {', '.join(map(str, seeds))})")
        from ..viz import bar_chart

        means = {v: np.nanmean([[np.nan if x is None else x for x in r["iou"]]
                                for r in per_seed.values()], 0)
                 for v, per_seed in ablation.items()}
        bar_chart({f"trained on {v} masks": m for v, m in means.items()}, list(TRASH_CLASSES),
                  "per-class test IoU (mean over seeds)", self.path("iou.png"), width=760)
        return {"steps": steps, "ablation": {v: {str(s): r for s, r in d.items()}
                                             for v, d in ablation.items()}}
