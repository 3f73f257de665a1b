"""The demo's model stages: train the ablation's fold models, infer OOF and test stores,
retrain on the audit's fixed masks."""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

import segkit

from .presets import VARIANT_MASKS


def run_name(variant: str, seed: int, fold: int | None = None) -> str:
    return f"{variant}_s{seed}" + ("" if fold is None else f"_fold{fold}")


class ModelStages:
    """Mixin of the Demo: every fold model of every (variant, seed), trained with mmengine's
    Runner on the variant's masks, validated against the clean truth along training."""

    def _train_one(self, variant: str, s: int, fold: int, config: Path | None = None,
                   work: str | None = None) -> dict:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from .. import mmseg as smm
        from .base import DemoError, quiet_mmseg

        p = self.p
        work = work or run_name(variant, s, fold)
        interval = max(1, p.epochs // max(1, p.val_points))
        opts = {"train_cfg.max_epochs": p.epochs,
                "param_scheduler.1.end": p.epochs,
                "param_scheduler.1.T_max": p.epochs,
                "train_cfg.val_interval": interval,
                "randomness.seed": self.seed + 100 * s + fold,
                "train_dataloader.dataset.data_prefix.seg_map_path": VARIANT_MASKS[variant],
                # the curves: mIoU against the clean truth the generator kept
                "val_dataloader.dataset.data_prefix.seg_map_path": "masks_clean",
                # the last weights are used (no model selection on the clean truth): one
                # checkpoint at the end
                "default_hooks.checkpoint.interval": p.epochs,
                "default_hooks.checkpoint.save_best": None,
                "log_level": "ERROR",
                "custom_hooks": [dict(type="ProgressBarHook", desc=f"    {work}")]}
        if p.gpu:
            opts["train_dataloader.num_workers"] = 4
        t0 = time.perf_counter()
        with quiet_mmseg(self.path("work", f"{work}.out")):
            res = smm.train(str(config or p.config_path), work_dir=str(self.path("work", work)),
                            fold=fold, data_root=str(self.data), cfg_options=opts,
                            pretrained="none")
        if res.last_checkpoint is None:
            raise DemoError(f"training {work} left no checkpoint in {res.work_dir}")
        curve = [(interval * (i + 1), h.get("mIoU", float("nan")) / 100)
                 for i, h in enumerate(res.history)]
        return {"checkpoint": str(res.last_checkpoint), "curve": curve,
                "val_mIoU": curve[-1][1] if curve else float("nan"),
                "seconds": round(time.perf_counter() - t0, 2)}

    def _train_variants(self, variants) -> dict:
        runs = self.results.setdefault("runs", {})
        for variant in variants:
            for s in range(self.p.seeds):
                for fold in range(self.p.folds):
                    r = self._train_one(variant, s, fold)
                    runs[run_name(variant, s, fold)] = r
                    self.log(f"    {run_name(variant, s, fold)}: {self.p.epochs} epochs on "
                             f"data/{VARIANT_MASKS[variant]}, validation mIoU (clean truth) "
                             f"{r['val_mIoU']:.3f} in {r['seconds']:.0f} s")
        return {k: {"val_mIoU": v["val_mIoU"], "seconds": v["seconds"]} for k, v in runs.items()
                if k.split("_s")[0] in variants}

    def stage_train(self) -> dict:
        res = self._train_variants([v for v in self.p.variants if v != "audited"])
        self.results["crf_layer"] = self._train_crf_layer()
        return res

    # ---- the CRF layer trained end to end --------------------------------------------------
    def _train_crf_layer(self) -> dict:
        """One fold model (fold 0, seed 0, resampled masks) of the CRF variant of the demo's
        config, against the plain model of the same fold, seed and schedule that the ablation
        trained (reused, not trained again)."""
        variant = "resampled" if "resampled" in self.p.variants else self.p.variants[0]
        plain = self.results["runs"][run_name(variant, 0, 0)]
        work = run_name("crf_layer", 0, 0)
        crf = self._train_one(variant, 0, 0, config=self.p.crf_config_path, work=work)
        from ..mmseg.checkpoint import load

        state = load(crf["checkpoint"])["state_dict"]
        learned = {k[len("crf."):]: v.tolist() for k, v in state.items()
                   if k.startswith("crf.")}
        crf["unary_val_mIoU"] = self._validate_unary(crf["checkpoint"], 0, work)
        self.log(f"    {work}: {self.p.epochs} epochs on data/{VARIANT_MASKS[variant]} with "
                 f"configs/{self.p.crf_config}, validation mIoU (clean truth) "
                 f"{crf['val_mIoU']:.3f} (its decode head alone {crf['unary_val_mIoU']:.3f}) in "
                 f"{crf['seconds']:.0f} s; the same model without the "
                 f"CRF layer ({run_name(variant, 0, 0)}): {plain['val_mIoU']:.3f} in "
                 f"{plain['seconds']:.0f} s")
        return {"variant": variant, "fold": 0, "seed": 0, "config": self.p.crf_config,
                "plain": {"run": run_name(variant, 0, 0), "val_mIoU": plain["val_mIoU"],
                          "seconds": plain["seconds"], "curve": plain["curve"]},
                "crf": {"run": work, "val_mIoU": crf["val_mIoU"], "seconds": crf["seconds"],
                        "curve": crf["curve"], "checkpoint": crf["checkpoint"],
                        "unary_val_mIoU": crf["unary_val_mIoU"]},
                "learned": learned}

    def _validate_unary(self, checkpoint: str, fold: int, work: str) -> float:
        """Validation mIoU (clean truth) of a CRF model's decode head alone (crf_test=False):
        what end-to-end training did to the unary."""
        from mmengine.runner import Runner

        from ..mmseg.runner import load_config
        from .base import quiet_mmseg

        with quiet_mmseg(self.path("work", f"{work}.out")):
            cfg = load_config(str(self.p.crf_config_path), fold=fold, data_root=str(self.data),
                              work_dir=str(self.path("work", work + "_unary")), cfg_options={
                                  "load_from": checkpoint, "model.crf_test": False,
                                  "val_dataloader.dataset.data_prefix.seg_map_path":
                                      "masks_clean",
                                  "default_hooks.checkpoint.save_best": None,
                                  "log_level": "ERROR"})
            metrics = Runner.from_cfg(cfg).val()
        return float(metrics.get("mIoU", float("nan"))) / 100

    # ---- inference -----------------------------------------------------------------------
    def _infer_variant(self, variant: str, oof: bool) -> None:
        from .. import mmseg as smm
        from .base import quiet_mmseg

        runs = self.results["runs"]
        for s in range(self.p.seeds):
            tests = []
            for fold in range(self.p.folds):
                name = run_name(variant, s, fold)
                kw = dict(tta=self.p.tta, workers=0, progress=False, model_name=name,
                          batch_size=8)
                with quiet_mmseg(self.path("work", f"{name}.out")):
                    if oof:
                        smm.infer(str(self.p.config_path), runs[name]["checkpoint"],
                                  self.data / "images", self.path("stores", name), **kw,
                                  split=self.data / "splits" / f"fold{fold}" / "val.txt")
                    smm.infer(str(self.p.config_path), runs[name]["checkpoint"],
                              self.data / "test_images", self.path("stores", f"{name}_test"),
                              **kw)
                tests.append(self.path("stores", f"{name}_test"))
            self._mean_store(run_name(variant, s), tests)

    def _mean_store(self, name: str, roots: list[Path]) -> None:
        parts = [segkit.ConfidenceStore(r) for r in roots]
        out = segkit.ConfidenceStore.create(self.path("stores", name), parts[0].classes,
                                            model=f"{name} (mean of its fold models)")
        for stem in parts[0].stems():
            mean = sum(p.read(stem).astype(np.float32) for p in parts) / len(parts)
            out.write(stem, mean)

    def stage_infer(self) -> dict:
        for variant in self.p.variants:
            if variant != "audited":
                self._infer_variant(variant, oof=variant == "resampled")
        views = "flip TTA (2 views)" if self.p.tta else "no TTA"
        self.log(f"    {views}: each resampled-mask fold model on its own validation fold "
                 f"(OOF: stores/resampled_s<seed>_fold<k>) and every fold model on the "
                 f"{self.p.test_images} test images; stores/<variant>_s<seed>: the mean of a "
                 "seed's fold models on the test images")
        return {"models": [run_name(v, s) for v in self.p.variants if v != "audited"
                           for s in range(self.p.seeds)]}

    def oof_specs(self) -> list[str]:
        """One entry per ensemble member (a seed of the resampled-mask models): its fold
        stores joined by commas."""
        return [",".join(str(self.path("stores", run_name("resampled", s, f)))
                         for f in range(self.p.folds)) for s in range(self.p.seeds)]

    # ---- retrain on the audit's fixed masks ----------------------------------------------
    def stage_retrain(self) -> dict:
        if "audited" not in self.p.variants:
            self.log("    (this preset trains no model on the audited masks)")
            return {}
        res = self._train_variants(["audited"])
        self._infer_variant("audited", oof=False)
        return res
