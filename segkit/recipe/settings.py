"""The recipe file: one typed, documented settings record read from ``DIR/recipe.toml``.

Every setting is a field of a frozen dataclass below, with its explanation in the field's
``help`` metadata (``segkit recipe init`` writes it as a comment above the value) and, where
the value is limited, its ``choices`` or ``minimum``. :func:`load_recipe` reads the file with
``tomllib`` and checks it: an unknown section or key, a value of the wrong type or outside its
range is a :class:`RecipeError` naming ``recipe.toml``, the key and the value.

Paths in the file are absolute or relative to the recipe folder.
"""
from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError, InputError

RECIPE_FILE = "recipe.toml"
VARIANTS = ("original", "resampled", "fixed")
ENGINES = ("local", "ray")
PRESETS = ("cpu", "gpu")


class RecipeError(InputError):
    """recipe.toml holds an unknown key, a value of the wrong type or a bad value; the message
    names the file, the key and the value."""


def _f(default: Any, help: str, **meta: Any) -> Any:
    if isinstance(default, (list, dict)):
        raise TypeError("use tuples for sequence defaults")
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class DatasetSettings:
    """[dataset]: where the data is and what its values mean."""
    images: str = _f("", "Folder of the training images (searched recursively).")
    masks: str = _f("", "Folder of single-channel PNG label masks, one per image with the "
                        "image's stem (the mmseg layout). Either masks or coco.")
    coco: str = _f("", "COCO annotation file (the masks are made from it). Either masks or "
                       "coco.")
    test_images: str = _f("", "Folder of the test images (the submission's); empty: no test "
                              "inference, no submission.")
    test_masks: str = _f("", "Folder of the test images' masks; when given the report scores "
                             "every model and ensemble on the test split.")
    val_masks: str = _f("", "Optional folder of masks the trainings validate against (the "
                            "curves, val_mIoU and the best checkpoint), e.g. cleaner masks of "
                            "the same images; empty: the training masks' originals.")
    classes_file: str = _f("classes.json", "Class table (json: a list of names, or "
                                           "{\"classes\": [...], \"palette\": [...]}); the "
                                           "class at index i is label value i.")
    ignore_index: int = _f(255, "The label value that marks pixels to ignore (void). Inside "
                                "the recipe folder it is stored as 255; outputs give it back.",
                           minimum=0, maximum=255)


@dataclass(frozen=True)
class PrepareSettings:
    """[prepare]: mode resampling of the training masks (segkit resample)."""
    resample: bool = _f(True, "Write mode-resampled masks (the 'resampled' variant).")
    size: int = _f(3, "Window side of the mode filter (odd).", minimum=3, odd=True)
    ties: str = _f("keep", "Ties in the window: keep the pixel's own label if it is among the "
                           "most frequent (keep), the smallest label, or the first in the "
                           "window (the original recipe).", choices=("keep", "smallest", "first"))


@dataclass(frozen=True)
class FoldSettings:
    """[folds]: the k-fold split (every image is validated by exactly one fold model)."""
    k: int = _f(5, "Number of folds.", minimum=2)
    seed: int = _f(0, "Seed of the split (same seed, same folds).", minimum=0)
    method: str = _f("greedy", "greedy: the original recipe's rounds (each fold takes the "
                               "image richest in the class it lacks most); multilabel: "
                               "iterative stratification.", choices=("greedy", "multilabel"))


@dataclass(frozen=True)
class ModelSettings:
    """[[models]]: one mmseg model trained on every fold (several [[models]] allowed)."""
    name: str = _f("model", "Name used in the run names, stores and report.")
    config: str = _f("", "Its mmseg config (written by init; edit it freely).")
    epochs: int = _f(10, "Training epochs per fold model.", minimum=1)
    batch_size: int = _f(8, "Images per training step.", minimum=1)
    pretrained: str = _f("none", "Backbone weights: a local file, or none (random start).")


