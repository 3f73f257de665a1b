"""``CRFEncoderDecoder``: mmseg's EncoderDecoder with a trainable ConvCRF after the decode head.

Why an ``EncoderDecoder`` subclass (and not a decode head or a wrapper): the CRF needs the
image, which only the segmentor sees (a decode head gets features and metainfo); every test
path of mmseg (``predict``, whole and slide inference, ``SegTTAModel`` and segkit's TTA model,
``tools/test.py``, ``segkit infer``) goes through :meth:`encode_decode`, so one override puts
the CRF into all of them; and the state dict keeps EncoderDecoder's keys (``backbone.``,
``decode_head.``, ``auxiliary_head.``) with the CRF's added under ``crf.``, so checkpoints of
plain and CRF models load into each other (see :mod:`segkit.mmseg.checkpoint`).

Training: the decode head's logits (1/4 of the input for UPerHead) are upsampled bilinearly to
the input size (the head's ``align_corners``), refined by :class:`segkit.torch.ConvCRF`
(``trainable=True``) with the network's input image (de-normalised inside with the data
preprocessor's mean/std; the colour kernel treats the 3 channels alike, so RGB or BGR does not
matter) and a mask of the valid pixels (padding the data preprocessor added to the batch
neither sends nor receives messages). Loss: ``crf_loss_weight`` x the decode head's loss on the
CRF's output (``crf.loss_*``) + ``unary_loss_weight`` x the decode head's loss on its own
logits (``decode.loss_*``) + the auxiliary heads as usual. The learned parameters are logged
with the losses (``crf.weight_mean`` ... , not summed into the loss: no ``loss`` in the name).

Inference: the CRF's scores at the input size replace the decode head's logits, so
``seg_logits`` are the CRF's scores and ``SaveProbabilitiesHook`` / ``segkit infer`` apply one
softmax to them (the CRF's last update is returned without its softmax).
"""
from __future__ import annotations

from numbers import Real
from typing import Any, Mapping, Optional

import torch
from mmengine.logging import print_log
from mmseg.models.segmentors import EncoderDecoder
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.utils import add_prefix

from ..errors import InputError, InputTypeError
from ..torch import ConvCRF
from .checkpoint import CRF_PREFIX

#: keys of ``crf=dict(...)`` the segmentor sets itself
_RESERVED = ("trainable", "num_classes", "mean", "std")
#: the learned scalars logged with the losses (``weight`` is logged as mean/min/max)
_LOGGED = ("pos_compat", "col_compat", "pos_sdims", "col_schan", "col_sdims")


