"""The demo's part of the recipe's analysis stages: tune's figures, the audit against the
clean truth, the original recipe's ensemble (equal weights + the seed CRF) beside the recipe's
three, and the step table and the ablation on the held-out test split."""
from __future__ import annotations

import json

import numpy as np

import segkit

from ..io.masks import read_mask
from ..palette import TRASH_CLASSES
from .presets import RECIPE_VARIANT

C = len(TRASH_CLASSES)
#: the demo's step table: its row -> the recipe's evaluate step (None: the demo's own)
STEP_ROWS = {"equal soft vote": "equal soft vote", "vote + CRF": "vote + CRF",
             "recipe": None, "tuned": "tuned"}


class AnalysisStages:
    """Mixin of the Demo."""

    # ---- tune ----------------------------------------------------------------------------
    def stage_tune(self, ctx, result: dict) -> dict:
        """tune's figures as the index shows them, from tuned/tuned.json."""
        tuned = json.loads(self.path("tuned", "tuned.json").read_text())
        metrics, fit = tuned.get("metrics") or {}, tuned.get("crf_fit") or {}
        return {"weights": tuned["weights"], "bias": tuned["bias"], "crf": tuned["crf"],
                "crf_name": tuned.get("crf_name"), "holdout": metrics.get("holdout", {}),
                "crf_candidates": {k: v["miou"] for k, v in
                                   (metrics.get("crf_candidates") or {}).items()},
                "crf_fit": {"learned": fit.get("learned"), "steps": len(fit.get("loss", [])),
                            "loss_first": (fit.get("loss") or [None])[0],
                            "loss_last": (fit.get("loss") or [None])[-1],
                            "seconds": fit.get("seconds")},
                "holdout_images": metrics.get("holdout_images"),
                "seconds": result.get("seconds"), "table": result.get("table")}

    # ---- audit ---------------------------------------------------------------------------
    def stage_audit(self, ctx, result: dict) -> dict:
        """The audit's flags and fixed masks against the clean truth the generator kept."""
        flagged = wrong = hit = fixed_wrong = 0
        for stem in self.stems(self.data / "masks"):
            noisy = read_mask(self.data / "masks" / f"{stem}.png")
            clean = read_mask(self.scenes / "masks_clean" / f"{stem}.png")
            issues_file = self.path("audit", "issues", f"{stem}.png")
            issues = (read_mask(issues_file) > 0) if issues_file.is_file() else noisy < 0
            bad = noisy != clean
            flagged += int(issues.sum())
            wrong += int(bad.sum())
            hit += int((issues & bad).sum())
            fixed = self.data / "masks_fixed" / f"{stem}.png"
            fixed_wrong += int((read_mask(fixed) != clean).sum()) if fixed.is_file() \
                else int(bad.sum())
        precision = hit / flagged if flagged else float("nan")
        recall = hit / wrong if wrong else float("nan")
        self.log(f"    against the clean truth {100 * precision:.0f}% of the flagged pixels are "
                 f"wrong (precision), covering {100 * recall:.0f}% of the wrong pixels "
                 f"(recall); the fixed masks have {fixed_wrong} wrong pixels (the annotations "
                 f"{wrong})")
        self._audit_picture(result.get("worst", [])[:3])
        return {**result, "precision": precision, "recall": recall,
                "wrong_annotated": wrong, "wrong_fixed": fixed_wrong}

    def _audit_picture(self, stems) -> None:
        from ..viz import colorize, panel

        tiles, titles = [], []
        for stem in stems:
            issues = self.path("audit", "issues", f"{stem}.png")
            if not issues.is_file():
                continue
            flag = np.repeat((read_mask(issues) > 0)[..., None] * 255, 3, -1).astype(np.uint8)
            tiles += [self.image("images", stem),
                      colorize(read_mask(self.data / "masks" / f"{stem}.png")), flag,
                      colorize(read_mask(self.scenes / "masks_clean" / f"{stem}.png"))]
            titles += [stem, "annotation", "flagged", "truth"]
        if tiles:
            panel(tiles, titles, self.path("audit_worst.png"),
                  scale=max(1, 192 // self.p.size))

    # ---- ensembles -----------------------------------------------------------------------
    def stage_ensembles(self, ctx, result: dict) -> dict:
        """The original recipe's setting beside the recipe's ensembles: equal weights and the
        'seed' CRF (ConvCRF's preset on probabilities passed as logits)."""
        stores = [str(s) for s in ctx.test_stores()]
        equal = [1.0 / len(stores)] * len(stores)
        segkit.ensemble(stores, equal, self.path("ensembles", "recipe"), crf="seed",
                        images=self.data / "test_images", progress=False, resume=False)
        self.log("    the original recipe's setting (equal weights + the seed CRF) -> "
                 "ensembles/recipe/")
        self._crf_picture()
        return {**result, "images": len(self.stems(self.path("ensembles", "vote", "labels")))}

    def _crf_picture(self) -> None:
        from ..viz import colorize, panel

        tiles, titles = [], []
        for stem in self.stems(self.path("ensembles", "vote", "labels"))[:2]:
            truth = read_mask(self.data / "test_masks" / f"{stem}.png")
            vote = read_mask(self.path("ensembles", "vote", "labels", f"{stem}.png"))
            crf = read_mask(self.path("ensembles", "vote_crf", "labels", f"{stem}.png"))
            tiles += [self.image("test_images", stem), colorize(vote), colorize(crf),
                      colorize(truth)]
            acc = [f"{100 * (m == truth).mean():.1f}%" for m in (vote, crf)]
            titles += [stem, f"vote ({acc[0]})", f"vote + CRF ({acc[1]})", "truth"]
        panel(tiles, titles, self.path("crf_before_after.png"),
              scale=max(1, 192 // self.p.size))

    def stage_submission(self, ctx, result: dict) -> dict:
        self.log("    (in the order of scenes/sample_submission.csv)")
        return {**result, "submission_rows": result.get("rows")}

    # ---- evaluate ------------------------------------------------------------------------
    def stage_evaluate(self, ctx, result: dict) -> dict:
        """The demo's step table (the recipe's rows and the original recipe's setting) and
        the ablation under the demo's variant names."""
        from ..recipe.stages_analysis import score

        stems = self.stems(self.data / "test_masks")
        seeds = range(self.p.seeds)
        rsteps = result["steps"]
        from .base import MODEL

        steps = {f"model seed {s}": rsteps[f"{MODEL} seed {s}"] for s in seeds}
        for row, key in STEP_ROWS.items():
            steps[row] = rsteps[key] if key else \
                score(ctx, self.path("ensembles", "recipe", "labels"), stems)
        by_recipe = {v: k for k, v in RECIPE_VARIANT.items()}
        ablation = {by_recipe[v]: per_seed for v, per_seed in result["ablation"].items()}
        ablation = {v: ablation[v] for v in self.p.variants}
        self.log(f"    {'test mIoU':24s}" + "".join(f"{n:>17s}" for n in steps))
        self.log(f"    {'':24s}" + "".join(f"{r['miou']:17.3f}" for r in steps.values()))
        for v, per_seed in ablation.items():
            vals = [per_seed[str(s)]["miou"] for s in seeds]
            self.log(f"    trained on {v:10s} masks: test mIoU " + ", ".join(
                f"{x:.3f}" for x in vals) + f" (seeds {', '.join(map(str, seeds))})")
        from ..viz import bar_chart

        means = {v: np.nanmean([[np.nan if x is None else x for x in r["iou"]]
                                for r in per_seed.values()], 0)
                 for v, per_seed in ablation.items()}
        bar_chart({f"trained on {v} masks": m for v, m in means.items()}, list(TRASH_CLASSES),
                  "per-class test IoU (mean over seeds)", self.path("iou.png"), width=760)
        return {"steps": steps, "ablation": ablation}
