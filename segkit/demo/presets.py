"""The demo's sizes: what each preset generates and trains."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIGS = Path(__file__).resolve().parent.parent.parent / "configs"

#: Ablation variants as the demo names them -> the recipe's train.variants
RECIPE_VARIANT = {"original": "original", "resampled": "resampled", "audited": "fixed"}
#: Ablation variants: which masks the models train on (the recipe's folder under data/).
VARIANT_MASKS = {"original": "masks", "resampled": "masks_resampled", "audited": "masks_fixed"}


@dataclass(frozen=True)
class Preset:
    train_images: int
    test_images: int
    size: int              # image side (px)
    folds: int
    epochs: int            # training epochs per fold model
    val_points: int        # validations along training (the curves)
    seeds: int             # independent trainings per variant (the spread)
    variants: tuple        # the ablation's masks; "resampled" models also make the ensemble
    tta: bool              # flips at test time
    kernel_masks: int      # 512x512 masks for the mode-filter backend check
    tune_budget: int
    config: str = "upernet_swin-tiny_demo.py"
    #: the same model with the trainable ConvCRF layer (one more fold model in the train stage)
    crf_config: str = "upernet_swin-tiny_demo_crf.py"
    gpu: bool = False      # needs a CUDA GPU
    #: measured seconds per stage on 2 idle cores, for the time estimates (scaled as it runs)
    expect: tuple = ()

    @property
    def config_path(self) -> Path:
        return CONFIGS / self.config

    @property
    def crf_config_path(self) -> Path:
        return CONFIGS / self.crf_config


ALL = ("original", "resampled", "audited")

PRESETS = {
    # `make demo`: 128 training images, 2 folds x 2 seeds x 3 mask variants = 12 fold models
    # of 30 epochs (240 iterations of batch 8 each) + 1 with the CRF layer, 48 held-out test
    # images
    "default": Preset(train_images=128, test_images=48, size=64, folds=2, epochs=30,
                      val_points=6, seeds=2, variants=ALL, tta=True, kernel_masks=8,
                      tune_budget=120,
                      expect=(("train", 270), ("oof", 8), ("test", 12), ("tune", 25),
                              ("audit", 8), ("retrain", 120), ("ensembles", 10),
                              ("evaluate", 10))),
    # a faster look: fewer images and epochs, no audited-mask models
    "quick": Preset(train_images=64, test_images=40, size=64, folds=2, epochs=30,
                    val_points=6, seeds=2, variants=("original", "resampled"), tta=True,
                    kernel_masks=4, tune_budget=60,
                    expect=(("train", 130), ("oof", 5), ("test", 7), ("tune", 15),
                            ("audit", 5), ("ensembles", 8), ("evaluate", 8))),
    # the end-to-end test in `make test`: every stage and table, tiny sizes (models learn
    # nothing in one epoch)
    "tiny": Preset(train_images=12, test_images=3, size=64, folds=2, epochs=1, val_points=1,
                   seeds=2, variants=ALL, tta=False, kernel_masks=1, tune_budget=30),
    # the recipe's scale on a GPU: 512x512, more images, the Swin-B recipe config (random
    # initial weights: segkit downloads nothing)
    "gpu": Preset(train_images=600, test_images=100, size=512, folds=5, epochs=30,
                  val_points=10, seeds=2, variants=ALL, tta=True, kernel_masks=8,
                  tune_budget=200, config="upernet_swin-b_trash.py",
                  crf_config="upernet_swin-b_trash_crf.py", gpu=True),
}