@dataclass(frozen=True)
class TrainSettings:
    """[train]: which trainings run (models x folds x variants x seeds) and where."""
    variants: tuple[str, ...] = _f(("resampled",), "Masks the models train on: original, "
                                   "resampled (needs prepare.resample), fixed (the audit's "
                                   "corrected masks: trained after the audit).",
                                   choices=VARIANTS)
    seeds: tuple[int, ...] = _f((0,), "Seeds: each variant trains once per seed (the spread).",
                                minimum=0)
    ensemble_variant: str = _f("resampled", "The variant whose models make the ensembles, "
                                            "tune and the audit (the audit needs them before "
                                            "any fixed mask exists).",
                               choices=("original", "resampled"))
    engine: str = _f("local", "local: one training after another (one per GPU when several "
                              "are visible); ray: Ray tasks on RAY_ADDRESS's cluster or a "
                              "local one (the folder must be shared).", choices=ENGINES)
    gpus_per_task: float = _f(0.0, "GPUs per Ray training task (0: none).", minimum=0)


@dataclass(frozen=True)
class InferSettings:
    """[infer]: out-of-fold and test inference."""
    tta: bool = _f(False, "Test-time augmentation (the config's tta_pipeline: scales x flips).")
    batch_size: int = _f(4, "Images per forward pass.", minimum=1)


@dataclass(frozen=True)
class TuneSettings:
    """[tune]: weights, per-class bias and the CRF tuned on the out-of-fold predictions."""
    search: tuple[str, ...] = _f(("weights", "bias", "crf"), "What is tuned.",
                                 choices=("weights", "bias", "crf"))
    budget: int = _f(100, "Candidates per search.", minimum=1)
    holdout: float = _f(0.2, "Share of the OOF images set aside to choose among settings.",
                        minimum=0.01, maximum=0.9)
    crf_steps: int = _f(100, "Adam steps of the CRF fit.", minimum=1)
    crf_images: int = _f(16, "Images the CRF fit draws its crops from.", minimum=1)
    crf_crop: int = _f(128, "Side of the CRF fit's crops (px; at most the smallest image).",
                       minimum=8)


@dataclass(frozen=True)
class AuditSettings:
    """[audit]: confident learning on the OOF predictions (segkit audit)."""
    enabled: bool = _f(True, "Run the audit (and write the fixed masks).")
    top: int = _f(12, "Worst images shown with pictures.", minimum=0)
    min_region: int = _f(16, "Smallest flagged region kept (pixels).", minimum=0)


@dataclass(frozen=True)
class CrfSettings:
    """[crf]: the ConvCRF of the 'vote + CRF' ensemble, scaled to the image size the models see
    (ConvCRF's presets assume 512-px photos: an 11x11 window on a 4x pooled grid)."""
    filter_size: int = _f(11, "Window side on the pooled grid (odd).", minimum=1, odd=True)
    blur: int = _f(4, "Pooling factor (1 or even).", minimum=1)
    num_iter: int = _f(5, "Mean-field iterations.", minimum=1)
    pos_sdims: float = _f(3.0, "Position bandwidth (px).", minimum=0.01)
    col_schan: float = _f(13.0, "Colour bandwidth (grey levels).", minimum=0.01)
    pos_compat: float = _f(3.0, "Weight of the position kernel.", minimum=0)
    col_compat: float = _f(10.0, "Weight of the colour kernel.", minimum=0)


@dataclass(frozen=True)
class SubmissionSettings:
    """[submission]: the CSV (image_id,PredictionString; label maps flattened row-major)."""
    size: int = _f(256, "Side of the submission's label maps.", minimum=1)
    sample: str = _f("", "Sample submission whose ids and order the CSV follows (empty: the "
                         "test images, sorted).")
    downsample: str = _f("nearest", "How label maps are resized.",
                         choices=("nearest", "mode", "max"))


@dataclass(frozen=True)
class StoreSettings:
    """[[stores]]: a model trained elsewhere, as confidence stores (segkit.ConfidenceStore)."""
    name: str = _f("external", "Name in the report.")
    oof: tuple[str, ...] = _f((), "Its out-of-fold store of each fold, in fold order.")
    test: str = _f("", "Its store on the test images (empty: not in the test ensembles).")


