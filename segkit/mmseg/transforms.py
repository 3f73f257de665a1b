"""Pipeline steps: the mode filter as an online transform, and the original recipe's
albumentations pipeline expressed with mmseg's own `Albu` transform."""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from ..ops.mode_filter import mode_filter


@TRANSFORMS.register_module()
class ModeResample(BaseTransform):
    """Mode-filter the label map(s) of a sample: ``segkit.mode_filter`` applied online.

    The offline ``segkit resample`` (masks cleaned once, on disk) stays the default, as in the
    original recipe; this step does the same per sample, e.g. to try other window sizes without
    writing a dataset. Place it right after ``LoadAnnotations`` so it sees the masks at their
    stored resolution, as the offline job does.

    Required keys: ``gt_seg_map`` (and any other key in ``seg_fields``). Modified keys: the same,
    replaced by the filtered map (same shape and dtype).

    Parameters are those of :func:`segkit.mode_filter`: ``size`` (odd), ``anchor``
    ("center" | "topleft"), ``ties`` ("keep" | "smallest" | "first"), ``ignore_index``
    (e.g. 255: such pixels neither vote nor change), ``backend`` ("auto" | "numpy" | "numba" |
    "cpp"). Invalid values raise when the pipeline is built, not at the first sample.
    """

    def __init__(self, size: int = 3, anchor: str = "center", ties: str = "keep",
                 ignore_index: int | None = None, backend: str = "auto"):
        self.size, self.anchor, self.ties = size, anchor, ties
        self.ignore_index, self.backend = ignore_index, backend
        # Run once on a 1x1 map: the op's own checks name any bad argument now.
        self._apply(np.zeros((1, 1), np.uint8))

    def _apply(self, labels: np.ndarray) -> np.ndarray:
        return mode_filter(labels, self.size, anchor=self.anchor, ties=self.ties,
                           ignore_index=self.ignore_index, backend=self.backend)

    def transform(self, results: dict) -> dict:
        keys = list(results.get("seg_fields") or [])
        if "gt_seg_map" in results and "gt_seg_map" not in keys:
            keys.append("gt_seg_map")
        if not keys:
            raise KeyError("ModeResample: the sample has no 'gt_seg_map'; put ModeResample "
                           "after LoadAnnotations")
        for key in keys:
            results[key] = self._apply(results[key])
        return results

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(size={self.size}, anchor={self.anchor!r}, "
                f"ties={self.ties!r}, ignore_index={self.ignore_index}, "
                f"backend={self.backend!r})")


# albumentations 1.x defaults the original recipe ran with, spelled out because 2.x changed them
# (border_mode REFLECT_101 = 4; CoarseDropout exactly 8 holes of 8x8; GaussianBlur 3-7).
_REFLECT_101 = 4
ALBU_RECIPE: list[dict[str, Any]] = [
    dict(type="VerticalFlip", p=0.3),
    dict(type="HorizontalFlip", p=0.3),
    dict(type="OneOf", p=0.3, transforms=[
        dict(type="ShiftScaleRotate", border_mode=_REFLECT_101, p=1.0),
        dict(type="RandomRotate90", p=1.0),
        dict(type="PiecewiseAffine", p=1.0),
        dict(type="CoarseDropout", num_holes_range=(8, 8), hole_height_range=(8, 8),
             hole_width_range=(8, 8), p=1.0),
        dict(type="ElasticTransform", border_mode=_REFLECT_101, p=1.0),
        dict(type="GridDistortion", border_mode=_REFLECT_101, p=1.0),
        dict(type="OpticalDistortion", distort_limit=0.5, border_mode=_REFLECT_101, p=1.0),
        dict(type="RandomGridShuffle", p=1.0),
    ]),
    dict(type="OneOf", p=0.3, transforms=[
        dict(type="GaussianBlur", blur_limit=(3, 7), p=1.0),
        dict(type="Blur", p=1.0),
    ]),
    dict(type="OneOf", p=0.3, transforms=[
        dict(type="RandomGamma", p=1.0),
        dict(type="ChannelDropout", p=1.0),
        dict(type="ChannelShuffle", p=1.0),
        dict(type="RGBShift", p=1.0),
    ]),
]

#: mmseg's names -> albumentations' names: masks travel with images through every transform.
ALBU_KEYMAP = {"img": "image", "gt_seg_map": "mask"}


def albu_transforms() -> list[dict[str, Any]]:
    """The original recipe's albumentations list (a fresh copy), for ``Albu(transforms=...)``.

    The recipe's RandomCrop 512 is done by mmseg's ``RandomCrop`` before this step (it keeps
    ``img_shape`` right), and the original's final random flip 0.3 by ``RandomFlip``.
    OpticalDistortion's "0.5" is read as its distortion limit.
    """
    return copy.deepcopy(ALBU_RECIPE)


def albu_pipeline_step() -> dict[str, Any]:
    """The pipeline entry ``dict(type='Albu', transforms=..., keymap=...)``."""
    return dict(type="Albu", transforms=albu_transforms(), keymap=dict(ALBU_KEYMAP))
