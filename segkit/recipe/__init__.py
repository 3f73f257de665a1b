"""The whole recipe on a user's dataset: ``segkit recipe init|run|status``.

A recipe folder holds ``recipe.toml`` (one typed, documented settings record:
:mod:`segkit.recipe.settings`), the class table, the model configs, and everything the stages
make: ``data/`` (masks, resampled masks, splits), ``work/`` (trainings), ``stores/``
(confidence stores), ``tuned/``, ``audit/``, ``ensembles/``, ``submission.csv``,
``report.json`` and ``report/``. ``state/<stage>.json`` records what each stage consumed and
made, so a rerun does only what changed (:mod:`segkit.recipe.state`).

Stages in order: masks, resample, folds, train, oof, test, tune, audit, retrain, ensembles,
submission, evaluate, then the report.
"""
from __future__ import annotations

from .dataset import DatasetCheckError, inspect_dataset
from .driver import STAGE_NAMES, StageError, recipe_status, run_recipe
from .init import init_recipe
from .settings import Recipe, RecipeError, load_recipe

__all__ = ["DatasetCheckError", "Recipe", "RecipeError", "STAGE_NAMES", "StageError",
           "init_recipe", "inspect_dataset", "load_recipe", "recipe_status", "run_recipe"]