@dataclass(frozen=True)
class Recipe:
    """The whole recipe (one section per field)."""
    preset: str = _f("cpu", "The preset init chose (cpu or gpu); informative.", choices=PRESETS)
    dataset: DatasetSettings = field(default_factory=DatasetSettings)
    prepare: PrepareSettings = field(default_factory=PrepareSettings)
    folds: FoldSettings = field(default_factory=FoldSettings)
    models: tuple[ModelSettings, ...] = ()
    train: TrainSettings = field(default_factory=TrainSettings)
    infer: InferSettings = field(default_factory=InferSettings)
    tune: TuneSettings = field(default_factory=TuneSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    crf: CrfSettings = field(default_factory=CrfSettings)
    submission: SubmissionSettings = field(default_factory=SubmissionSettings)
    stores: tuple[StoreSettings, ...] = ()

    def to_dict(self) -> dict:
        """The record as plain data (tuples as lists), as report.json shows it."""
        return _plain(dataclasses.asdict(self))

    def get(self, key: str) -> Any:
        """A setting by dotted key (``"folds.k"``; ``"models"`` gives the whole list)."""
        node: Any = self
        for part in key.split("."):
            node = getattr(node, part)
        if isinstance(node, tuple) and node and dataclasses.is_dataclass(node[0]):
            return [_plain(dataclasses.asdict(n)) for n in node]
        return _plain(dataclasses.asdict(node)) if dataclasses.is_dataclass(node) else \
            _plain(node)


SECTIONS = {f.name: f for f in dataclasses.fields(Recipe) if f.name != "preset"}
#: sections written as arrays of tables ([[models]], [[stores]]) -> their record type
ARRAYS = {"models": ModelSettings, "stores": StoreSettings}


def _plain(value: Any) -> Any:
    """Dicts and lists only (tuples become lists), as JSON and TOML hold them."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def section_type(name: str) -> type:
    """The dataclass of section `name`."""
    if name in ARRAYS:
        return ARRAYS[name]
    return typing.get_type_hints(Recipe)[name]


def _check_value(where: str, key: str, value: Any, f: dataclasses.Field, hint: Any) -> Any:
    meta = f.metadata
    origin = typing.get_origin(hint)
    shown = f"{key} = {value!r}"
    if origin is tuple:
        inner = typing.get_args(hint)[0]
        if not isinstance(value, list):
            raise RecipeError(f"{where}: {shown}: expected a list of {inner.__name__}")
        return tuple(_check_scalar(where, key, v, inner, meta, shown) for v in value)
    return _check_scalar(where, key, value, hint, meta, shown)


def _check_scalar(where: str, key: str, value: Any, kind: type, meta: Any, shown: str) -> Any:
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        expected = "true or false" if kind is bool else kind.__name__
        raise RecipeError(f"{where}: {shown}: expected {expected}, got {type(value).__name__}")
    if "choices" in meta and value not in meta["choices"]:
        raise RecipeError(f"{where}: {shown}: must be one of "
                          f"{', '.join(map(repr, meta['choices']))}")
    if "minimum" in meta and value < meta["minimum"]:
        raise RecipeError(f"{where}: {shown}: must be at least {meta['minimum']}")
    if "maximum" in meta and value > meta["maximum"]:
        raise RecipeError(f"{where}: {shown}: must be at most {meta['maximum']}")
    if meta.get("odd") and value % 2 == 0:
        raise RecipeError(f"{where}: {shown}: must be odd")
    return value


def _build(where: str, section: str, cls: type, table: Any) -> Any:
    if not isinstance(table, dict):
        raise RecipeError(f"{where}: [{section}] must be a table; got {table!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise RecipeError(f"{where}: unknown key {section}.{unknown[0]} (= {table[unknown[0]]!r}); "
                          f"[{section}] takes {', '.join(fields)}")
    values = {k: _check_value(where, f"{section}.{k}", v, fields[k], hints[k])
              for k, v in table.items()}
    return cls(**values)


def parse_recipe(data: dict, where: str = RECIPE_FILE) -> Recipe:
    """A :class:`Recipe` from the parsed TOML `data`, checked (see the module docstring)."""
    unknown = sorted(set(data) - set(SECTIONS) - {"preset"})
    if unknown:
        raise RecipeError(f"{where}: unknown section or key {unknown[0]!r}; the sections are "
                          f"{', '.join(SECTIONS)}")
    kw: dict[str, Any] = {}
    if "preset" in data:
        kw["preset"] = _check_scalar(where, "preset", data["preset"], str,
                                     Recipe.__dataclass_fields__["preset"].metadata,
                                     f"preset = {data['preset']!r}")
    for name in SECTIONS:
        if name not in data:
            continue
        if name in ARRAYS:
            items = data[name]
            if not isinstance(items, list):
                raise RecipeError(f"{where}: {name} must be an array of tables ([[{name}]]); "
                                  f"got {items!r}")
            kw[name] = tuple(_build(where, f"{name}[{i}]", ARRAYS[name], t)
                             for i, t in enumerate(items))
        else:
            kw[name] = _build(where, name, section_type(name), data[name])
    recipe = Recipe(**kw)
    _check_whole(recipe, where)
    return recipe


def _check_whole(r: Recipe, where: str) -> None:
    """Rules between settings."""
    ds = r.dataset
    if not ds.images:
        raise RecipeError(f"{where}: dataset.images is empty: name the folder of the images")
    if bool(ds.masks) == bool(ds.coco):
        raise RecipeError(f"{where}: give exactly one of dataset.masks and dataset.coco; got "
                          f"masks = {ds.masks!r}, coco = {ds.coco!r}")
    if ds.test_masks and not ds.test_images:
        raise RecipeError(f"{where}: dataset.test_masks = {ds.test_masks!r} needs "
                          "dataset.test_images")
    if not r.models and not r.stores:
        raise RecipeError(f"{where}: no [[models]] and no [[stores]]: nothing to ensemble")
    names = [m.name for m in r.models] + [s.name for s in r.stores]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise RecipeError(f"{where}: models.name / stores.name {dup[0]!r} is used twice")
    for i, m in enumerate(r.models):
        if not m.config:
            raise RecipeError(f"{where}: models[{i}].config is empty (model {m.name!r})")
        if not m.name.replace("-", "").replace("_", "").isalnum():
            raise RecipeError(f"{where}: models[{i}].name = {m.name!r}: use letters, digits, "
                              "'-' and '_'")
    t = r.train
    if "resampled" in (*t.variants, t.ensemble_variant) and not r.prepare.resample:
        raise RecipeError(f"{where}: train.variants / train.ensemble_variant use 'resampled' "
                          "but prepare.resample = false")
    if "fixed" in t.variants and not r.audit.enabled:
        raise RecipeError(f"{where}: train.variants has 'fixed' but audit.enabled = false")
    if r.models and t.ensemble_variant not in t.variants:
        raise RecipeError(f"{where}: train.ensemble_variant = {t.ensemble_variant!r} is not "
                          f"among train.variants {list(t.variants)}")
    if not t.seeds:
        raise RecipeError(f"{where}: train.seeds is empty")
    if r.crf.blur > 1 and r.crf.blur % 2:
        raise RecipeError(f"{where}: crf.blur = {r.crf.blur}: must be 1 or even")
    for i, s in enumerate(r.stores):
        if len(s.oof) != r.folds.k:
            raise RecipeError(f"{where}: stores[{i}].oof lists {len(s.oof)} stores; folds.k "
                              f"is {r.folds.k} (one out-of-fold store per fold)")


def load_recipe(folder: str | Path) -> Recipe:
    """Read and check ``folder/recipe.toml``.

    Parameters
    ----------
    folder : path
        The recipe folder (``segkit recipe init`` made it).

    Returns
    -------
    Recipe

    Raises
    ------
    RecipeError
        An unknown key, a wrong type, a bad value (the message names the file, key and value).
    DataError
        No such file, or not TOML.
    """
    path = Path(folder) / RECIPE_FILE
    if not path.is_file():
        raise DataError(f"{path}: no recipe file here (write one with `segkit recipe init "
                        f"{folder} --images ... --masks ...`)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path}: not valid TOML ({exc})") from None
    return parse_recipe(data, str(path))


def resolve(folder: str | Path, path: str) -> Path | None:
    """A path of the recipe, absolute or relative to `folder`; None when empty."""
    if not path:
        return None
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(folder) / p
