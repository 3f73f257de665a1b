"""`segkit.mmseg.infer`: class probabilities of a folder of images into a confidence store."""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from mmengine.model.utils import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmseg.registry import MODELS
from tqdm import tqdm

from ..io import images as _images
from ..io.images import IMAGE_SUFFIXES  # noqa: F401 (re-exported)
from ..io.names import flatten_name
from ..io.store import ConfidenceStore
from .datasets import dataset_classes
from .probabilities import SegkitTTAModel, plain, write_predictions
from .runner import load_config


def list_images(images: str | os.PathLike) -> dict[str, str]:
    """{stem: path} for every image below `images` (recursively, sorted by path). The stem is
    the path relative to `images`, flattened (``batch_01_vt/0002.jpg`` -> ``batch_01_vt+0002``),
    the names `segkit masks` gives masks."""
    return {stem: str(path) for stem, path in _images.list_images(images).items()}


def read_split(path: str | os.PathLike) -> list[str]:
    """The stems of a split file (one per line, blank lines and '#' comments skipped)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"split file {os.fspath(path)!r} does not exist")
    stems = [line.strip() for line in p.read_text().splitlines()]
    stems = [s for s in stems if s and not s.startswith("#")]
    if not stems:
        raise ValueError(f"split file {os.fspath(path)!r} lists no stems")
    return stems


def select_stems(found: dict[str, str], stems: Sequence[str] | None,
                 split: str | os.PathLike | None) -> dict[str, str]:
    """`found` ({stem: path}) restricted to `stems` or a split file's stems (None: all)."""
    if stems is not None and split is not None:
        raise ValueError("give stems or split, not both")
    if split is not None:
        stems = read_split(split)
    if stems is None:
        return found
    if isinstance(stems, (str, bytes)):
        raise TypeError(f"stems must be a sequence of stems; got one string {stems!r}")
    wanted = [flatten_name(str(s)) if "/" in str(s) else str(s) for s in stems]
    if len(set(wanted)) != len(wanted):
        dup = next(s for s in wanted if wanted.count(s) > 1)
        raise ValueError(f"stems lists {dup!r} twice")
    lacking = [s for s in wanted if s not in found]
    if lacking:
        raise ValueError(f"{len(lacking)} of the {len(wanted)} stems asked for have no image "
                         f"(e.g. {', '.join(lacking[:3])}); stems are paths below the images "
                         "folder, flattened as dir+name")
    return {s: found[s] for s in wanted}


def _without_annotations(pipeline: Sequence[Any]) -> list:
    """The pipeline minus LoadAnnotations, also inside TestTimeAug's transform lists."""
    out = []
    for t in pipeline:
        t = copy.deepcopy(t)
        if t.get("type") == "LoadAnnotations":
            continue
        if t.get("type") == "TestTimeAug":
            t["transforms"] = [s for s in ([x for x in group if x.get("type") !=
                                            "LoadAnnotations"] for group in t["transforms"])
                               if s]
        out.append(t)
    return out


def build_model(cfg: Config, checkpoint: str | os.PathLike, device: str) -> torch.nn.Module:
    """The config's segmentor with the checkpoint's weights (weights-only loading), in eval mode
    on `device`; ``model.dataset_meta`` from the checkpoint or else the config's dataset."""
    init_default_scope(cfg.get("default_scope", "mmseg"))
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.pretrained = None
    model_cfg.train_cfg = None
    if "init_cfg" in model_cfg.get("backbone", {}):
        model_cfg.backbone.init_cfg = None  # the checkpoint holds every weight
    model = revert_sync_batchnorm(MODELS.build(model_cfg))
    state = load_checkpoint(model, os.fspath(checkpoint), map_location="cpu")
    meta = (state.get("meta") or {}).get("dataset_meta") if isinstance(state, Mapping) else None
    if not meta or not meta.get("classes"):
        classes = dataset_classes(cfg.test_dataloader.dataset) if cfg.get("test_dataloader") \
            else None
        if not classes:
            raise ValueError(f"checkpoint {checkpoint!r} has no dataset_meta and the config's "
                             "test dataset names no classes; cannot label the store")
        meta = {"classes": list(classes)}
    num_out = getattr(model.decode_head, "out_channels", None)
    if num_out is not None and num_out != len(meta["classes"]):
        raise ValueError(f"model predicts {num_out} classes but the checkpoint/config names "
                         f"{len(meta['classes'])}: {meta['classes']}")
    model.dataset_meta = dict(meta)
    model.cfg = cfg
    return model.to(device).eval()


class _Images(torch.utils.data.Dataset):
    def __init__(self, items: list[tuple[str, str]], pipeline: Compose):
        self.items, self.pipeline = items, pipeline

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        stem, path = self.items[i]
        return stem, self.pipeline(dict(img_path=path, stem=stem))


