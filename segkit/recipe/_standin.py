"""TEMPORARY stand-ins, used only while RECIPE-SUPPORT's ``configs.py`` / ``trainings.py`` and
RECIPE-REPORT's ``report.py`` have not landed on this branch. Same signatures, minimal
behaviour (local engine only, configs that derive from the repository's configs/). Delete this
module once those three files are merged."""
from __future__ import annotations

import hashlib
import html
import json
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from ..io.atomic import write_json, write_text

CONFIGS = Path(__file__).resolve().parent.parent.parent / "configs"
BASES = {"cpu": "upernet_swin-tiny_demo.py", "gpu": "upernet_swin-b_trash.py"}


def write_model_config(path, preset: str, *, num_classes: int, crop: int, epochs: int,
                       batch_size: int | None = None, pretrained: str | None = None) -> Path:
    """A config deriving from the repository's configs (not self-contained: a stand-in)."""
    path = Path(path)
    ds = ("dict(type='CocoMaskDataset', data_root='data', classes_file='classes.json', "
          "ann_file='splits/fold{fold}/%s.txt', fold=0, data_prefix=dict(img_path='images', "
          "seg_map_path='%s'))")
    text = "\n".join([
        f"_base_ = [{str(CONFIGS / BASES[preset])!r}]",
        f"num_classes = {num_classes}",
        f"model = dict(decode_head=dict(num_classes={num_classes}), "
        f"auxiliary_head=dict(num_classes={num_classes}))",
        f"train_dataloader = dict(batch_size={batch_size or 8}, dataset={ds % ('train', 'masks')})",
        f"val_dataloader = dict(batch_size=4, dataset={ds % ('val', 'masks')})",
        "test_dataloader = val_dataloader",
        f"train_cfg = dict(max_epochs={epochs}, val_interval=1)", ""])
    write_text(path, text)
    return path


@dataclass(frozen=True)
class TrainTask:
    name: str
    config: str
    work_dir: str
    data_root: str
    fold: int
    train_masks: str
    val_masks: str = "masks"
    classes_file: str = ""
    seed: int = 0
    epochs: int | None = None
    ignore_index: int = 255
    cfg_options: tuple = ()
    pretrained: str = "none"


def _hash(task: TrainTask) -> str:
    return hashlib.sha256(json.dumps(asdict(task), sort_keys=True, default=str)
                          .encode()).hexdigest()[:16]


def run_trainings(tasks, *, engine: str = "local", gpus_per_task: float | None = None,
                  progress: bool = True, log=print) -> dict[str, dict]:
    """Local, one after another; a finished task (result.json with its hash) is reused."""
    from .. import mmseg as smm

    out = {}
    for t in tasks:
        result_file = Path(t.work_dir) / "result.json"
        if result_file.is_file():
            done = json.loads(result_file.read_text())
            if done.get("task_hash") == _hash(t):
                out[t.name] = {**done["result"], "reused": True}
                continue
        epochs = t.epochs or 1
        opts = {"train_cfg.max_epochs": epochs, "train_cfg.val_interval": 1,
                "param_scheduler.1.end": epochs, "param_scheduler.1.T_max": epochs,
                "randomness.seed": t.seed, "log_level": "ERROR",
                "default_hooks.checkpoint.interval": 1,
                "default_hooks.checkpoint.save_best": None}
        for loader, masks in (("train", t.train_masks), ("val", t.val_masks),
                              ("test", t.val_masks)):
            opts[f"{loader}_dataloader.dataset.classes_file"] = t.classes_file
            opts[f"{loader}_dataloader.dataset.data_prefix.seg_map_path"] = masks
        opts.update(dict(t.cfg_options))
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            resume = (Path(t.work_dir) / "last_checkpoint").is_file()
            res = smm.train(t.config, work_dir=t.work_dir, fold=t.fold, data_root=t.data_root,
                            cfg_options=opts, pretrained=t.pretrained, resume=resume)
        curve = [[i + 1, h.get("mIoU", float("nan")) / 100] for i, h in enumerate(res.history)]
        r = {"checkpoint": str(res.last_checkpoint), "curve": curve,
             "val_mIoU": curve[-1][1] if curve else float("nan"),
             "seconds": round(time.perf_counter() - t0, 2)}
        write_json(result_file, {"task_hash": _hash(t), "result": r})
        out[t.name] = {**r, "reused": False}
        if log:
            log(f"    {t.name}: validation mIoU {r['val_mIoU']:.3f} in {r['seconds']:.0f} s")
    return out


def write_report(folder, report: dict, *, log=None) -> dict[str, Path]:
    """A plain page with report.json's sections as tables of JSON."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    parts = ["<!doctype html><meta charset='utf-8'><title>segkit recipe report</title>",
             "<h1>segkit recipe report</h1>"]
    md = ["# segkit recipe report", ""]
    for key, value in report.items():
        body = json.dumps(value, indent=1, default=str)
        parts.append(f"<h2>{html.escape(key)}</h2><pre>{html.escape(body)}</pre>")
        md += [f"## {key}", "", "```", body, "```", ""]
    write_text(folder / "index.html", "\n".join(parts))
    write_text(folder / "index.md", "\n".join(md))
    return {"html": folder / "index.html", "md": folder / "index.md"}


def unlearned_classes(iou, classes, threshold: float = 0.05) -> list[str]:
    return [c for c, v in zip(classes, iou) if v is None or v < threshold]
