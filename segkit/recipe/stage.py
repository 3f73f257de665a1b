"""The pieces every stage shares: the recipe folder's layout (:class:`Context`) and the
:class:`Stage` base (what it reads, after which stages, what it makes)."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Callable

from .settings import Recipe, resolve
from .state import content_hash, identity

#: Inside the recipe folder the ignore value is always 255 (segkit's convention); masks with
#: another void value are mapped on the way in, and back on the way out.
INTERNAL_IGNORE = 255
#: datasets with fewer images run the CPU jobs in this process (see Context.workers)
SMALL = 64


class Context:
    """One run over a recipe folder: the record, the layout, what earlier stages returned."""

    def __init__(self, folder: Path, recipe: Recipe, *, log: Callable[[str], Any] = print,
                 progress: bool = True, engine: str | None = None, hooks: dict | None = None):
        self.folder, self.recipe, self.log, self.progress = Path(folder), recipe, log, progress
        self.engine = engine or recipe.train.engine
        self.results: dict[str, dict] = {}
        self.hooks = hooks or {}   # test seams: "run_trainings" -> a wrapper of it
        table = json.loads(self.path(recipe.dataset.classes_file).read_text())
        self.classes: list[str] = table["classes"] if isinstance(table, dict) else table

    # ---- layout ------------------------------------------------------------------------
    def path(self, *parts: str) -> Path:
        joined = Path(*parts)
        return joined if joined.is_absolute() else self.folder.joinpath(*parts)

    def user(self, value: str) -> Path | None:
        """A path setting of the recipe, resolved (None when empty)."""
        return resolve(self.folder, value)

    @property
    def data(self) -> Path:
        """data_root of the trainings: images/, masks/, masks_resampled/, masks_fixed/,
        splits/fold<k>/{train,val}.txt."""
        return self.folder / "data"

    @property
    def classes_file(self) -> Path:
        return self.path(self.recipe.dataset.classes_file)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def workers(self) -> int | None:
        """Processes of the CPU jobs: all cores (None), or 1 for a small dataset, where
        starting a pool costs more than it saves."""
        images = self.data / "masks"
        return 1 if images.is_dir() and len(list(images.glob("*.png"))) < SMALL else None

    @property
    def has_test(self) -> bool:
        return bool(self.recipe.dataset.test_images)

    @property
    def has_test_masks(self) -> bool:
        return bool(self.recipe.dataset.test_masks)

    # ---- runs ----------------------------------------------------------------------------
    def variant_masks(self, variant: str) -> str:
        return {"original": "masks", "resampled": "masks_resampled",
                "fixed": "masks_fixed"}[variant]

    def run_name(self, model: str, variant: str, seed: int, fold: int | None = None) -> str:
        return f"{model}_{variant}_s{seed}" + ("" if fold is None else f"_fold{fold}")

    def members(self) -> list[tuple[str, str, int]]:
        """The ensemble's members (model, variant, seed): each mmseg model of the ensemble
        variant, once per seed."""
        v = self.recipe.train.ensemble_variant
        return [(m.name, v, s) for m in self.recipe.models for s in self.recipe.train.seeds]

    def oof_specs(self) -> list[str]:
        """One entry per ensemble member: its fold stores joined by commas (external stores
        last)."""
        k = self.recipe.folds.k
        specs = [",".join(str(self.path("stores", self.run_name(m, v, s, f)))
                          for f in range(k)) for m, v, s in self.members()]
        specs += [",".join(str(self.user(p)) for p in st.oof) for st in self.recipe.stores]
        return specs

    def test_stores(self) -> list[Path]:
        """The ensemble members' test stores (the mean of a run's fold models), external
        stores last (those that have one)."""
        out = [self.path("stores", self.run_name(m, v, s) + "_test")
               for m, v, s in self.members()]
        return out + [self.user(st.test) for st in self.recipe.stores if st.test]


class Stage:
    """A stage of the recipe. Subclasses set `name`, `after` and implement :meth:`run`;
    :meth:`reads` (settings), :meth:`inputs` (identities of files outside the recipe's own
    outputs) and :meth:`made` (outputs, relative to the folder) describe it for the ledger."""

    name = ""
    after: tuple[str, ...] = ()

    def active(self, ctx: Context) -> str | None:
        """None when the stage has work in this recipe, else a note saying why not."""
        return None

    def reads(self, ctx: Context) -> dict[str, Any]:
        return {}

    def inputs(self, ctx: Context) -> dict[str, str]:
        return {}

    def made(self, ctx: Context) -> list[str]:
        return []

    def estimate(self, ctx: Context) -> str:
        return ""

    def run(self, ctx: Context) -> dict:
        raise NotImplementedError


def settings_of(recipe: Recipe, *keys: str) -> dict[str, Any]:
    """{dotted key: value} of the recipe's settings `keys`; a whole section (``"tune"``)
    gives one entry per setting in it, so that a change names its key."""
    out = {}
    for k in keys:
        value = recipe.get(k)
        if isinstance(value, dict):
            out.update({f"{k}.{kk}": vv for kk, vv in value.items()})
        else:
            out[k] = value
    return out


@contextlib.contextmanager
def quiet(log_file: Path):
    """mmseg/mmengine's chatter (prints, warnings, INFO logs) goes to `log_file` rather than
    the terminal; progress bars (stderr) and errors still show."""
    import io
    import logging
    import warnings

    log_file.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(buffer):
            try:
                yield
            finally:
                with open(log_file, "a") as sink:
                    sink.write(buffer.getvalue())
        logging.getLogger("mmengine").setLevel(logging.ERROR)


def file_inputs(ctx: Context, **paths: str) -> dict[str, str]:
    """Identities of recipe paths (folders and large files: stat-based)."""
    return {k: identity(ctx.user(v)) for k, v in paths.items() if v}


def config_inputs(ctx: Context) -> dict[str, str]:
    """Content hashes of the model configs and classes file (small; touching changes
    nothing), and the identity of pretrained weights."""
    out = {"classes_file": content_hash(ctx.classes_file)}
    for m in ctx.recipe.models:
        out[f"config {m.name}"] = content_hash(ctx.user(m.config))
        if m.pretrained not in ("", "none"):
            out[f"pretrained {m.name}"] = identity(ctx.user(m.pretrained))
    return out


def store_inputs(ctx: Context, test: bool = False) -> dict[str, str]:
    """Identities of the external [[stores]] (their OOF stores, or their test store)."""
    out = {}
    for st in ctx.recipe.stores:
        paths = [st.test] if test else list(st.oof)
        for i, p in enumerate(x for x in paths if x):
            out[f"store {st.name} {'test' if test else f'oof{i}'}"] = identity(ctx.user(p))
    return out
