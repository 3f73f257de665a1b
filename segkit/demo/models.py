"""The demo's part of the recipe's model stages: the runs under the demo's names (for the
curves and the ablation), and the one model with a trainable ConvCRF layer (not a recipe
model: one fold and one seed, compared with the plain model of the same fold and seed)."""
from __future__ import annotations

import warnings

from .presets import RECIPE_VARIANT, VARIANT_MASKS


def run_name(variant: str, seed: int, fold: int | None = None) -> str:
    """The demo's name of a run: ``<variant>_s<seed>[_fold<k>]`` (variant as the demo calls
    it: original, resampled, audited)."""
    return f"{variant}_s{seed}" + ("" if fold is None else f"_fold{fold}")


class ModelStages:
    """Mixin of the Demo."""

    def _collect_runs(self, ctx, result: dict, variants) -> dict:
        """The recipe's trainings of `variants` under the demo's run names."""
        runs = self.results.setdefault("runs", {})
        recipe_runs = result.get("runs", {})
        for variant in variants:
            for s in range(self.p.seeds):
                for fold in range(self.p.folds):
                    r = recipe_runs[self.run_name(variant, s, fold)]
                    curve = [tuple(point) for point in r["curve"]]
                    runs[run_name(variant, s, fold)] = {
                        "checkpoint": r["checkpoint"], "curve": curve,
                        "val_mIoU": curve[-1][1] if curve else float("nan"),
                        "seconds": r["seconds"], "recipe_run": self.run_name(variant, s, fold)}
                    self.log(f"    {run_name(variant, s, fold)}: {self.p.epochs} epochs on "
                             f"data/{VARIANT_MASKS[variant]}, validation mIoU (clean truth) "
                             f"{runs[run_name(variant, s, fold)]['val_mIoU']:.3f} in "
                             f"{r['seconds']:.0f} s")
        return {k: {"val_mIoU": v["val_mIoU"], "seconds": v["seconds"]} for k, v in runs.items()
                if k.split("_s")[0] in variants}

    def stage_train(self, ctx, result: dict) -> dict:
        res = self._collect_runs(ctx, result, [v for v in self.p.variants if v != "audited"])
        self.results["crf_layer"] = self._train_crf_layer(ctx)
        return res

    def stage_retrain(self, ctx, result: dict) -> dict:
        return self._collect_runs(ctx, result, ["audited"])

    def stage_oof(self, ctx, result: dict) -> dict:
        return {**result, "stores": [f"stores/{self.run_name('resampled', s, f)}"
                                     for s in range(self.p.seeds) for f in range(self.p.folds)]}

    # ---- the CRF layer trained end to end --------------------------------------------------
    def _crf_task(self, ctx, variant: str):
        from ..recipe.trainings import TrainTask
        from ..io.atomic import write_text
        from .base import model_config

        config = self.path("configs", "demo_crf.py")
        write_text(config, model_config(self.p, crf=True))
        work = run_name("crf_layer", 0, 0)
        return TrainTask(name=work, config=str(config), work_dir=str(self.path("work", work)),
                         data_root=str(self.data), fold=0,
                         train_masks=VARIANT_MASKS[variant], val_masks="masks_val",
                         classes_file=str(ctx.classes_file), seed=0, epochs=self.p.epochs,
                         cfg_options=(("train_dataloader.batch_size", 8),))

    def _train_crf_layer(self, ctx) -> dict:
        """One fold model (fold 0, seed 0, resampled masks) of the CRF variant of the demo's
        config, trained by the recipe's trainings code, against the plain model of the same
        fold, seed and schedule that the recipe trained (reused, not trained again)."""
        from ..recipe.trainings import train_task

        variant = "resampled" if "resampled" in self.p.variants else self.p.variants[0]
        plain = self.results["runs"][run_name(variant, 0, 0)]
        task = self._crf_task(ctx, variant)
        r = train_task(task, progress=True)  # a bar, as the recipe's trainings show
        curve = [tuple(point) for point in r["curve"]]
        crf = {"checkpoint": r["checkpoint"], "curve": curve, "seconds": r["seconds"],
               "val_mIoU": curve[-1][1] if curve else float("nan")}
        from ..mmseg.checkpoint import load

        state = load(crf["checkpoint"])["state_dict"]
        learned = {k[len("crf."):]: v.tolist() for k, v in state.items()
                   if k.startswith("crf.")}
        crf["unary_val_mIoU"] = self._validate_unary(task, crf["checkpoint"])
        self.log(f"    {task.name}: {self.p.epochs} epochs on data/{VARIANT_MASKS[variant]} "
                 f"with configs/{self.p.crf_config}, validation mIoU (clean truth) "
                 f"{crf['val_mIoU']:.3f} (its decode head alone {crf['unary_val_mIoU']:.3f}) "
                 f"in {crf['seconds']:.0f} s; the same model without the CRF layer "
                 f"({run_name(variant, 0, 0)}): {plain['val_mIoU']:.3f} in "
                 f"{plain['seconds']:.0f} s")
        return {"variant": variant, "fold": 0, "seed": 0, "config": self.p.crf_config,
                "plain": {"run": run_name(variant, 0, 0), "val_mIoU": plain["val_mIoU"],
                          "seconds": plain["seconds"], "curve": plain["curve"]},
                "crf": {"run": task.name, **crf}, "learned": learned}

    def _validate_unary(self, task, checkpoint: str) -> float:
        """Validation mIoU (clean truth) of a CRF model's decode head alone (crf_test=False):
        what end-to-end training did to the unary."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from mmengine.config import Config
            from mmengine.runner import Runner

            from ..mmseg.runner import load_config
            from ..recipe.trainings import task_options
        from .base import quiet_mmseg

        with quiet_mmseg(self.path("work", f"{task.name}.out")):
            opts = task_options(task, Config.fromfile(task.config))
            opts.update({"load_from": checkpoint, "model.crf_test": False,
                         "default_hooks.checkpoint.save_best": None, "log_level": "ERROR"})
            cfg = load_config(task.config, fold=0, data_root=task.data_root,
                              work_dir=task.work_dir + "_unary", cfg_options=opts)
            metrics = Runner.from_cfg(cfg).val()
        return float(metrics.get("mIoU", float("nan"))) / 100


__all__ = ["ModelStages", "RECIPE_VARIANT", "run_name"]
