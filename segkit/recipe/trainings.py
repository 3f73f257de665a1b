"""Independent trainings (model x fold x mask variant x seed), resumable one by one.

Each :class:`TrainTask` is one call of :func:`segkit.mmseg.runner.train` with the dataset
filled in through ``cfg_options`` (data root, mask folders, class table, ignore value, seed,
epochs), so a config written by :func:`segkit.recipe.configs.write_model_config` and a user's
own mmseg config are driven the same way.

Where they run (:func:`run_trainings`):

- ``engine="local"``: one after another in this process; when torch sees several GPUs, one
  per GPU at a time, each in a subprocess (``python -m segkit.recipe._trainings_engines``) with its own
  ``CUDA_VISIBLE_DEVICES``;
- ``engine="ray"``: one Ray task per training (``num_gpus=gpus_per_task``) on the cluster that
  ``RAY_ADDRESS`` names, or on a local instance; Ray places them. The cluster's nodes must see
  the task's folders at the same paths (a shared file system).

Item-level resume: a task's ``work_dir`` holds ``task.json`` (the task and its hash, written
when it starts) and, when it is done, ``result.json`` (the hash and the result, written
atomically). A rerun skips a task whose ``result.json`` has the same hash, continues an
unfinished one from its last checkpoint (``train(resume=True)``), and starts afresh (the
folder emptied) when the task changed. The hash covers the task's fields (``work_dir`` aside),
the config's text (with its bases), the classes file and split files' contents, and the names,
sizes and modification times of the files in the images and mask folders.

mmseg's own output goes to ``work_dir/train.log``; progress shows as a bar per training
(:class:`segkit.mmseg.progress.ProgressBarHook`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import DataError, InputError, SegkitError
from ..io.atomic import write_json
from ._train_options import task_options

ENGINES = ("local", "ray")
RESULT_FILE = "result.json"
TASK_FILE = "task.json"
LOG_FILE = "train.log"


class TrainingError(SegkitError, RuntimeError):
    """One or more trainings failed; the message names each task and its error, and points to
    its log file."""


@dataclasses.dataclass(frozen=True)
class TrainTask:
    """One training: a config, a fold of a dataset, a mask variant, a seed.

    ``pretrained``: ``"none"`` starts the backbone from random weights, a path loads that
    file (a local file in mmseg's key format), ``"config"`` keeps what the config says.
    ``epochs``: None keeps the config's ``max_epochs``. ``cfg_options``: extra ``(key, value)``
    pairs merged last (mmengine's dotted keys).
    """

    name: str                 #: e.g. "swin_cpu_resampled_s0_fold1"
    config: str               #: path of an mmseg config
    work_dir: str
    data_root: str            #: holds images/, <train_masks>/, <val_masks>/, splits/fold<k>/
    fold: int
    train_masks: str          #: mask folder under data_root used for training
    val_masks: str = "masks"  #: mask folder under data_root used for validation
    classes_file: str = ""    #: json class table (segkit.mmseg.read_class_table forms)
    seed: int = 0
    epochs: int | None = None
    ignore_index: int = 255
    cfg_options: tuple = ()   #: extra (key, value) pairs merged last
    pretrained: str = "none"  #: "none", "config" or a local weights file


# ---- hashing --------------------------------------------------------------------------------
def _folder_identity(folder: Path) -> list:
    if not folder.is_dir():
        return [str(folder), None]
    entries = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if name.startswith("."):  # temporaries of atomic writes, hidden files
                continue
            st = os.stat(os.path.join(root, name))
            entries.append((os.path.relpath(os.path.join(root, name), folder), st.st_size,
                            st.st_mtime_ns))
    return entries


def _file_bytes(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _config_text(config: str) -> str:
    from mmengine.config import Config

    try:
        return Config.fromfile(config, import_custom_modules=False).text
    except FileNotFoundError as exc:
        raise InputError(f"config {config!r}: file not found") from exc


def task_hash(task: TrainTask) -> str:
    """The identity of what `task` trains (module docstring): equal hashes, equal trainings."""
    check_task(task)
    fields = dataclasses.asdict(task)
    fields.pop("work_dir")
    fields["cfg_options"] = [list(kv) for kv in task.cfg_options]
    root = Path(task.data_root)
    split = root / "splits" / f"fold{task.fold}"
    ident = {
        "task": fields,
        "config": _config_text(task.config),
        "classes_file": _file_bytes(Path(task.classes_file)) if task.classes_file else None,
        "splits": [_file_bytes(split / "train.txt"), _file_bytes(split / "val.txt")],
        "images": _folder_identity(root / "images"),
        "masks": [_folder_identity(root / m) for m in sorted({task.train_masks,
                                                               task.val_masks})],
    }
    if task.pretrained not in ("none", "config"):
        p = Path(task.pretrained)
        ident["pretrained"] = [p.stat().st_size, p.stat().st_mtime_ns] if p.is_file() else None
    text = json.dumps(ident, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def check_task(task: TrainTask) -> None:
    """Clear errors for a task's arguments before anything runs."""
    if not isinstance(task, TrainTask):
        raise InputError(f"tasks must be TrainTask objects; got {type(task).__name__}")
    for name in ("name", "config", "work_dir", "data_root", "train_masks", "val_masks"):
        if not isinstance(getattr(task, name), str) or not getattr(task, name):
            raise InputError(f"task {task.name!r}: {name} must be a non-empty string; got "
                             f"{getattr(task, name)!r}")
    for name in ("fold", "seed", "ignore_index"):
        v = getattr(task, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise InputError(f"task {task.name!r}: {name} must be a non-negative int; got {v!r}")
    if task.epochs is not None and (isinstance(task.epochs, bool)
                                    or not isinstance(task.epochs, int) or task.epochs < 1):
        raise InputError(f"task {task.name!r}: epochs must be a positive int or None; got "
                         f"{task.epochs!r}")
    if not all(isinstance(kv, tuple) and len(kv) == 2 for kv in task.cfg_options):
        raise InputError(f"task {task.name!r}: cfg_options must be (key, value) pairs; got "
                         f"{task.cfg_options!r}")
    if not os.path.isfile(task.config):
        raise InputError(f"task {task.name!r}: config {task.config!r} not found")
    if not os.path.isdir(task.data_root):
        raise InputError(f"task {task.name!r}: data_root {task.data_root!r} is not a folder")
    if task.classes_file and not os.path.isfile(task.classes_file):
        raise InputError(f"task {task.name!r}: classes_file {task.classes_file!r} not found")


# ---- one training ---------------------------------------------------------------------------
class _LogSink(io.TextIOBase):
    """A stdout stand-in that appends to a log file; after close it still takes writes (the
    loggers mmengine made keep it) by reopening the file for each one."""

    def __init__(self, path: Path):
        self.path = path
        self.file = open(path, "a", encoding="utf-8")

    def write(self, text: str) -> int:
        if self.file is not None:
            return self.file.write(text)
        with open(self.path, "a", encoding="utf-8") as f:
            return f.write(text)

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


@contextlib.contextmanager
def quiet_mmseg(log_file: Path):
    """mmseg's and mmengine's chatter (prints, INFO logs, warnings) goes to `log_file`;
    progress bars (stderr) and errors still show."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sink = _LogSink(log_file)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        sink.close()
        logging.getLogger("mmengine").setLevel(logging.ERROR)


def read_curve(work_dir: str | os.PathLike) -> list[list]:
    """[[epoch, mIoU in 0..1], ...] from mmengine's ``*/vis_data/scalars.json`` of every run in
    `work_dir` (a resumed training has several; the latest value of an epoch wins)."""
    by_epoch: dict[int, float] = {}
    for path in sorted(Path(work_dir).glob("*/vis_data/scalars.json")):
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if "mIoU" in row and "step" in row:
                by_epoch[int(row["step"])] = float(row["mIoU"]) / 100
    return [[e, by_epoch[e]] for e in sorted(by_epoch)]


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def finished(task: TrainTask, digest: str) -> dict | None:
    """The stored result of `task` when its work_dir holds one for this hash, else None."""
    done = _read_json(Path(task.work_dir) / RESULT_FILE)
    if done and done.get("hash") == digest and isinstance(done.get("result"), dict):
        ckpt = done["result"].get("checkpoint")
        if ckpt and os.path.isfile(ckpt):
            return {**done["result"], "reused": True}
    return None


def check_work_dir(task: TrainTask) -> None:
    """A work_dir must be new, empty, or segkit's own (it holds task.json or result.json): a
    changed task empties it, so a folder of someone else's files is refused."""
    work = Path(task.work_dir)
    if work.is_file():
        raise DataError(f"task {task.name!r}: work_dir {os.fspath(work)!r} is a file")
    if work.is_dir() and any(work.iterdir()) and not (work / TASK_FILE).is_file() \
            and not (work / RESULT_FILE).is_file():
        raise DataError(f"task {task.name!r}: work_dir {os.fspath(work)!r} holds files "
                        f"that no segkit training wrote (no {TASK_FILE}); give the task "
                        "an empty or new folder")


def _prepare(task: TrainTask, digest: str) -> tuple[bool, float]:
    """Make work_dir ready for `task`: (resume?, seconds spent by earlier attempts)."""
    work = Path(task.work_dir)
    record = _read_json(work / TASK_FILE) if work.is_dir() else None
    if record is not None and record.get("hash") == digest:
        resume = (work / "last_checkpoint").is_file()
        return resume, float(record.get("seconds", 0.0)) if resume else 0.0
    check_work_dir(task)
    if work.is_dir():
        shutil.rmtree(work)  # a changed task: its old model and logs go
    work.mkdir(parents=True, exist_ok=True)
    write_json(work / TASK_FILE, {"hash": digest, "task": dataclasses.asdict(task),
                                  "seconds": 0.0})
    return False, 0.0


def train_task(task: TrainTask, digest: str | None = None, *, progress: bool = False) -> dict:
    """Run one training in this process (or take its stored result); see :func:`run_trainings`
    for the result's keys."""
    digest = digest or task_hash(task)
    done = finished(task, digest)
    if done is not None:
        return done
    resume, earlier = _prepare(task, digest)
    work = Path(task.work_dir)
    t0, started = time.perf_counter(), time.time()
    try:
        with quiet_mmseg(work / LOG_FILE):
            from mmengine.config import Config

            from .. import mmseg as smm

            cfg = Config.fromfile(task.config)
            opts = task_options(task, cfg, progress=progress)
            pretrained = None if task.pretrained == "config" else task.pretrained
            res = smm.train(task.config, work_dir=task.work_dir, cfg_options=opts,
                            fold=task.fold, data_root=task.data_root, pretrained=pretrained,
                            resume=resume)
    finally:
        record = _read_json(work / TASK_FILE) or {"hash": digest,
                                                   "task": dataclasses.asdict(task)}
        record["seconds"] = earlier + time.perf_counter() - t0
        record.setdefault("attempts", []).append([started, time.time()])  # wall clock
        write_json(work / TASK_FILE, record)
    if res.last_checkpoint is None:
        raise TrainingError(f"task {task.name!r}: training left no checkpoint in {work}")
    curve = read_curve(work)
    best = res.best_checkpoint
    if best is None or not best.is_file():
        found = sorted(work.glob("best_*.pth"), key=os.path.getmtime)
        best = found[-1] if found else None
    if best is not None:
        ckpt, miou = best, max((m for _, m in curve), default=None)
    else:
        ckpt, miou = res.last_checkpoint, (curve[-1][1] if curve else None)
    result = {"checkpoint": os.fspath(ckpt), "last_checkpoint": os.fspath(res.last_checkpoint),
              "val_mIoU": miou, "curve": curve, "seconds": round(record["seconds"], 2),
              "resumed": resume, "reused": False}
    write_json(work / RESULT_FILE, {"hash": digest, "task": dataclasses.asdict(task),
                                    "result": result})
    return result


# ---- many trainings -------------------------------------------------------------------------
def _fail(failures: dict[str, str], tasks: dict[str, TrainTask]) -> TrainingError:
    logs = {name: Path(tasks[name].work_dir) / LOG_FILE for name in failures}
    lines = [f"{name}: {err}" + (f" (log: {logs[name]})" if logs[name].is_file() else "")
             for name, err in failures.items()]
    return TrainingError(f"{len(failures)} training(s) failed: " + "; ".join(lines))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _run_local(todo, digests, progress, log, results) -> None:
    for task in todo:
        try:
            results[task.name] = train_task(task, digests[task.name], progress=progress)
        except Exception as exc:  # noqa: BLE001 - re-raised naming the task
            raise _fail({task.name: _describe(exc)}, {task.name: task}) from exc
        _report(task, results[task.name], log)


def _miou_text(result: dict) -> str:
    miou = result.get("val_mIoU")
    return "validation mIoU " + ("n/a" if miou is None else f"{miou:.3f}")


def _report(task: TrainTask, result: dict, log) -> None:
    if log:
        how = " (resumed from its last checkpoint)" if result.get("resumed") else ""
        log(f"{task.name}: {_miou_text(result)} in {result['seconds']:.0f} s{how}")


def visible_gpus() -> int:
    """How many CUDA GPUs torch sees here (0 without torch's CUDA)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is there with the mmseg extra
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def run_trainings(tasks: Iterable[TrainTask], *, engine: str = "local",
                  gpus_per_task: float | None = None, progress: bool = True,
                  log: Callable[[str], Any] | None = print) -> dict[str, dict]:
    """Run independent trainings, skipping finished ones and resuming unfinished ones.

    Parameters
    ----------
    tasks : iterable of TrainTask
        Names must be unique, and so must work_dirs.
    engine : {"local", "ray"}
        ``"local"``: one after another in this process, or one per GPU (subprocesses with
        ``CUDA_VISIBLE_DEVICES``) when torch sees several GPUs. ``"ray"``: Ray tasks on the
        cluster ``RAY_ADDRESS`` names or a local instance (:func:`segkit.jobs.engine.ray_init`).
    gpus_per_task : float, optional
        Ray's ``num_gpus`` per task (None: 0, CPU trainings). The local engine takes None or 1.
    progress : bool
        A progress bar per training (local, one at a time) or over the trainings (ray, GPUs).
    log : callable, optional
        Gets one line per finished or skipped training.

    Returns
    -------
    dict
        name -> ``{"checkpoint": str (the best checkpoint when the config keeps one, else the
        last), "last_checkpoint": str, "val_mIoU": float or None (0..1, of that checkpoint),
        "curve": [[epoch, mIoU], ...], "seconds": float (every attempt but those killed
        outright), "resumed": bool,
        "reused": bool (skipped: the stored result)}``.

    Raises
    ------
    InputError
        A bad engine, gpus_per_task, task field, duplicate name or work_dir.
    TrainingError
        Trainings failed: in this process the first failure stops the run; with Ray or several
        GPUs the running ones finish first. Finished trainings keep their results.
    """
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {', '.join(map(repr, ENGINES))}; got {engine!r}")
    if gpus_per_task is not None and (isinstance(gpus_per_task, bool)
                                      or not isinstance(gpus_per_task, (int, float))
                                      or gpus_per_task <= 0):
        raise InputError(f"gpus_per_task must be a positive number or None; got "
                         f"{gpus_per_task!r}")
    if engine == "local" and gpus_per_task not in (None, 1):
        raise InputError(f"gpus_per_task={gpus_per_task!r}: the local engine runs one training "
                         "per GPU (None or 1); use engine='ray' for other shares")
    tasks = list(tasks)
    for key in ("name", "work_dir"):
        values = [getattr(t, key) if isinstance(t, TrainTask) else None for t in tasks]
        dup = sorted({v for v in values if v is not None and values.count(v) > 1})
        if dup:
            raise InputError(f"tasks share a {key}: {dup[0]!r}; each training needs its own")
    digests = {t.name: task_hash(t) for t in tasks}
    results: dict[str, dict] = {}
    todo = []
    for t in tasks:
        done = finished(t, digests[t.name])
        if done is not None:
            results[t.name] = done
            if log:
                log(f"{t.name}: done before ({_miou_text(done)}), skipped")
        else:
            check_work_dir(t)
            todo.append(t)
    if todo:
        from . import _trainings_engines as engines

        if engine == "ray":
            engines.run_ray(todo, digests, gpus_per_task, progress, log, results)
        elif visible_gpus() > 1:  # one per GPU: its GPU placement untested on a CPU machine
            engines.run_gpus(todo, digests, visible_gpus(), log, results)
        else:
            _run_local(todo, digests, progress, log, results)
    return {t.name: results[t.name] for t in tasks}

