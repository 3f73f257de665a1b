"""The demo behind `make demo` / `segkit demo`: segkit's main job end to end on data it
generates itself (no downloads), with models that learn, and the recipe's claims measured.

1. data      trash-like scenes (each class its own colour and texture) whose COCO annotations
             trace the objects with a wobbly hand and miss some small ones; the clean truth
             kept; a held-out test split with its truth and a sample submission
2. masks     `segkit masks` (noisy annotations, clean truth, test truth)
3. folds     `segkit kfold` (greedy)
4. resample  `segkit resample`; every mode-filter backend agrees
5. train     the ablation: fold models on the original and on the resampled masks, same seeds,
             folds and schedule, validated against the clean truth along training; and one
             fold model with a trainable ConvCRF layer (segkit.mmseg.CRFEncoderDecoder)
             against the ablation's plain model of the same fold, seed and schedule
6. infer     OOF stores of the resampled-mask models, test stores of every fold model
7. tune      `segkit tune` on the OOF stores (weights, per-class bias, ConvCRF; a held-out part)
8. audit     `segkit audit` on the same OOF stores, precision/recall against the clean truth,
             and its `--fix` masks
9. retrain   the ablation's audit row: the same models trained on the fixed masks
10. ensemble equal soft vote, + ConvCRF, the recipe's setting, `--tuned` (+ submission CSV)
11. evaluate the step table and the ablation on the held-out test split
12. index    demo_out/index.md: every table, the curves and the pictures

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
from .presets import PRESETS, Preset
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


__all__ = ["Demo", "DemoError", "PRESETS", "Preset", "SECTIONS", "STAGES", "check_gpu",
           "load_report", "quiet_mmseg", "run"]