def _weight(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not value >= 0:
        raise InputError(f"{name} must be a number >= 0; got {value!r}")
    return float(value)


def preprocessor_norm(preprocessor: Any) -> tuple[Optional[list], Optional[list]]:
    """(mean, std) of an mmseg data preprocessor as lists of 3 floats, or (None, None) when it
    does not normalise (the image then reaches the CRF as 0-255 values)."""
    if not getattr(preprocessor, "_enable_normalize", False):
        return None, None
    return ([float(v) for v in preprocessor.mean.flatten()],
            [float(v) for v in preprocessor.std.flatten()])


def valid_mask(metas: list, shape: tuple, device: torch.device) -> Optional[torch.Tensor]:
    """(N, H, W) bool mask of the pixels of a batch of `shape` (H, W) that belong to an image,
    or None when all do. The data preprocessor pads at the bottom and right: the image is the
    ``img_shape`` of each sample's metainfo (before padding); a sample without one (or whose
    ``img_shape`` covers the batch) is all valid."""
    h, w = int(shape[0]), int(shape[1])
    mask = torch.ones((len(metas), h, w), dtype=torch.bool, device=device)
    padded = False
    for i, meta in enumerate(metas):
        img_shape = meta.get("img_shape")
        if img_shape is None:
            continue
        ih, iw = (min(int(v), lim) for v, lim in zip(tuple(img_shape)[:2], (h, w)))
        if (ih, iw) != (h, w):
            mask[i, ih:, :] = False
            mask[i, :, iw:] = False
            padded = True
    return mask if padded else None


@MODELS.register_module()
class CRFEncoderDecoder(EncoderDecoder):
    """EncoderDecoder + a trainable ConvCRF on the decode head's logits (end-to-end CRF).

    Takes every argument of mmseg's ``EncoderDecoder`` plus:

    Parameters
    ----------
    crf : dict, optional
        The ConvCRF setting, as :class:`segkit.torch.ConvCRF` takes it: ``preset``
        ("convcrf", "seed"), ``filter_size`` (11), ``blur`` (4), ``num_iter`` (5),
        ``unary_kind`` ("logits": the head's logits; "probs": their softmax), ``init``,
        ``convcomp`` (learn a C x C compatibility), ``weight_init`` (0.2), the Gaussian
        parameters (initial values of the learned ones) and ``backend`` (inference only).
        ``num_classes``, ``mean`` and ``std`` come from the decode head and the data
        preprocessor.
    crf_loss_weight : float
        Weight of the decode head's loss on the CRF's output (default 1.0).
    unary_loss_weight : float
        Weight of the decode head's loss on its own logits, the auxiliary loss on the unary
        (default 0.5; 0 skips it).
    crf_test : bool
        Apply the CRF at test time (default True); False predicts with the unary alone.
    **kwargs
        EncoderDecoder's arguments (backbone, decode_head, auxiliary_head, data_preprocessor,
        train_cfg, test_cfg, ...).

    Notes
    -----
    Padded pixels are masked in training and in whole-image inference (``img_shape``); slide
    inference refines each window whole (mmseg does not tell a window where it lies). ``_forward``
    (tensor mode: FLOPs counting, export) returns the decode head's output without the CRF.
    """

    def __init__(self, crf: Optional[Mapping] = None, crf_loss_weight: float = 1.0,
                 unary_loss_weight: float = 0.5, crf_test: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        crf = dict(crf or {})
        if not isinstance(crf_test, bool):
            raise InputTypeError(f"crf_test must be True or False; got {crf_test!r}")
        set_here = sorted(k for k in crf if k in _RESERVED)
        if set_here:
            raise InputError(f"crf={crf!r}: {', '.join(set_here)} are set by the segmentor "
                             "(num_classes from the decode head, mean/std from the data "
                             "preprocessor); remove them")
        self.crf_loss_weight = _weight("crf_loss_weight", crf_loss_weight)
        self.unary_loss_weight = _weight("unary_loss_weight", unary_loss_weight)
        if self.crf_loss_weight == 0:
            raise InputError("crf_loss_weight must be > 0 (the CRF would learn nothing); use "
                             "the plain EncoderDecoder to train without it")
        if self.out_channels < 2:
            raise InputError(f"the CRF needs class scores: decode_head out_channels must be "
                             f">= 2; got {self.out_channels}")
        self.crf_test = crf_test
        mean, std = preprocessor_norm(self.data_preprocessor)
        self.crf = ConvCRF(trainable=True, num_classes=self.out_channels, mean=mean, std=std,
                           **crf)
        self.register_load_state_dict_post_hook(_plain_checkpoint_note)

    # ---- the CRF on logits -------------------------------------------------------------
    def refine(self, logits: torch.Tensor, inputs: torch.Tensor,
               mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The CRF's scores (N, C, H, W) at the input size from the decode head's logits (any
        size: upsampled bilinearly), the network's input (normalised) and a valid-pixel mask."""
        size = inputs.shape[2:]
        if logits.shape[2:] != size:
            logits = resize(logits, size=size, mode="bilinear",
                            align_corners=self.align_corners)
        if self.crf.setting.unary_kind == "probs":
            logits = logits.float().softmax(dim=1).clamp_min(torch.finfo(torch.float32).tiny)
        return self.crf(logits, inputs, mask)

    def crf_log_vars(self) -> dict[str, torch.Tensor]:
        """The learned CRF parameters as scalars for mmengine's log (``crf.weight_mean`` ...)."""
        crf = self.crf
        with torch.no_grad():
            w = crf.weight.detach()
            out = {"weight_mean": w.mean(), "weight_min": w.min(), "weight_max": w.max()}
            for name in _LOGGED:
                p = getattr(crf, "log_" + name)
                if p is not None:
                    out[name] = p.detach().exp()
        return add_prefix(out, CRF_PREFIX.rstrip("."))

    # ---- training ----------------------------------------------------------------------
    def loss(self, inputs: torch.Tensor, data_samples: list) -> dict:
        """Losses of a batch: the CRF's output (``crf.``), the unary (``decode.``), the
        auxiliary heads (``aux.``), and the learned CRF parameters (logged, not summed)."""
        x = self.extract_feat(inputs)
        logits = self.decode_head.forward(x)
        losses: dict = {}
        if self.unary_loss_weight > 0:
            unary = self.decode_head.loss_by_feat(logits, data_samples)
            losses.update(add_prefix(_scaled(unary, self.unary_loss_weight), "decode"))
        mask = valid_mask([s.metainfo for s in data_samples], inputs.shape[2:], inputs.device)
        refined = self.refine(logits, inputs, mask)
        crf = self.decode_head.loss_by_feat(refined, data_samples)
        losses.update(add_prefix(_scaled(crf, self.crf_loss_weight), "crf"))
        if self.with_auxiliary_head:
            losses.update(self._auxiliary_head_forward_train(x, data_samples))
        losses.update(self.crf_log_vars())
        return losses

    # ---- inference ---------------------------------------------------------------------
    def encode_decode(self, inputs: torch.Tensor, batch_img_metas: list) -> torch.Tensor:
        """The CRF's scores at the input size (the decode head's logits with ``crf_test``
        False); every mmseg test path (whole, slide, TTA) calls this."""
        logits = super().encode_decode(inputs, batch_img_metas)
        if not self.crf_test:
            return logits
        slide = (self.test_cfg or {}).get("mode", "whole") == "slide"
        mask = None if slide else valid_mask(batch_img_metas, inputs.shape[2:], inputs.device)
        return self.refine(logits, inputs, mask)


def _scaled(losses: dict, weight: float) -> dict:
    """`losses` (a decode head's loss dict) with every ``loss*`` term times `weight`."""
    if weight == 1.0:
        return losses
    return {k: (v * weight if "loss" in k else v) for k, v in losses.items()}


def _plain_checkpoint_note(module: CRFEncoderDecoder, incompatible) -> None:
    """Load post-hook: a checkpoint without any CRF tensor (a plain EncoderDecoder's) leaves the
    CRF at its initial setting; say so once instead of listing its keys as missing."""
    missing = incompatible.missing_keys
    ours = [k for k in missing if k.startswith(CRF_PREFIX) or f".{CRF_PREFIX}" in k]
    expected = {CRF_PREFIX + k for k, _ in module.crf.named_parameters()}
    if not ours or {k[k.index(CRF_PREFIX):] for k in ours} != expected:
        return  # the checkpoint has (some of) the CRF: a partial mismatch stays reported
    for key in ours:
        missing.remove(key)
    s = module.crf.setting
    print_log(f"CRFEncoderDecoder: the checkpoint has no CRF layer (a plain model's); the CRF "
              f"starts from its initial setting (weight {s.weight_init}, pos_compat "
              f"{s.pos_compat}, col_compat {s.col_compat}, pos_sdims {s.pos_sdims}, col_schan "
              f"{s.col_schan}) and the rest loads as usual", logger="current")
