"""The demo behind `make demo` / `segkit demo`: the recipe (`segkit recipe run`) on data it
generates itself (no downloads), with models that learn, and the recipe's claims measured
against the clean truth the generator kept.

1. data      trash-like scenes (each class its own colour and texture) whose COCO annotations
             trace the objects with a wobbly hand and miss some small ones, in scenes/; the
             clean truth kept (scenes/masks_clean); a held-out test split with its truth and a
             sample submission; and OUT/recipe.toml, the recipe for them (the demo's model,
             configs/demo.py; the variants original, resampled and fixed ("audited"))
2-13.        the recipe's stages through :func:`segkit.recipe.run_recipe`, the same code as
             `segkit recipe run OUT`: masks, resample, folds, train, oof, test, tune, audit,
             retrain, ensembles, submission, evaluate; after some of them the demo adds what
             only generated data allows or what only the demo shows (:mod:`.base`,
             :mod:`.models`, :mod:`.analysis`): the overlays and clean-truth class shares
             (masks), the mode-filter backends' agreement and the pixels resampling corrected
             (resample), the runs' curves against the clean truth and one fold model with a
             trainable ConvCRF layer (train), the audit's precision and recall against the
             clean truth (audit), the original recipe's ensemble, equal weights + the seed CRF
             (ensembles), the step table and the ablation (evaluate)
14. report   the recipe's report.json and report/index.html
15. index    OUT/index.md: every table, the curves and the pictures

Every stage prints an estimate and its timing; a failing stage stops the demo naming it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import segkit

from ..errors import InputError, UnavailableError
from .analysis import AnalysisStages
from .base import STAGES, DemoBase, DemoError, quiet_mmseg
from .models import ModelStages
from .presets import PRESETS, RECIPE_VARIANT, Preset
from .report import SECTIONS, curve_picture, write_index


class Demo(ModelStages, AnalysisStages, DemoBase):
    def stage_index(self) -> dict:
        curves: dict = {}
        for name, r in self.results["runs"].items():
            curves.setdefault(name.split("_s")[0], []).append(r["curve"])
        curve_picture(curves, self.path("curves.png"))
        return {"index": str(write_index(self))}


def check_gpu() -> None:
    """The gpu preset needs torch with a CUDA device; say so plainly when there is none."""
    try:
        import torch
    except ImportError as exc:
        raise UnavailableError("preset 'gpu' needs torch (pip install 'segkit[mmseg]')") from exc
    if not torch.cuda.is_available():
        raise UnavailableError(
            f"preset 'gpu' trains the Swin-B recipe at 512x512 and needs a CUDA GPU; this torch "
            f"({torch.__version__}) sees none. Run the default preset on a CPU (segkit demo), "
            "or install a CUDA build of torch on a GPU machine")


def run(out: str | Path = "demo_out", *, preset: str = "default", seed: int = 0,
        log: Callable[[str], None] = print) -> dict:
    """Run the demo into `out` (see the module docstring); returns the measured results."""
    if preset not in PRESETS:
        raise InputError(f"preset must be one of {', '.join(map(repr, PRESETS))}; "
                         f"got {preset!r}")
    if PRESETS[preset].gpu:
        check_gpu()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log(f"segkit demo ({preset}) -> {out}/")
    for info in segkit.backends().values():
        log(f"    backend {info}")
    return Demo(out, PRESETS[preset], seed, log).run(preset)


def load_report(out: str | Path) -> dict:
    return json.loads((Path(out) / "demo_report.json").read_text())


__all__ = ["Demo", "DemoError", "PRESETS", "Preset", "RECIPE_VARIANT", "SECTIONS", "STAGES", "check_gpu",
           "load_report", "quiet_mmseg", "run"]
