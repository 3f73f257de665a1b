"""`segkit recipe init`: inspect a dataset, choose the settings from it, write the recipe
folder (``recipe.toml``, ``classes.json``, ``configs/<model>.py``)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

from ..errors import InputError
from ..io.atomic import write_json
from ..palette import palette_for
from .configs import write_model_config
from .dataset import DatasetSummary, inspect_dataset, read_classes
from .settings import (PRESETS, RECIPE_FILE, AuditSettings, CrfSettings, DatasetSettings,
                       FoldSettings, InferSettings, ModelSettings, PrepareSettings, Recipe,
                       SubmissionSettings, TrainSettings, TuneSettings)
from .toml_file import write_recipe

CLASSES_FILE = "classes.json"
#: the side ConvCRF's presets assume (their 11x11 window on a 4x pooled grid, bandwidth 3 px)
CRF_REFERENCE_SIDE = 512
#: Epochs of the cpu preset's model. Measured on 100 generated 480x360 photos (the demo's
#: scenes; scripts/measure_recipe.py), fold 0's validation mIoU after 10, 20 and 30 epochs
#: (each a full cosine schedule): 0.41 (still rising steeply), 0.72, 0.80; a training of 30
#: epochs took 216 s on 2 shared cores (load average 5-7; docs/guide/recipe.md, "Measured").
CPU_EPOCHS = 30


def scaled_crf(side: int) -> CrfSettings:
    """ConvCRF's preset scaled from 512-px photos to images of (long) side `side`: the pooling
    and the position bandwidth shrink with the image, so the window covers the same share."""
    f = side / CRF_REFERENCE_SIDE
    blur = 4 * f
    blur = 1 if blur < 1.5 else 2 * round(blur / 2)
    window = 11 if blur > 1 else max(3, min(11, int(round(44 * f)) | 1))
    return CrfSettings(filter_size=window, blur=blur, num_iter=5,
                       pos_sdims=round(max(0.5, 3.0 * f), 2))


def choose_classes(summary: DatasetSummary, classes_file: Path | None) -> list[str]:
    """The class names: the given file, else the COCO categories, else the mask values found
    (named by value: 0..max)."""
    if classes_file is not None:
        return read_classes(classes_file)
    if summary.coco_classes is not None:
        return summary.coco_classes
    top = max(summary.values, default=0)
    if top < 1:
        raise InputError(f"the masks hold a single label value ({top}); a segmentation needs "
                         "at least 2 classes (or pass --classes)")
    return [str(v) for v in range(top + 1)]


def preset_settings(preset: str, summary: DatasetSummary, *, num_classes: int,
                    folder: Path, pretrained: str | None) -> tuple[dict, dict[str, str]]:
    """The settings a preset chooses for this data, and the notes that say why."""
    h, w = summary.image_size
    side = max(h, w)
    n = len(summary.stems)
    notes = {}
    if preset == "cpu":
        crop = min(128, 32 * max(1, round(side / 32)))
        model = ModelSettings(name="swin_cpu", config="configs/swin_cpu.py",
                              epochs=CPU_EPOCHS, batch_size=4)
        k = 3 if n >= 6 else 2
        infer = InferSettings(tta=False, batch_size=4)
        tune = TuneSettings(budget=60, crf_steps=60, crf_images=min(16, n),
                            crf_crop=min(64, h, w))
        notes["models.epochs"] = (f"cpu preset: a small Swin-UperNet at {crop} px; on 100 "
                                  "generated 480x360 photos, on 2 shared cores with torch on 1 "
                                  "thread, a fold model of 30 epochs took 105-151 s and the "
                                  "whole recipe 6-9 min; validation mIoU after 10, 20, 30 "
                                  "epochs: 0.41, 0.72, 0.80")
    else:
        crop = 512
        model = ModelSettings(name="swin_b", config="configs/swin_b.py", epochs=60,
                              batch_size=8, pretrained=pretrained or "none")
        k = 5 if n >= 10 else 2
        infer = InferSettings(tta=True, batch_size=2)
        tune = TuneSettings(budget=200, crf_steps=400, crf_images=min(32, n),
                            crf_crop=min(128, h, w))
        notes["models.pretrained"] = "ImageNet-22K Swin-B 384 weights, as the original recipe"
    notes["folds.k"] = f"{n} training images"
    notes["crf.blur"] = f"scaled from 512-px photos to this data's {w}x{h} images"
    notes["crf.pos_sdims"] = notes["crf.blur"]
    sub = min(256, side)
    notes["submission.size"] = f"the images are {w}x{h}"
    write_model_config(folder / model.config, preset, num_classes=num_classes, crop=crop,
                       epochs=model.epochs, batch_size=model.batch_size,
                       pretrained=None if model.pretrained == "none" else model.pretrained)
    return dict(models=(model,), folds=FoldSettings(k=k, seed=0), infer=infer, tune=tune,
                crf=scaled_crf(side), submission=SubmissionSettings(size=sub)), notes


def init_recipe(folder: str | Path, *, images: str | Path, masks: str | Path | None = None,
                coco: str | Path | None = None, test_images: str | Path | None = None,
                test_masks: str | Path | None = None, classes: str | Path | None = None,
                ignore_index: int = 255, preset: str = "cpu", pretrained: str | None = None,
                sample: str | Path | None = None, force: bool = False,
                log: Callable[[str], None] | None = print) -> Recipe:
    """Inspect a dataset and write a recipe folder.

    Parameters
    ----------
    folder : path
        The recipe folder (created). An existing recipe.toml is kept unless `force`.
    images : path
        Folder of the training images.
    masks, coco : path
        A folder of PNG masks (same stems as the images) or a COCO annotation file.
    test_images, test_masks : path, optional
        The test split's images (the submission) and masks (the report scores them).
    classes : path, optional
        A list of class names, a class table or a COCO file; default: the COCO categories or
        the mask values found, named by value.
    ignore_index : int
        The masks' void value (255, 11, 0, ...); carried through every stage.
    preset : {"cpu", "gpu"}
        cpu: small models at a reduced size; gpu: the Swin-B recipe.
    pretrained : path, optional
        Backbone weights for the gpu preset.
    sample : path, optional
        A sample submission (ids and order of the CSV).
    force : bool
        Overwrite an existing recipe.toml.
    log : callable or None

    Returns
    -------
    Recipe
        What was written to ``folder/recipe.toml``.
    """
    log = log or (lambda line: None)
    if preset not in PRESETS:
        raise InputError(f"preset must be one of {', '.join(PRESETS)}; got {preset!r}")
    if (masks is None) == (coco is None):
        raise InputError("give exactly one of masks (a folder of PNG masks) and coco (a COCO "
                         f"file); got masks={masks!r}, coco={coco!r}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int) or \
            not 0 <= ignore_index <= 255:
        raise InputError(f"ignore_index must be an int in 0..255; got {ignore_index!r}")
    if test_masks is not None and test_images is None:
        raise InputError("test_masks needs test_images")
    folder = Path(folder)
    if (folder / RECIPE_FILE).exists() and not force:
        raise InputError(f"{folder / RECIPE_FILE} exists: edit it, or pass --force to write "
                         "it again (the folder's other files are kept)")
    absolute = {k: (None if v is None else Path(v).expanduser().resolve()) for k, v in
                dict(images=images, masks=masks, coco=coco, test_images=test_images,
                     test_masks=test_masks, classes=classes, sample=sample).items()}
    given = read_classes(absolute["classes"]) if absolute["classes"] else None
    summary = inspect_dataset(absolute["images"], masks=absolute["masks"],
                              coco=absolute["coco"], ignore_index=ignore_index,
                              classes=given, test_images=absolute["test_images"],
                              test_masks=absolute["test_masks"])
    names = choose_classes(summary, absolute["classes"])
    if len(names) > 255:
        raise InputError(f"{len(names)} classes: the recipe keeps masks as 8-bit PNGs with 255 "
                         "for void, so at most 255 classes (0..254)")
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / CLASSES_FILE, {"classes": names,
                                       "palette": palette_for(len(names))[:len(names)].tolist()})
    chosen, notes = preset_settings(preset, summary, num_classes=len(names), folder=folder,
                                    pretrained=pretrained)
    text = lambda p: "" if p is None else str(p)  # noqa: E731
    ds = DatasetSettings(images=text(absolute["images"]), masks=text(absolute["masks"]),
                         coco=text(absolute["coco"]), test_images=text(absolute["test_images"]),
                         test_masks=text(absolute["test_masks"]), classes_file=CLASSES_FILE,
                         ignore_index=ignore_index)
    recipe = Recipe(preset=preset, dataset=ds, prepare=PrepareSettings(),
                    train=TrainSettings(), audit=AuditSettings(), **chosen)
    recipe = replace(recipe, submission=replace(recipe.submission, sample=text(
        absolute["sample"])))
    h, w = summary.image_size
    header = (f"Found {len(summary.stems)} training images ({summary.source}; typical size "
              f"{w}x{h}), {len(summary.test_stems)} test images, {len(names)} classes "
              f"({', '.join(names[:12])}{', ...' if len(names) > 12 else ''}), ignore value "
              f"{ignore_index}." + ("".join(f" {n}." for n in summary.notes)))
    write_recipe(folder, recipe, header, notes)
    log(f"{folder / RECIPE_FILE}: {header}")
    log(f"    edit it, then: segkit recipe run {folder}")
    return recipe
