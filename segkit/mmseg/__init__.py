"""segkit.mmseg: the mmsegmentation 1.x plug-in.

Loaded by configs through ``custom_imports=dict(imports=['segkit.mmseg'],
allow_failed_imports=False)`` (or imported by ``segkit train`` / ``segkit infer``). On import it

1. installs a stand-in for ``mmcv._ext`` when mmcv has no compiled ops (mmcv-lite), before mmseg
   is imported, so that mmsegmentation imports (GUIDE section 5; :mod:`segkit.mmseg._ext_stub`);
2. makes mmengine read local checkpoints with ``torch.load(weights_only=True)`` and an allowlist
   of exactly the globals its checkpoints hold (:mod:`segkit.mmseg.checkpoint`);
3. registers in mmseg's registries: datasets ``TrashDataset`` and ``CocoMaskDataset``, the
   transform ``ModeResample``, the TTA model ``SegkitTTAModel``, the segmentor
   ``CRFEncoderDecoder`` (a trainable ConvCRF after the decode head) and the hooks
   ``SaveProbabilitiesHook`` and ``ProgressBarHook``.

Python API: :func:`train` and :func:`infer` (also ``segkit train`` / ``segkit infer``).
``import segkit`` never imports this package (nor torch); importing it imports mmseg.
"""
from __future__ import annotations

import os

from . import _ext_stub

# albumentations asks the network for a newer version at import unless told not to; training
# runs offline (a user who wants the check sets the variable to 0).
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
EXT_STUB_INSTALLED = _ext_stub.install()

import mmseg  # noqa: E402  (after the stand-in, on purpose)

from . import checkpoint  # noqa: E402
from .crf_segmentor import CRFEncoderDecoder  # noqa: E402
from .datasets import CocoMaskDataset, DatasetError, TrashDataset, read_class_table  # noqa: E402
from .probabilities import SaveProbabilitiesHook, SegkitTTAModel  # noqa: E402
from .progress import ProgressBarHook  # noqa: E402
from .transforms import (ALBU_KEYMAP, ALBU_RECIPE, ModeResample, albu_pipeline_step,  # noqa: E402,E501
                         albu_transforms)

checkpoint.register()


def train(config, **kwargs):
    """Train with mmengine's Runner; see :func:`segkit.mmseg.runner.train`."""
    from .runner import train as _train

    return _train(config, **kwargs)


def infer(config, checkpoint_path, images, out, **kwargs):
    """Write class probabilities of a folder of images; see :func:`segkit.mmseg.inference.infer`."""
    from .inference import infer as _infer

    return _infer(config, checkpoint_path, images, out, **kwargs)


__all__ = [
    "ALBU_KEYMAP", "ALBU_RECIPE", "CRFEncoderDecoder", "CocoMaskDataset", "DatasetError", "EXT_STUB_INSTALLED",
    "ModeResample", "ProgressBarHook",
    "SaveProbabilitiesHook", "SegkitTTAModel", "TrashDataset", "albu_pipeline_step",
    "albu_transforms", "infer", "read_class_table", "train",
]
