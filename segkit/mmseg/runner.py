"""`segkit.mmseg.train`: a config, a few overrides, mmengine's Runner."""
from __future__ import annotations

import copy
import dataclasses
import os
import os.path as osp
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from mmengine.config import Config, DictAction
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from ..errors import DataError, InputError, UnavailableError
from . import checkpoint as ckpt

DATALOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")
LAUNCHERS = ("none", "pytorch", "slurm", "mpi")


def parse_cfg_options(items: Sequence[str]) -> dict:
    """['a.b=1', 'c=[1,2]'] -> {'a.b': 1, 'c': [1, 2]}, with mmengine's own value parsing
    (the same as tools/train.py's --cfg-options)."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"cfg option {item!r} is not KEY=VALUE")
        key, value = item.split("=", 1)
        if not key:
            raise ValueError(f"cfg option {item!r} has an empty key")
        out[key] = DictAction._parse_iterable(value)
    return out


def _datasets(cfg: Config) -> Iterator[dict]:
    """Every dataset dict under the dataloaders, through wrappers (dataset/datasets)."""
    seen: set[int] = set()

    def walk(d: Any) -> Iterator[dict]:
        if isinstance(d, Mapping) and id(d) not in seen:
            seen.add(id(d))
            yield d
            if "dataset" in d:
                yield from walk(d["dataset"])
            for sub in d.get("datasets", None) or []:
                yield from walk(sub)

    for key in DATALOADERS:
        loader = cfg.get(key)
        if isinstance(loader, Mapping) and "dataset" in loader:
            yield from walk(loader["dataset"])


def load_config(config: str | os.PathLike | Config, *, cfg_options: Mapping | Sequence[str] |
                None = None, fold: int | None = None, data_root: str | None = None,
                pretrained: str | None = None, work_dir: str | None = None,
                amp: bool = False, format_config: bool = False) -> Config:
    """Read a config and apply segkit's overrides.

    `fold` sets ``fold`` (which fills ``{fold}`` in split paths) in every dataset of the three
    dataloaders and the top-level ``fold``; `data_root` sets every dataset's ``data_root``;
    `pretrained` a checkpoint path for the backbone, or ``"none"`` for random initial weights;
    `amp` switches to mmengine's AmpOptimWrapper (CUDA only). `cfg_options` (dict or
    ``["key=value", ...]``) are merged last, as tools/train.py does. `format_config`: let
    mmengine format the config text it logs and stores in checkpoints with yapf (slow).
    """
    cfg = copy.deepcopy(config) if isinstance(config, Config) else read_config(config)
    if not format_config:
        # mmengine re-formats the whole config with yapf at every checkpoint and dump (about
        # 0.5 s each; most of a CPU test run). The plain text is the same Python, unformatted.
        # (Config.fromfile drops its own format_python_code flag for .py files.)
        cfg = Config(cfg.to_dict(), cfg_text=cfg.text, filename=cfg.filename,
                     env_variables=cfg.env_variables, format_python_code=False)
    if fold is not None:
        if isinstance(fold, bool) or not isinstance(fold, int) or fold < 0:
            raise ValueError(f"fold must be a non-negative int; got {fold!r}")
        cfg.fold = fold
        touched = 0
        for ds in _datasets(cfg):
            if "fold" in ds or "{fold}" in str(ds.get("ann_file", "")):
                ds["fold"] = fold
                touched += 1
        if not touched:
            raise ValueError(f"fold={fold}: no dataset in {cfg.filename} takes a fold "
                             "(its ann_file has no {fold} placeholder)")
    if data_root is not None:
        for ds in _datasets(cfg):
            if "data_root" in ds:
                ds["data_root"] = os.fspath(data_root)
    if pretrained is not None:
        backbone = cfg.model.backbone
        if str(pretrained).lower() in ("", "none"):
            backbone.init_cfg = None
        else:
            backbone.init_cfg = dict(type="Pretrained", checkpoint=os.fspath(pretrained))
        cfg.model.pretrained = None
    if amp:
        if cfg.optim_wrapper.get("type", "OptimWrapper") == "OptimWrapper":
            cfg.optim_wrapper.type = "AmpOptimWrapper"
            cfg.optim_wrapper.loss_scale = "dynamic"
    if work_dir is not None:
        cfg.work_dir = os.fspath(work_dir)
    if cfg_options:
        opts = parse_cfg_options(cfg_options) if not isinstance(cfg_options, Mapping) \
            else dict(cfg_options)
        try:
            cfg.merge_from_dict(opts)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            what = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            raise InputError(f"cfg options {', '.join(f'{k}={v!r}' for k, v in opts.items())}: "
                             f"mmengine refuses them for {cfg.filename}: {what}") from exc
    return cfg


def read_config(path: str | os.PathLike) -> Config:
    """mmengine's Config of the file `path`, or one line naming the file and the problem: a
    syntax error (with its line), bytes that are not text, no ``model``."""
    path = os.fspath(path)
    try:
        cfg = Config.fromfile(path)
    except SyntaxError as exc:
        raise DataError(f"{path}: not a valid config: {exc.msg} (line {exc.lineno})") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a config (not UTF-8 text: {exc.reason} at byte "
                        f"{exc.start})") from exc
    if not isinstance(cfg.get("model"), Mapping):
        got = "none" if cfg.get("model") is None else type(cfg.get("model")).__name__
        raise DataError(f"{path}: the config defines no model (model = dict(type=..., ...) "
                        f"as mmseg's configs do; got {got})")
    return cfg


def unique_visualizer(cfg: Config) -> None:
    """Give this run's visualizer a name of its own.

    mmengine keeps one visualizer per name in the process and hands an existing one back, and
    mmseg's configs name it ``'visualizer'``: a second training in the same process (the demo,
    a notebook, a sweep) would get the first one's, whose folder is the first run's, and write
    its loss curves (``vis_data/scalars.json``) there."""
    vis = cfg.get("visualizer")
    if isinstance(vis, dict):
        vis["name"] = f"segkit_{uuid.uuid4().hex}"


def check_pretrained(cfg: Config) -> str | None:
    """The backbone's pretrained file, checked to exist and to match the backbone's keys (a
    Swin checkpoint in the original repository's format loads nothing under mmseg's
    strict=False, silently: this catches it). None when the backbone starts from random."""
    init_cfg = cfg.model.backbone.get("init_cfg") or {}
    path = init_cfg.get("checkpoint") if init_cfg.get("type") == "Pretrained" else None
    if path is None and isinstance(cfg.model.get("pretrained"), str):
        path = cfg.model.pretrained
    if path is None:
        return None
    if "://" in str(path):
        raise ValueError(f"pretrained weights {path!r}: segkit downloads nothing; give a local "
                         "file (--pretrained PATH)")
    if not osp.isfile(path):
        raise FileNotFoundError(
            f"pretrained weights {path!r} not found. Give the ImageNet-22K Swin file in mmseg's "
            "format with --pretrained PATH (or --cfg-options "
            "model.backbone.init_cfg.checkpoint=PATH), or --pretrained none to start from "
            "random weights")
    state = ckpt.load(path)
    if isinstance(state, Mapping):
        state = state.get("state_dict", state.get("model", state))
    keys = {k[len("backbone."):] if k.startswith("backbone.") else k for k in state}
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    init_default_scope(cfg.get("default_scope", "mmseg"))
    backbone_cfg = cfg.model.backbone.copy()
    backbone_cfg.init_cfg = None
    wanted = set(MODELS.build(backbone_cfg).state_dict())
    matched = len(wanted & keys) / max(1, len(wanted))
    if matched < 0.9:
        sample = sorted(keys)[:3]
        raise ValueError(
            f"pretrained weights {path!r} match only {matched:.0%} of the backbone's "
            f"{len(wanted)} tensors (file keys look like {sample}). A Swin file from the "
            "original repository must be converted to mmseg's names first (mmseg's "
            "tools/model_converters/swin2mmseg.py)")
    return os.fspath(path)


class _LastMetrics(Hook):
    """Keeps the latest validation metrics for the caller."""

    priority = "VERY_LOW"

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}
        self.history: list[dict[str, float]] = []

    def after_val_epoch(self, runner, metrics=None) -> None:
        if metrics:
            self.metrics = {k: float(v) for k, v in metrics.items()}
            self.history.append(dict(self.metrics))


@dataclasses.dataclass
class TrainResult:
    work_dir: Path
    metrics: dict[str, float]          #: the last validation's metrics (e.g. {'mIoU': 41.2})
    history: list[dict[str, float]]    #: every validation's metrics, in order
    best_checkpoint: Path | None       #: the checkpoint with the best mIoU, when kept
    last_checkpoint: Path | None       #: the latest checkpoint (what --resume continues)
    #: a CRFEncoderDecoder's learned ConvCRF parameters at the end (ConvCRF.parameters_now())
    crf: dict | None = None


def default_launcher() -> str:
    return "pytorch" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else "none"


def _sync_bn_to_bn(node: Any) -> int:
    """Turns every ``norm_cfg`` of type SyncBN under `node` into BN; returns how many."""
    changed = 0
    if isinstance(node, Mapping):
        if node.get("type") in ("SyncBN", "MMSyncBN"):
            node["type"] = "BN"
            changed += 1
        for value in node.values():
            changed += _sync_bn_to_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            changed += _sync_bn_to_bn(value)
    return changed


def setup_cpu_distributed(cfg: Config) -> bool:
    """Prepare a ``launcher="pytorch"`` run (torchrun) on a machine without CUDA.

    mmengine's pytorch launcher calls ``torch.cuda.set_device`` (an AttributeError on a
    CPU-only torch) and wraps the model in DDP with ``device_ids=[LOCAL_RANK]`` (refused for a
    CPU model). So on the CPU segkit initialises the process group itself, with the config's
    ``env_cfg.dist_cfg`` backend (which must be gloo: NCCL needs GPUs), from torchrun's
    environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT); the Runner then finds it
    initialised and skips its launcher. The model wrapper gets ``device_ids=None`` and SyncBN
    (GPU only) becomes BN. With CUDA nothing changes: mmengine's launcher runs as before.
    Returns True when it initialised the process group (the caller destroys it).
    """
    import torch.distributed as dist

    if torch.cuda.is_available():
        return False
    if not dist.is_available():
        raise UnavailableError(f"this torch ({torch.__version__}) has no torch.distributed: "
                               "distributed training (launcher pytorch) cannot run")
    missing = [k for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
               if k not in os.environ]
    if missing:
        raise InputError(f"launcher 'pytorch' reads {', '.join(missing)} from the environment "
                         "(torchrun sets them); run under torchrun --nproc_per_node N, or use "
                         "--launcher none")
    if not cfg.get("env_cfg"):
        cfg.env_cfg = {}
    if not cfg.env_cfg.get("dist_cfg"):
        cfg.env_cfg.dist_cfg = {}
    dist_cfg = cfg.env_cfg.dist_cfg
    backend = dist_cfg.get("backend") or "gloo"
    dist_cfg.backend = backend
    if backend != "gloo":
        raise InputError(f"env_cfg.dist_cfg.backend={backend!r} needs CUDA GPUs, and this torch "
                         f"({torch.__version__}) sees none: train on the CPU with "
                         "--cfg-options env_cfg.dist_cfg.backend=gloo")
    wrapper = cfg.get("model_wrapper_cfg") or dict(
        type="MMDistributedDataParallel", broadcast_buffers=False,
        find_unused_parameters=cfg.get("find_unused_parameters", False))
    wrapper.setdefault("device_ids", None)  # mmengine's default [LOCAL_RANK] is for GPUs
    cfg.model_wrapper_cfg = wrapper
    _sync_bn_to_bn(cfg.model)
    if dist.is_initialized():
        return False
    kwargs = {k: v for k, v in dist_cfg.items() if k != "backend"}
    dist.init_process_group(backend=backend, rank=int(os.environ["RANK"]),
                            world_size=int(os.environ["WORLD_SIZE"]), **kwargs)
    return True


def train(config: str | os.PathLike | Config, *, work_dir: str | os.PathLike | None = None,
          cfg_options: Mapping | Sequence[str] | None = None, fold: int | None = None,
          data_root: str | os.PathLike | None = None, pretrained: str | None = None,
          amp: bool = False, resume: bool = False, launcher: str | None = None,
          format_config: bool = False) -> TrainResult:
    """Train a model from an mmseg config with mmengine's Runner.

    Parameters
    ----------
    config : path or mmengine Config
        e.g. ``configs/upernet_swin-b_trash.py``.
    work_dir : path, optional
        Logs and checkpoints (default ``work_dirs/<config name>[_fold<K>]``).
    cfg_options : dict or list of "key=value", optional
        Overrides merged last, as tools/train.py's ``--cfg-options``.
    fold : int, optional
        Fold K: the datasets read ``splits/fold{K}/...`` (see :func:`load_config`).
    data_root : path, optional
        Replaces every dataset's ``data_root``.
    pretrained : str, optional
        Backbone weights (a local file; nothing is downloaded) or ``"none"``.
    amp : bool
        Mixed precision (mmengine's AmpOptimWrapper; needs CUDA).
    resume : bool
        Continue from the latest checkpoint in `work_dir`.
    launcher : {"none", "pytorch", "slurm", "mpi"}, optional
        Distributed launcher; default "pytorch" under torchrun (WORLD_SIZE > 1), else "none".
    format_config : bool
        yapf-format the config text in logs and checkpoints (mmengine's default; ~0.5 s per
        checkpoint). Off: the same config, unformatted.

    Returns
    -------
    TrainResult
    """
    from mmengine.runner import Runner

    launcher = launcher or default_launcher()
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {LAUNCHERS}; got {launcher!r}")
    if amp and not torch.cuda.is_available():
        raise ValueError("amp=True needs a CUDA GPU (mmengine's AmpOptimWrapper); this torch "
                         f"({torch.__version__}) sees none")
    cfg = load_config(config, cfg_options=cfg_options, fold=fold, data_root=data_root,
                      pretrained=pretrained, work_dir=work_dir, amp=amp,
                      format_config=format_config)
    if not cfg.get("work_dir"):
        name = Path(cfg.filename).stem if cfg.filename else "segkit"
        cfg.work_dir = osp.join("work_dirs", name + (f"_fold{fold}" if fold is not None else ""))
    cfg.launcher = launcher
    if resume:
        cfg.resume = True
    unique_visualizer(cfg)
    check_pretrained(cfg)
    own_group = setup_cpu_distributed(cfg) if launcher == "pytorch" else False
    try:
        runner = Runner.from_cfg(cfg)
        recorder = _LastMetrics()
        runner.register_hook(recorder)
        runner.train()
    finally:
        if own_group:
            import torch.distributed as dist

            dist.destroy_process_group()
    work = Path(runner.work_dir)
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    crf = model.crf.parameters_now() if getattr(getattr(model, "crf", None), "trainable",
                                                False) else None
    best = runner.message_hub.get_info("best_ckpt")
    last_file = work / "last_checkpoint"
    last = Path(last_file.read_text().strip()) if last_file.is_file() else None
    return TrainResult(work_dir=work, metrics=recorder.metrics, history=recorder.history,
                       best_checkpoint=Path(best) if best else None, last_checkpoint=last,
                       crf=crf)