def _shape_key(sample: dict) -> tuple:
    inputs = sample["inputs"]
    if isinstance(inputs, (list, tuple)):  # TestTimeAug: one tensor per view
        return tuple(tuple(x.shape) for x in inputs)
    return tuple(inputs.shape)


def infer(config: str | os.PathLike | Config, checkpoint: str | os.PathLike,
          images: str | os.PathLike, out: str | os.PathLike, *, tta: bool = False,
          batch_size: int = 1, device: str | None = None, workers: int = 2,
          cfg_options: Mapping | Sequence[str] | None = None, model_name: str | None = None,
          resume: bool = True, progress: bool = True, stems: Sequence[str] | None = None,
          split: str | os.PathLike | None = None) -> ConfidenceStore:
    """Class probabilities of every image under `images`, into the confidence store `out`.

    Each image's probabilities are ``softmax(logits)`` (one softmax) at the image's own size,
    or with `tta` the mean of the softmaxes of the config's ``tta_pipeline`` views, stored as
    float16 (C, H, W) under the image's stem (path relative to `images`, flattened as
    ``dir+name``). With `resume`, images already in the store are skipped.

    Parameters
    ----------
    config, checkpoint : paths
        The training config and a checkpoint it produced (loaded weights-only).
    images : path
        Folder of images (searched recursively).
    out : path
        The store's folder (created; reopened if its classes match).
    tta : bool
        Test-time augmentation with the config's ``tta_pipeline`` (scales x flips).
    batch_size : int
        Images per forward pass (images whose inputs differ in size go in separate batches).
    device : str, optional
        "cuda", "cuda:1", "cpu"; default cuda when available.
    workers : int
        Data-loading processes (0: load in this process).
    cfg_options, model_name, progress
        Config overrides; the model name recorded in meta.json (default: the config's name);
        show a progress bar.
    stems : sequence of str, optional
        Infer only these images (stems as above, e.g. ``batch_01_vt+0002``); every one must
        have an image. Out-of-fold inference: fold k's model on fold k's validation stems.
    split : path, optional
        A split file of ``segkit kfold`` (``splits/fold0/val.txt``: one stem per line) whose
        stems to infer (instead of `stems`).

    Returns
    -------
    ConfidenceStore
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be a non-negative int; got {workers!r}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    cfg = load_config(config, cfg_options=cfg_options)
    key = "tta_pipeline" if tta else "test_pipeline"
    if not cfg.get(key):
        raise ValueError(f"config {cfg.filename} has no {key}" +
                         (" (needed for tta=True)" if tta else ""))
    found = list_images(images)
    found = select_stems(found, stems, split)
    model = build_model(cfg, checkpoint, device)
    classes = list(model.dataset_meta["classes"])
    pipeline_cfg = _without_annotations(cfg[key])
    tta_meta = plain(pipeline_cfg) if tta else None
    store = ConfidenceStore.create(
        out, classes, model=model_name or Path(cfg.filename or "model").stem,
        config=os.fspath(cfg.filename) if cfg.filename else None,
        tta=tta_meta, checkpoint=os.fspath(checkpoint))
    # an existing store must hold this model's probabilities, or resuming would mix models
    theirs = (store.meta.get("checkpoint"), store.meta.get("tta"))
    if theirs != (os.fspath(checkpoint), tta_meta):
        raise ValueError(f"store {os.fspath(out)!r} holds probabilities of checkpoint "
                         f"{theirs[0]!r} (tta {'on' if theirs[1] else 'off'}), not of "
                         f"{os.fspath(checkpoint)!r} (tta {'on' if tta else 'off'}); write to "
                         "another --out")
    todo = [(s, found[s]) for s in (store.missing(found) if resume else found)]
    runner_model: Any = MODELS.build(dict(type="SegkitTTAModel", module=model)) if tta else model
    if tta:
        assert isinstance(runner_model, SegkitTTAModel)
    loader = torch.utils.data.DataLoader(
        _Images(todo, Compose(pipeline_cfg)), batch_size=None, shuffle=False,
        num_workers=min(workers, len(todo)), collate_fn=lambda x: x)
    pending: dict[tuple, list[tuple[str, dict]]] = {}

    def flush(key: tuple) -> None:
        group = pending.pop(key)
        with torch.no_grad():
            outputs = runner_model.test_step(pseudo_collate([data for _, data in group]))
        for sample, (stem, _) in zip(outputs, group):
            sample.set_metainfo({"stem": stem})
        write_predictions(store, outputs)
        bar.update(len(group))

    with tqdm(total=len(todo), desc="infer", unit="img", disable=not progress) as bar:
        for stem, data in loader:
            k = _shape_key(data)
            pending.setdefault(k, []).append((stem, data))
            if len(pending[k]) >= batch_size:
                flush(k)
        for k in list(pending):
            flush(k)
    return store
