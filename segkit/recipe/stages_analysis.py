"""The analysis stages: tune, audit, ensembles, submission, evaluate."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import segkit

from ..io.masks import read_mask, write_mask
from ..jobs.settings import EnsembleSetting
from ..ops.confusion import iou_scores
from ..palette import palette_for
from .dataset import mask_files
from .report import unlearned_classes
from .stage import INTERNAL_IGNORE, Context, Stage, settings_of, store_inputs


def _listed(values) -> list:
    return [None if v is None or not np.isfinite(v) else float(v) for v in values]


class Tune(Stage):
    name = "tune"
    after = ("oof",)

    def reads(self, ctx: Context) -> dict:
        return settings_of(ctx.recipe, "tune", "stores")

    def inputs(self, ctx: Context) -> dict:
        return store_inputs(ctx)

    def made(self, ctx: Context) -> list[str]:
        return ["tuned/tuned.json"]

    def run(self, ctx: Context) -> dict:
        t = ctx.recipe.tune
        n = len(ctx.oof_specs())
        search = [s for s in t.search if not (s == "weights" and n < 2)]
        res = segkit.tune(ctx.oof_specs(), ctx.data / "masks", ctx.path("tuned"),
                          images=ctx.data / "images", search=search or ["bias"],
                          budget=t.budget, holdout=t.holdout, seed=ctx.recipe.folds.seed,
                          ignore_index=INTERNAL_IGNORE, crf_images=t.crf_images,
                          crf_crop=t.crf_crop, crf_steps=t.crf_steps, workers=ctx.workers,
                          progress=ctx.progress, log=lambda line: ctx.log("    " + line))
        hold = res.metrics.get("holdout", {})
        table = [{"setting": k, "holdout_miou": float(v) if not isinstance(v, dict) else
                  float(v.get("miou", float("nan"))), "test_miou": None}
                 for k, v in hold.items() if isinstance(v, (int, float, dict))]
        members = [f"{m} {v} seed {s}" for m, v, s in ctx.members()]
        members += [st.name for st in ctx.recipe.stores]
        return {"models": members, "weights": list(res.weights), "bias": res.bias,
                "crf_name": res.crf_name,
                "table": table, "seconds": res.seconds}


class Audit(Stage):
    name = "audit"
    after = ("oof",)

    def active(self, ctx: Context) -> str | None:
        return None if ctx.recipe.audit.enabled else "audit.enabled = false"

    def reads(self, ctx: Context) -> dict:
        return settings_of(ctx.recipe, "audit", "stores")

    def inputs(self, ctx: Context) -> dict:
        return store_inputs(ctx)

    def made(self, ctx: Context) -> list[str]:
        return ["audit", "data/masks_fixed"]

    def run(self, ctx: Context) -> dict:
        a = ctx.recipe.audit
        rep = segkit.audit(ctx.oof_specs(), ctx.data / "masks", ctx.path("audit"),
                           images=ctx.data / "images", top=a.top, fix=ctx.data / "masks_fixed",
                           min_region=a.min_region, ignore_index=INTERNAL_IGNORE, workers=ctx.workers,
                           progress=ctx.progress)
        by_class = np.zeros(ctx.num_classes, np.int64)
        issues = ctx.path("audit", "issues")
        for stem, path in (mask_files(issues, "audit issues").items()
                           if issues.is_dir() and any(issues.glob("*.png")) else ()):
            flags = read_mask(path) > 0
            gt = read_mask(ctx.data / "masks" / f"{stem}.png")
            by_class += np.bincount(gt[flags].astype(np.int64),
                                    minlength=256)[:ctx.num_classes]
        oof_iou = ctx.results.get("oof", {}).get("score", {}).get("iou")
        unlearned = unlearned_classes(oof_iou, ctx.classes) if oof_iou else []
        ctx.log(f"    {rep.issues} pixels flagged in {rep.images} masks"
                + (f"; classes the models did not learn (their flags measure the models): "
                   f"{', '.join(unlearned)}" if unlearned else ""))
        export_fixed(ctx)
        return {"images": rep.images, "flagged": rep.issues,
                "flagged_share": rep.issues / rep.pixels if rep.pixels else 0.0,
                "flagged_by_class": by_class.tolist(), "unlearned_classes": unlearned,
                "worst": [r["stem"] for r in rep.rows[:5]], "page": "audit/index.html",
                "fixed_pixels": rep.fixed}


def export_fixed(ctx: Context) -> None:
    """The fixed masks with the user's void value (``fixed_masks/``), when it is not 255."""
    ignore = ctx.recipe.dataset.ignore_index
    src = ctx.data / "masks_fixed"
    if not src.is_dir():
        return
    dst = ctx.path("fixed_masks")
    for stem, path in mask_files(src, "fixed masks").items():
        labels = read_mask(path)
        if ignore != INTERNAL_IGNORE:
            labels = np.where(labels == INTERNAL_IGNORE, ignore, labels).astype(labels.dtype)
        write_mask(dst / f"{stem}.png", labels, palette_for(ctx.num_classes))


