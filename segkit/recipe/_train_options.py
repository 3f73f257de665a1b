"""The ``cfg_options`` that point an mmseg config at a :class:`~segkit.recipe.trainings.TrainTask`:
every dataset (through wrappers) gets the task's mask folder, ignore value and class table; the
heads' losses, the preprocessor's mask padding and the evaluators get the ignore value; the
seed; the epochs (``train_cfg.max_epochs`` and the schedulers that span the run); the progress
bar; the task's own options last."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:  # pragma: no cover
    from .trainings import TrainTask

DATALOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")
HEADS = ("decode_head", "auxiliary_head")


def _dataset_keys(node: Any, prefix: str):
    """(dotted key, dataset dict) of every dataset under `node`, through wrappers."""
    if not isinstance(node, Mapping):
        return
    if "dataset" in node or "datasets" in node:
        if isinstance(node.get("dataset"), Mapping):
            yield from _dataset_keys(node["dataset"], f"{prefix}.dataset")
        for i, sub in enumerate(node.get("datasets") or []):
            yield from _dataset_keys(sub, f"{prefix}.datasets.{i}")
    else:
        yield prefix, node


def _each(value: Any, key: str):
    """(key, dict) for a dict, or for each dict of a list (``key.<i>``)."""
    if isinstance(value, Mapping):
        yield key, value
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            if isinstance(v, Mapping):
                yield f"{key}.{i}", v


def task_options(task: TrainTask, cfg, *, progress: bool = False) -> dict:
    """The cfg_options that point `cfg` (a loaded mmengine Config) at `task`'s data."""
    opts: dict = {}
    for loader in DATALOADERS:
        if not isinstance(cfg.get(loader), Mapping) or "dataset" not in cfg[loader]:
            continue
        masks = task.train_masks if loader == "train_dataloader" else task.val_masks
        for key, _ in _dataset_keys(cfg[loader]["dataset"], f"{loader}.dataset"):
            opts[f"{key}.data_prefix.seg_map_path"] = masks
            opts[f"{key}.ignore_index"] = task.ignore_index
            if task.classes_file:
                opts[f"{key}.classes_file"] = os.fspath(task.classes_file)
    model = cfg.get("model") or {}
    for head in HEADS:
        for key, _ in _each(model.get(head), f"model.{head}"):
            opts[f"{key}.ignore_index"] = task.ignore_index
    if isinstance(model.get("data_preprocessor"), Mapping):
        opts["model.data_preprocessor.seg_pad_val"] = task.ignore_index
    for ev in ("val_evaluator", "test_evaluator"):
        for key, _ in _each(cfg.get(ev), ev):
            opts[f"{key}.ignore_index"] = task.ignore_index
    opts["randomness.seed"] = task.seed
    if task.epochs is not None:
        old = (cfg.get("train_cfg") or {}).get("max_epochs")
        opts["train_cfg.max_epochs"] = task.epochs
        for key, sched in _each(cfg.get("param_scheduler"), "param_scheduler"):
            # the schedulers that span the whole run (end = max_epochs, counted in epochs)
            if sched.get("by_epoch", True) and old is not None:
                if sched.get("end") == old:
                    opts[f"{key}.end"] = task.epochs
                if sched.get("T_max") == old:
                    opts[f"{key}.T_max"] = task.epochs
    hooks = cfg.get("default_hooks") or {}
    if isinstance(hooks.get("logger"), Mapping):
        opts["default_hooks.logger.log_metric_by_epoch"] = True  # the curve's steps: epochs
    if progress:
        opts["custom_hooks"] = [*(cfg.get("custom_hooks") or []),
                                dict(type="ProgressBarHook", desc=task.name)]
    own = dict(task.cfg_options)
    if progress and "custom_hooks" in own:  # the task's hooks and the bar
        own["custom_hooks"] = [*own["custom_hooks"], opts["custom_hooks"][-1]]
    opts.update(own)
    return opts
