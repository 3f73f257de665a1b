"""Class probabilities out of mmseg: a TTA model that averages probabilities (not just labels),
and a hook that writes every test image's probabilities into a confidence store.

The original recipe patched mmseg to dump ``softmax(softmax(logits))`` into pickles. Here each
image's probabilities are ``softmax(logits)`` once, at the image's original size (mmseg resizes
the logits back bilinearly before this), or with test-time augmentation the mean of the views'
softmaxes, stored as float16 (C, H, W) in a :class:`segkit.io.store.ConfidenceStore`.
"""
from __future__ import annotations

import json
import os.path as osp
from typing import Any, Sequence

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.structures import PixelData
from mmseg.models import SegTTAModel
from mmseg.registry import HOOKS, MODELS
from mmseg.structures import SegDataSample

from ..io.names import flatten_name
from ..io.store import ConfidenceStore

#: floor for log(probability) when turning averaged probabilities back into logits
_TINY = torch.finfo(torch.float32).tiny


def sample_probabilities(sample: Any) -> torch.Tensor:
    """(C, H, W) float32 probabilities of one predicted SegDataSample: its ``seg_probs`` when a
    TTA model left them, else ``softmax(seg_logits)`` over classes (applied once)."""
    if "seg_probs" in sample:
        return sample.seg_probs.data.float()
    if "seg_logits" not in sample:
        raise KeyError("prediction has neither 'seg_probs' nor 'seg_logits'; the model's "
                       "predict() must keep its logits (mmseg's EncoderDecoder does)")
    logits = sample.seg_logits.data
    if logits.shape[0] < 2:
        raise ValueError(f"single-channel output (shape {tuple(logits.shape)}) is not a "
                         "class-probability map; segkit stores need out_channels >= 2")
    return logits.float().softmax(dim=0)


@MODELS.register_module()
class SegkitTTAModel(SegTTAModel):
    """mmseg's ``SegTTAModel``, keeping the averaged probabilities.

    mmseg's version averages the views' softmaxes to pick labels but leaves the last view's
    logits in the result. This one stores the mean as ``seg_probs`` (C, H, W) and, so that code
    reading ``seg_logits`` stays consistent, ``seg_logits = log(seg_probs)`` (softmax of it gives
    the mean back). The metainfo of the first view (``img_path``, ``stem``, ``ori_shape``) is kept.
    """

    def merge_preds(self, data_samples_list):
        merged = []
        for views in data_samples_list:
            probs = None
            for view in views:
                p = sample_probabilities(view)
                probs = p if probs is None else probs + p
            probs /= len(views)
            out = SegDataSample(metainfo=views[0].metainfo)
            out.set_data({"seg_probs": PixelData(data=probs),
                          "seg_logits": PixelData(data=probs.clamp_min(_TINY).log()),
                          "pred_sem_seg": PixelData(data=probs.argmax(dim=0, keepdim=True))})
            if "gt_sem_seg" in views[0]:
                out.gt_sem_seg = views[0].gt_sem_seg
            merged.append(out)
        return merged


def plain(obj: Any) -> Any:
    """A json-safe copy of config data (ConfigDicts, tuples), for meta.json."""
    return json.loads(json.dumps(obj, default=str))


def stem_for(metainfo: dict, img_root: str | None = None) -> str:
    """The store stem of one image: the dataset's ``stem`` when packed into the metainfo, else
    the image path relative to `img_root` flattened (``dir/name.jpg`` -> ``dir+name``), else the
    file name without its suffix."""
    if metainfo.get("stem"):
        return str(metainfo["stem"])
    path = metainfo.get("img_path")
    if not path:
        raise KeyError("prediction metainfo has neither 'stem' nor 'img_path'")
    if img_root:
        return flatten_name(osp.relpath(path, img_root).replace(osp.sep, "/"))
    return osp.splitext(osp.basename(path))[0]


def write_predictions(store: ConfidenceStore, samples: Sequence[Any],
                      img_root: str | None = None) -> list[str]:
    """Write each sample's probabilities (float16) under its stem; returns the stems."""
    stems = []
    for sample in samples:
        stem = stem_for(sample.metainfo, img_root)
        probs = sample_probabilities(sample).cpu().numpy()
        store.write(stem, probs.astype(np.float16))
        stems.append(stem)
    return stems


@HOOKS.register_module()
class SaveProbabilitiesHook(Hook):
    """Write the probabilities of every test image into a confidence store.

    Add to a config (works with ``tools/test.py``, with and without ``--tta``)::

        custom_hooks = [dict(type='SaveProbabilitiesHook', out_dir='stores/swin-b_fold0')]

    Parameters
    ----------
    out_dir : str
        The store's folder (created; reopened when it exists with the same classes).
    model_name : str, optional
        Recorded in the store's meta.json (default: the experiment name).
    img_root : str, optional
        Image folder the stems are taken relative to when the dataset does not pack ``stem``.
    tta : dict, optional
        What test-time augmentation ran, for meta.json (default: read from the config).
    """

    priority = "LOW"

    def __init__(self, out_dir: str, model_name: str | None = None,
                 img_root: str | None = None, tta: Any = None):
        if not out_dir:
            raise ValueError("SaveProbabilitiesHook: out_dir must name a folder")
        self.out_dir, self.model_name, self.img_root, self.tta = out_dir, model_name, img_root, tta
        self.store: ConfidenceStore | None = None
        self.written = 0

    def before_test(self, runner) -> None:
        meta = runner.test_dataloader.dataset.metainfo
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        tta = self.tta
        if tta is None and isinstance(model, SegTTAModel):
            tta = plain(runner.cfg.get("tta_pipeline")) or True
        self.store = ConfidenceStore.create(
            self.out_dir, meta["classes"], model=self.model_name or runner.experiment_name,
            config=getattr(runner.cfg, "filename", None), tta=tta)
        self.written = 0

    def after_test_iter(self, runner, batch_idx: int, data_batch: Any = None,
                        outputs: Sequence[Any] | None = None) -> None:
        if self.store is None or not outputs:
            return
        self.written += len(write_predictions(self.store, outputs, self.img_root))

    def after_test(self, runner) -> None:
        runner.logger.info(f"SaveProbabilitiesHook: {self.written} probability maps in "
                           f"{self.out_dir}")