#: the ensembles: folder under ensembles/ -> what the report calls it
STEPS = {"vote": "equal soft vote", "vote_crf": "vote + CRF", "tuned": "tuned"}


class Ensembles(Stage):
    name = "ensembles"
    after = ("test", "tune")

    def active(self, ctx: Context) -> str | None:
        return None if ctx.has_test else "no dataset.test_images"

    def reads(self, ctx: Context) -> dict:
        return settings_of(ctx.recipe, "crf", "stores")

    def inputs(self, ctx: Context) -> dict:
        return store_inputs(ctx, test=True)

    def made(self, ctx: Context) -> list[str]:
        return [f"ensembles/{k}/labels" for k in STEPS]

    def run(self, ctx: Context) -> dict:
        stores = [str(s) for s in ctx.test_stores()]
        equal = [1.0] * len(stores)
        imgs = ctx.data / "test_images"
        kw = dict(progress=ctx.progress, workers=ctx.workers, resume=False)  # the stage reruns: recompute
        segkit.ensemble(stores, equal, ctx.path("ensembles", "vote"), **kw)
        crf = EnsembleSetting.preset("convcrf", weights=equal, **{
            k: getattr(ctx.recipe.crf, k) for k in ("filter_size", "blur", "num_iter",
                                                    "pos_sdims", "col_schan", "pos_compat",
                                                    "col_compat")})
        segkit.ensemble(stores, None, ctx.path("ensembles", "vote_crf"), images=imgs,
                        tuned={**crf.to_dict(), "classes": ctx.classes}, **kw)
        segkit.ensemble(stores, None, ctx.path("ensembles", "tuned"), images=imgs,
                        tuned=ctx.path("tuned", "tuned.json"), **kw)
        ctx.log(f"    {len(stores)} test store(s): " + ", ".join(
            f"{v} -> ensembles/{k}/" for k, v in STEPS.items()))
        from .pictures import crf_picture

        picture = "pictures/crf.png"
        made = crf_picture(ctx.folder, ctx.path(picture), ctx.num_classes, ctx.has_test_masks)
        return {"steps": dict(STEPS), "picture": picture if made else None}


