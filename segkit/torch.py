"""torch face of segkit: :class:`ConvCRF` as an ``nn.Module`` and :func:`conv_crf`, the
trainable ConvCRF as a torch op. Import it explicitly (``from segkit.torch import ConvCRF``);
``import segkit`` never loads torch.

* ``ConvCRF(...)`` (``trainable=False``, the default): inference only, segkit's fused kernels
  (C++ for CPU tensors, CUDA for CUDA tensors, on the tensor's device and torch's current
  stream, without copies); returns a tensor with no gradient.
* ``ConvCRF(..., trainable=True, num_classes=C)`` and :func:`conv_crf`: a differentiable op
  ``torch.ops.segkit.conv_crf`` (registered with ``torch.library`` in
  ``segkit.ops.convcrf_grad_torch``: a typed schema of named arguments, fake kernels, so
  that ``torch.compile``, autocast and DistributedDataParallel work) whose backward is the
  fused C++ kernel: gradients w.r.t. the unary and every ConvCRF parameter by name, no k*k
  tensor, the same bits on a rerun. Both build the call from the setting
  (``segkit.ops.convcrf.ConvCrfParams``) and the learnable values. It runs in float32
  (half-precision inputs are cast); CUDA tensors run the CUDA kernels (csrc/cuda/convcrf*.cu
  through CuPy, tested in host emulation only).
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np
import torch

from .errors import InputError, InputTypeError
from .ops.convcrf import ConvCrfParams, convcrf, convcrf_params
from .ops.convcrf_grad_torch import PARAMS, geometry_of

Tensor = torch.Tensor


def _as_param(name: str, value: Any, ref: Tensor) -> Tensor:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise InputError(f"{name} must be a number or a one-element tensor; got shape "
                             f"{tuple(value.shape)}")
        return value.reshape(()).to(device=ref.device, dtype=torch.float32)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputTypeError(f"{name} must be a number or a tensor; got {value!r}")
    return torch.tensor(float(value), dtype=torch.float32, device=ref.device)


def _image_nchw(image: Any, n: int, h: int, w: int, mean, std) -> Tensor:
    if not isinstance(image, Tensor):
        image = torch.as_tensor(np.asarray(image))
    shape = tuple(image.shape)
    if shape == (n, h, w, 3) and shape != (n, 3, h, w):
        image = image.permute(0, 3, 1, 2)
    elif shape != (n, 3, h, w):
        raise InputError(f"image must be (N, 3, H, W) = ({n}, 3, {h}, {w}) or (N, H, W, 3); "
                         f"got shape {shape}")
    img = image.detach().to(torch.float32)
    if (mean is None) != (std is None):
        raise InputError("mean and std go together (the data preprocessor's normalisation); "
                         f"got mean={mean!r}, std={std!r}")
    if mean is not None:
        m = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        s = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if m.numel() != 3 or s.numel() != 3:
            raise InputError(f"mean and std must have 3 values (RGB); got {mean!r}, {std!r}")
        img = img * s.to(img.device).view(1, 3, 1, 1) + m.to(img.device).view(1, 3, 1, 1)
    return img.contiguous()


def conv_crf(unary: Tensor, image: Any, *, weight: Any = 0.2, pos_compat: Any = 3.0,
             col_compat: Any = 10.0, pos_sdims: Any = 3.0, col_schan: Any = 13.0,
             col_sdims: Any = None, compat: Optional[Tensor] = None,
             mask: Optional[Tensor] = None, mean: Optional[Sequence[float]] = None,
             std: Optional[Sequence[float]] = None, filter_size: int = 11, blur: int = 4,
             num_iter: int = 5, unary_weight: float = 1.0, unary_kind: str = "logits",
             init: str = "convcrf", final_softmax: bool = False) -> Tensor:
    """Differentiable ConvCRF (ConvCRF's ``GaussCRF``, trainable) with a fused backward.

    Parameters
    ----------
    unary : Tensor (N, C, H, W) or (C, H, W)
        Scores (logits; probabilities with ``unary_kind="probs"``), float32, float16 or
        bfloat16 (run in float32), CPU or CUDA (the CUDA kernels are compiled and emulated on
        the host in the tests, not yet run on a GPU). float64 is refused: the reference
        ``segkit.reference.convcrf_grad.conv_crf_torch`` is the float64 path.
    image : Tensor or array (N, 3, H, W) or (N, H, W, 3)
        RGB 0-255, or as the network sees it with ``mean``/``std`` (undone inside: colour
        bandwidths assume 0-255). No gradient flows to it.
    weight : number or Tensor (C,) / (1, C, 1, 1)
        Per-class message weight: pred = (unary_weight - w_c) U + w_c M'.
    pos_compat, col_compat : number or 0-d Tensor, >= 0
    pos_sdims, col_schan, col_sdims : number or 0-d Tensor, > 0
        Bandwidths (col_sdims None: no position term in the colour kernel). Gradients flow
        through their reciprocals, as ConvCRF stores them.
    compat : Tensor (C, C) or (C, C, 1, 1), optional
        ConvCRF's ``convcomp``: M' = M + compat @ M.
    mask : Tensor (N, H, W) bool or uint8, optional
        Valid pixels; the others neither send nor receive messages (padded crops).
    filter_size, blur, num_iter, unary_weight, unary_kind, init, final_softmax
        As :func:`segkit.convcrf` (constants, not learnable).

    Returns
    -------
    Tensor float32, the unary's shape: the scores after the last iteration.
    """
    unary, image, mask, squeeze = _batched(unary, image, mask)
    p = convcrf_params(None, filter_size=filter_size, blur=blur, num_iter=num_iter,
                       unary_weight=unary_weight, unary_kind=unary_kind, init=init,
                       final_softmax=final_softmax)
    values = dict(pos_compat=pos_compat, col_compat=col_compat, pos_sdims=pos_sdims,
                  col_schan=col_schan, col_sdims=col_sdims)
    out = _call(unary, image, p, weight, values, compat, mask, mean, std)
    return out[0] if squeeze else out


def _batched(unary: Any, image: Any, mask: Any):
    """(unary, image, mask) with a batch axis, and whether one was added; the unary checked."""
    if not isinstance(unary, Tensor):
        raise InputTypeError(f"unary must be a torch tensor; got {type(unary).__name__}")
    squeeze = unary.dim() == 3
    if squeeze:
        unary = unary[None]
        if isinstance(image, Tensor) and image.dim() == 3:
            image = image[None]
        if isinstance(mask, Tensor) and mask.dim() == 2:
            mask = mask[None]
    if unary.dim() != 4 or unary.shape[1] < 2:
        raise InputError(f"unary must be (N, C, H, W) or (C, H, W) with C >= 2; got shape "
                         f"{tuple(unary.shape) if not squeeze else tuple(unary.shape[1:])}")
    if unary.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise InputError(f"unary must be float32, float16 or bfloat16; got {unary.dtype} "
                         "(for float64 use segkit.reference.convcrf_grad.conv_crf_torch)")
    return unary, image, mask, squeeze


def _call(unary: Tensor, image: Any, p: ConvCrfParams, weight: Any, values: dict[str, Any],
          compat: Optional[Tensor], mask: Optional[Tensor], mean, std) -> Tensor:
    """``torch.ops.segkit.conv_crf`` on (N, C, H, W) scores: the constants from the setting
    `p`, the learnable values (numbers or tensors) as float32 tensors on the unary's device."""
    n, c, h, w = unary.shape
    u = unary.to(torch.float32).contiguous()
    img = _image_nchw(image, n, h, w, mean, std).to(u.device)
    if isinstance(weight, Tensor):
        if weight.numel() not in (1, c):
            raise InputError(f"weight must have 1 or C = {c} values; got shape "
                             f"{tuple(weight.shape)}")
        wt = weight.to(device=u.device, dtype=torch.float32).reshape(-1).expand(c).contiguous()
    else:
        wt = _as_param("weight", weight, u).expand(c).contiguous()
    vals = {k: None if v is None else _as_param(k, v, u) for k, v in values.items()}
    k = None
    if compat is not None:
        if not isinstance(compat, Tensor) or compat.numel() != c * c:
            raise InputError(f"compat must be a (C, C) = ({c}, {c}) tensor; got "
                             f"{getattr(compat, 'shape', compat)!r}")
        k = compat.to(device=u.device, dtype=torch.float32).reshape(c, c).contiguous()
    m = None
    if mask is not None:
        if not isinstance(mask, Tensor) or tuple(mask.shape) != (n, h, w):
            raise InputError(f"mask must be a (N, H, W) = ({n}, {h}, {w}) tensor; got "
                             f"{getattr(mask, 'shape', mask)!r}")
        m = (mask != 0).to(device=u.device, dtype=torch.uint8).contiguous()
    return torch.ops.segkit.conv_crf(u, img, m, wt, compat=k, **vals, **geometry_of(p))[0]


class ConvCRF(torch.nn.Module):
    """ConvCRF mean-field inference as a module: ``forward(unary, image, mask=None)``.

    Parameters are those of :func:`segkit.convcrf` (``preset``, ``filter_size``, ``blur``,
    ``num_iter``, ...; None: the preset's value or ConvCRF's default) plus ``backend``.

    ``trainable=True`` (needs ``num_classes``) makes ConvCRF's parameters learnable, as
    ConvCRF's ``GaussCRF(trainable=True)``: the per-class ``weight`` (C,), and, positive by
    construction (stored as logarithms), ``pos_compat``, ``col_compat``, ``pos_sdims``,
    ``col_schan`` and ``col_sdims`` (when given); ``convcomp=True`` adds ConvCRF's C x C
    compatibility (M' = M + compat @ M, initialised as ConvCRF's 0.1 * sqrt(2 / C)). They start
    at the setting's values (weight 0.2 by default), where the CRF changes the unary and every
    gradient is non-zero. ``mean``/``std``: the data preprocessor's normalisation, undone on
    the image inside. Without gradients (``torch.no_grad()``, or nothing requiring one) and
    with equal class weights, no compat and no mask, the module runs the inference kernels.

    >>> import torch
    >>> from segkit.torch import ConvCRF
    >>> crf = ConvCRF(preset="convcrf")
    >>> logits = torch.randn(2, 5, 40, 60)
    >>> image = torch.randint(0, 256, (2, 3, 40, 60), dtype=torch.uint8)
    >>> crf(logits, image).shape
    torch.Size([2, 5, 40, 60])

    With mmsegmentation, refine a ``SegDataSample``'s ``seg_logits.data`` (C, H, W) with the
    image as loaded (H, W, 3) uint8: ``crf(sample.seg_logits.data, torch.from_numpy(img))``.
    """

    def __init__(self, preset: str | None = None, *, backend: str = "auto",
                 trainable: bool = False, num_classes: int | None = None,
                 convcomp: bool = False, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, **params: Any):
        super().__init__()
        self.setting: ConvCrfParams = convcrf_params(preset, **params)
        self.backend = backend
        self.trainable = bool(trainable)
        self.mean, self.std = mean, std
        if not self.trainable:
            if convcomp or num_classes is not None:
                raise InputError("convcomp and num_classes need trainable=True")
            return
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) \
                or num_classes < 2:
            raise InputError(f"trainable=True needs num_classes >= 2; got {num_classes!r}")
        s = self.setting
        for name in ("pos_compat", "col_compat"):
            if getattr(s, name) <= 0:
                raise InputError(f"trainable=True needs {name} > 0 (it is learnt as a "
                                 f"logarithm); got {getattr(s, name)}")
        f32 = dict(dtype=torch.float32)
        s.check_classes(num_classes)  # a fitted setting's weight / compat start the training
        self.weight = torch.nn.Parameter(
            torch.full((num_classes,), s.weight_init, **f32) if s.weight is None
            else torch.tensor(s.weight, **f32))
        for name in ("pos_compat", "col_compat", "pos_sdims", "col_schan"):
            self.register_parameter("log_" + name, torch.nn.Parameter(
                torch.tensor(math.log(getattr(s, name)), **f32)))
        self.log_col_sdims = None if s.col_sdims is None else torch.nn.Parameter(
            torch.tensor(math.log(s.col_sdims), **f32))
        if s.compat is not None:
            convcomp = True
        self.compat = None if not convcomp else torch.nn.Parameter(
            torch.full((num_classes, num_classes), 0.1 * math.sqrt(2.0 / num_classes), **f32)
            if s.compat is None else torch.tensor(s.compat, **f32))

    def _kwargs(self) -> dict[str, Any]:
        kw = self.setting.reference_kwargs()
        return {k: v for k, v in kw.items() if v is not None}

    def parameters_now(self) -> dict[str, Any]:
        """The current values of the learnable parameters (floats; weight a list)."""
        out = {"weight": self.weight.detach().tolist()}
        for name in ("pos_compat", "col_compat", "pos_sdims", "col_schan", "col_sdims"):
            p = getattr(self, "log_" + name)
            if p is not None:
                out[name] = float(p.detach().exp())
        if self.compat is not None:
            out["compat"] = self.compat.detach().tolist()
        return out

    def fitted_params(self) -> ConvCrfParams:
        """The current setting as the one ConvCRF record (learned scalars, per-class weight,
        compat), which ``segkit.convcrf(..., **p.as_dict())`` applies on every backend."""
        kw = {k: v for k, v in self.setting.reference_kwargs().items() if v is not None}
        if self.trainable:
            kw.update(self.parameters_now())
        return convcrf_params(None, **kw)

    def _inference_ok(self, unary, mask) -> bool:
        if mask is not None or (torch.is_grad_enabled() and (
                unary.requires_grad or any(p.requires_grad for p in self.parameters()))):
            return False
        if not self.trainable:
            return True
        return self.compat is None and bool((self.weight == self.weight[0]).all())

    def _inference(self, unary, image):
        kw = self._kwargs()
        if self.trainable:  # the current parameters, not the setting's starting values
            kw.pop("weight", None), kw.pop("compat", None)
            for k, v in self.parameters_now().items():
                kw[k if k != "weight" else "weight_init"] = v[0] if k == "weight" else v
        if self.mean is not None:
            n = unary.shape[0] if unary.dim() == 4 else 1
            img = image if unary.dim() == 4 else image[None]
            h, w = unary.shape[-2:]
            image = _image_nchw(img, n, h, w, self.mean, self.std)
            image = image if unary.dim() == 4 else image[0]
        with torch.no_grad():
            if unary.is_cuda:
                return convcrf(unary.detach(), image.detach(), backend=self.backend, **kw)
            out = convcrf(unary.detach().numpy(), image.detach().cpu().numpy(),
                          backend=self.backend, **kw)
            return torch.from_numpy(np.ascontiguousarray(out))

    def forward(self, unary: torch.Tensor, image: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """unary (N, C, H, W) or (C, H, W); image (N, 3, H, W), (N, H, W, 3), (H, W, 3) or
        (3, H, W), uint8 or float 0-255 (or normalised, with mean/std), on the unary's device;
        mask (N, H, W) of valid pixels (trainable only). Returns float32 scores."""
        if not self.trainable:
            if mask is not None:
                raise InputError("mask needs trainable=True")
            return self._inference(unary, image)
        if unary.shape[-3] != self.weight.shape[0]:
            raise InputError(f"unary has {unary.shape[-3]} classes; this ConvCRF was built "
                             f"with num_classes={self.weight.shape[0]}")
        if self._inference_ok(unary, mask):
            return self._inference(unary, image)
        unary, image, mask, squeeze = _batched(unary, image, mask)
        logs = {k: getattr(self, "log_" + k) for k in PARAMS}
        values = {k: None if v is None else v.exp() for k, v in logs.items()}
        out = _call(unary, image, self.setting, self.weight, values, self.compat, mask,
                    self.mean, self.std)
        return out[0] if squeeze else out

    def labels(self, unary: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """argmax over classes of :meth:`forward` (int64 tensor, (N, H, W) or (H, W))."""
        with torch.no_grad():
            return self.forward(unary, image).argmax(dim=-3)

    def extra_repr(self) -> str:
        s = self.setting
        return (f"filter_size={s.filter_size}, blur={s.blur}, num_iter={s.num_iter}, "
                f"unary_kind={s.unary_kind!r}, init={s.init!r}, backend={self.backend!r}, "
                f"trainable={self.trainable}")


__all__ = ["ConvCRF", "conv_crf"]