class Submission(Stage):
    name = "submission"
    after = ("ensembles",)

    def active(self, ctx: Context) -> str | None:
        return None if ctx.has_test else "no dataset.test_images"

    def reads(self, ctx: Context) -> dict:
        return settings_of(ctx.recipe, "submission")

    def inputs(self, ctx: Context) -> dict:
        from .state import identity

        return {"sample": identity(ctx.user(ctx.recipe.submission.sample))}

    def made(self, ctx: Context) -> list[str]:
        return ["submission.csv"]

    def run(self, ctx: Context) -> dict:
        from ..jobs.ensemble import write_ensemble_submission

        s = ctx.recipe.submission
        labels = ctx.path("ensembles", "tuned")
        stems = sorted(p.stem for p in (labels / "labels").glob("*.png"))
        path = write_ensemble_submission(labels, ctx.path("submission.csv"),
                                         ctx.user(s.sample), stems, size=s.size,
                                         downsample=s.downsample, progress=False)
        rows = len(segkit.read_submission(path, size=s.size))
        ctx.log(f"    {path.name}: {rows} rows of {s.size}x{s.size} label maps")
        return {"path": "submission.csv", "rows": rows, "size": s.size}


def per_image_confusions(ctx: Context, pred: Path, stems: list[str]) -> np.ndarray:
    c = ctx.num_classes
    store = segkit.ConfidenceStore(pred) if (pred / "meta.json").is_file() else None
    out = np.zeros((len(stems), c, c), np.int64)
    for i, stem in enumerate(stems):
        truth = read_mask(ctx.data / "test_masks" / f"{stem}.png").astype(np.int64)
        labels = (store.read(stem).argmax(0) if store is not None
                  else read_mask(pred / f"{stem}.png")).astype(np.int64)
        keep = truth < c
        out[i] = np.bincount(truth[keep] * c + labels[keep], minlength=c * c).reshape(c, c)
    return out


def score(ctx: Context, pred: Path, stems: list[str], draws: int = 200) -> dict:
    """Test mIoU, pixel accuracy, per-class IoU and the bootstrap spread over images."""
    cms = per_image_confusions(ctx, pred, stems)
    sc = iou_scores(cms.sum(0))
    rng = np.random.default_rng(0)
    boot = [iou_scores(cms[rng.integers(0, len(stems), len(stems))].sum(0))["miou"]
            for _ in range(draws)]
    return {"miou": float(sc["miou"]), "pixel_acc": float(sc["pixel_acc"]),
            "iou": _listed(sc["iou"]), "boot_sd": float(np.std(boot))}


class Evaluate(Stage):
    name = "evaluate"
    after = ("masks", "ensembles", "test", "retrain")

    def active(self, ctx: Context) -> str | None:
        return None if ctx.has_test_masks else "no dataset.test_masks"

    def reads(self, ctx: Context) -> dict:
        return settings_of(ctx.recipe, "stores")

    def run(self, ctx: Context) -> dict:
        from .stages_models import test_runs

        stems = sorted(mask_files(ctx.data / "test_masks", "test masks"))
        ablation: dict = {}
        steps: dict = {}
        for fixed in (False, True):
            for m, v, s in test_runs(ctx, fixed):
                if fixed and "fixed" not in ctx.recipe.train.variants:
                    continue
                r = score(ctx, ctx.path("stores", ctx.run_name(m, v, s) + "_test"), stems)
                ablation.setdefault(v, {})[str(s)] = {"miou": r["miou"], "iou": r["iou"]}
                if v == ctx.recipe.train.ensemble_variant:
                    steps[f"{m} seed {s}"] = r
        for st in ctx.recipe.stores:
            if st.test:
                steps[st.name] = score(ctx, ctx.user(st.test), stems)
        for folder, label in STEPS.items():
            steps[label] = score(ctx, ctx.path("ensembles", folder, "labels"), stems)
        ctx.log("    test mIoU: " + ", ".join(f"{k} {v['miou']:.3f}" for k, v in steps.items()))
        return {"steps": steps, "ablation": ablation}


def tune_table_with_test(tune: dict, steps: dict) -> list[dict]:
    """tune's held-out table with the test mIoU of the settings that were also applied."""
    names = {"tuned": "tuned", "equal": "equal soft vote"}
    return [{**row, "test_miou": steps.get(names.get(row["setting"], ""), {}).get("miou")}
            for row in tune.get("table", [])]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}
