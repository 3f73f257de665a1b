"""torch face of segkit: :class:`ConvCRF` as an ``nn.Module`` and :func:`conv_crf`, the
trainable ConvCRF as a torch op. Import it explicitly (``from segkit.torch import ConvCRF``);
``import segkit`` never loads torch.

* ``ConvCRF(...)`` (``trainable=False``, the default): inference only, segkit's fused kernels
  (C++ for CPU tensors, CUDA for CUDA tensors, on the tensor's device and torch's current
  stream, without copies); returns a tensor with no gradient.
* ``ConvCRF(..., trainable=True, num_classes=C)`` and :func:`conv_crf`: a differentiable op
  ``torch.ops.segkit.conv_crf`` (registered with ``torch.library``, with fake kernels, so that
  ``torch.compile``, autocast and DistributedDataParallel work) whose backward is the fused
  C++ kernel: gradients w.r.t. the unary and every ConvCRF parameter, no k*k tensor, the same
  bits on a rerun. It runs in float32 (half-precision inputs are cast); CUDA tensors run the
  CUDA kernels (csrc/cuda/convcrf_grad.cu through CuPy, tested in host emulation only).
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np
import torch

from .errors import InputError, InputTypeError, UnavailableError
from .ops import convcrf_grad as _grad
from .ops.convcrf import ConvCrfParams, convcrf, convcrf_params

Tensor = torch.Tensor

# config list of the op: filter_size, blur, num_iter, unary_kind, init, final_softmax, col_pos
_UNARY_KINDS, _INITS = ("logits", "probs"), ("convcrf", "softmax")


def _cfg(config: Sequence[int], unary_weight: float) -> tuple[ConvCrfParams, bool]:
    k, b, t, kind, init, fs, cp = (int(v) for v in config)
    return convcrf_params(None, filter_size=k, blur=b, num_iter=t, unary_weight=unary_weight,
                          unary_kind=_UNARY_KINDS[kind], init=_INITS[init],
                          final_softmax=bool(fs)), bool(cp)


def _host(x: Optional[Tensor], what: str):
    if x is None:
        return None
    return np.ascontiguousarray(x.detach().cpu().numpy())


def _on_gpu(step, tensors: tuple, *rest):
    """`step` (segkit.ops.convcrf_grad_cuda) on the CUDA tensors `tensors` (None stays None),
    on torch's current stream, without copies; returns what it returns, device arrays as
    tensors. Compiled and emulated on the host (tests/test_convcrf_grad_cuda.py)."""
    try:
        import cupy
    except ImportError:
        raise UnavailableError("segkit.torch.conv_crf on CUDA tensors needs CuPy "
                               "(pip install segkit[cuda])") from None
    from . import _cuda

    with _cuda.op_stream(*[t for t in tensors if t is not None]):
        arrays = [None if t is None else cupy.asarray(t.detach().contiguous()) for t in tensors]

        def launch(name, total, args):
            _cuda.launch(_cuda.get_kernel("convcrf_grad", name), total, args)

        out = step(launch, lambda shape, dtype: cupy.empty(shape, dtype), *arrays, *rest)
        return tuple(torch.from_dlpack(o) if isinstance(o, cupy.ndarray) else o for o in out)


def _check_values(unary, image, weight, scalars, compat, col_pos: bool, kind: str) -> None:
    """Value checks of the op's inputs (torch tensors, on their device)."""
    bad = int((~torch.isfinite(unary)).sum())
    if bad:
        raise InputError(f"unary contains NaN or inf ({bad} values)")
    if kind == "probs" and bool((unary <= 0).any()):
        raise InputError("unary_kind='probs' needs probabilities > 0 for gradients; got a "
                         f"minimum of {float(unary.min()):.3g}")
    if not bool(torch.isfinite(image).all()):
        raise InputError("image contains NaN or inf")
    if not bool(torch.isfinite(weight).all()):
        raise InputError(f"weight must be finite; got {weight.tolist()}")
    if compat is not None and not bool(torch.isfinite(compat).all()):
        raise InputError("compat contains NaN or inf")
    vals = dict(zip(_grad.SCALARS, scalars.tolist()))
    if not col_pos:
        vals["colpos_inv"] = None
    _grad.check_scalars(vals)


@torch.library.custom_op("segkit::conv_crf", mutates_args=())
def _conv_crf_op(unary: Tensor, image: Tensor, mask: Optional[Tensor], weight: Tensor,
                 scalars: Tensor, compat: Optional[Tensor], config: list[int],
                 unary_weight: float) -> tuple[Tensor, Tensor]:
    cfg, col_pos = _cfg(config, unary_weight)
    if unary.is_cuda:
        from .ops.convcrf_grad_cuda import forward_steps

        _check_values(unary, image, weight, scalars, compat, col_pos, cfg.unary_kind)
        return _on_gpu(lambda launch, empty, u, img, m, w, k, s: forward_steps(
            launch, empty, u, img, m, w, k, s, cfg, col_pos),
            (unary, image, mask, weight, compat), _host(scalars, "scalars"))
    u, img, m, w, s, k = (_host(x, name) for x, name in (
        (unary, "unary"), (image, "image"), (mask, "mask"), (weight, "weight"),
        (scalars, "scalars"), (compat, "compat")))
    _check_values(unary, image, weight, scalars, compat, col_pos, cfg.unary_kind)
    out, saved = _grad.forward(u, img, m, w, s, k, cfg, col_pos)
    return torch.from_numpy(out), torch.from_numpy(saved)


@_conv_crf_op.register_fake
def _conv_crf_fake(unary, image, mask, weight, scalars, compat, config, unary_weight):
    n, c, h, w = unary.shape
    b, t = config[1], config[2]
    return unary.new_empty(unary.shape), unary.new_empty((n, t, c, -(-h // b), -(-w // b)))


@torch.library.custom_op("segkit::conv_crf_backward", mutates_args=())
def _conv_crf_backward_op(grad: Tensor, unary: Tensor, image: Tensor, mask: Optional[Tensor],
                          weight: Tensor, scalars: Tensor, compat: Optional[Tensor],
                          saved: Tensor, config: list[int], unary_weight: float
                          ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    cfg, col_pos = _cfg(config, unary_weight)
    if unary.is_cuda:
        import cupy

        from .ops.convcrf_grad_cuda import backward_steps

        s = _host(scalars, "scalars")
        du, dw, sums, dk = _on_gpu(lambda launch, empty, g, u, img, m, w, k, sv: backward_steps(
            launch, empty, cupy.asnumpy, g, u, img, m, w, k, s, sv, cfg, col_pos),
            (grad, unary, image, mask, weight, compat, saved))
        ds = _grad.scalar_gradients(sums, s, col_pos)
        dk = np.zeros((0,), np.float32) if dk is None else dk
        dev = unary.device
        return (du,) + tuple(torch.from_numpy(np.asarray(v, np.float32)).to(dev)
                             for v in (dw, ds, dk))
    g, u, img, m, w, s, k, sv = (_host(x, name) for x, name in (
        (grad, "grad"), (unary, "unary"), (image, "image"), (mask, "mask"),
        (weight, "weight"), (scalars, "scalars"), (compat, "compat"), (saved, "saved")))
    du, dw, ds, dk = _grad.backward(g, u, img, m, w, s, k, sv, cfg, col_pos)
    dk = np.zeros((0,), np.float32) if dk is None else dk
    return tuple(torch.from_numpy(np.asarray(v, np.float32)) for v in (du, dw, ds, dk))


@_conv_crf_backward_op.register_fake
def _conv_crf_backward_fake(grad, unary, image, mask, weight, scalars, compat, saved, config,
                            unary_weight):
    c = unary.shape[1]
    return (unary.new_empty(unary.shape), unary.new_empty((c,)), unary.new_empty((5,)),
            unary.new_empty((c, c) if compat is not None else (0,)))


def _setup_context(ctx, inputs, output):
    unary, image, mask, weight, scalars, compat, config, unary_weight = inputs
    ctx.save_for_backward(unary, image, mask, weight, scalars, compat, output[1])
    ctx.config, ctx.unary_weight = list(config), unary_weight


def _backward(ctx, grad_out, _grad_saved):
    unary, image, mask, weight, scalars, compat, saved = ctx.saved_tensors
    du, dw, ds, dk = torch.ops.segkit.conv_crf_backward(
        grad_out.contiguous(), unary, image, mask, weight, scalars, compat, saved, ctx.config,
        ctx.unary_weight)
    return du, None, None, dw, ds, (dk if compat is not None else None), None, None


_conv_crf_op.register_autograd(_backward, setup_context=_setup_context)


def _as_param(name: str, value: Any, ref: Tensor) -> Tensor:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise InputError(f"{name} must be a number or a one-element tensor; got shape "
                             f"{tuple(value.shape)}")
        return value.reshape(()).to(torch.float32)
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
    cfg = convcrf_params(None, filter_size=filter_size, blur=blur, num_iter=num_iter,
                         unary_weight=unary_weight, unary_kind=unary_kind, init=init,
                         final_softmax=final_softmax)
    n, c, h, w = unary.shape
    u = unary.to(torch.float32).contiguous()
    img = _image_nchw(image, n, h, w, mean, std)
    if isinstance(weight, Tensor):
        if weight.numel() not in (1, c):
            raise InputError(f"weight must have 1 or C = {c} values; got shape "
                             f"{tuple(weight.shape)}")
        wt = weight.to(torch.float32).reshape(-1).expand(c).contiguous()
    else:
        wt = _as_param("weight", weight, u).expand(c).contiguous()
    col_pos = col_sdims is not None
    recip = [1.0 / _as_param(k, v, u) for k, v in (("pos_sdims", pos_sdims),
                                                    ("col_schan", col_schan))]
    recip.append(1.0 / _as_param("col_sdims", col_sdims, u) if col_pos
                 else torch.zeros((), device=u.device))
    scalars = torch.stack([_as_param("pos_compat", pos_compat, u),
                           _as_param("col_compat", col_compat, u), *recip])
    k = None
    if compat is not None:
        if not isinstance(compat, Tensor) or compat.numel() != c * c:
            raise InputError(f"compat must be a (C, C) = ({c}, {c}) tensor; got "
                             f"{getattr(compat, 'shape', compat)!r}")
        k = compat.to(torch.float32).reshape(c, c).contiguous()
    m = None
    if mask is not None:
        if not isinstance(mask, Tensor) or tuple(mask.shape) != (n, h, w):
            raise InputError(f"mask must be a (N, H, W) = ({n}, {h}, {w}) tensor; got "
                             f"{getattr(mask, 'shape', mask)!r}")
        m = (mask != 0).to(torch.uint8).contiguous()
    config = [cfg.filter_size, cfg.blur, cfg.num_iter, _UNARY_KINDS.index(cfg.unary_kind),
              _INITS.index(cfg.init), int(cfg.final_softmax), int(col_pos)]
    out = torch.ops.segkit.conv_crf(u, img, m, wt, scalars, k, config, cfg.unary_weight)[0]
    return out[0] if squeeze else out


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
        s = self.setting
        if unary.dim() == 3 and isinstance(image, Tensor) and image.dim() == 3 \
                and image.shape[-1] == 3 and image.shape[0] != 3:
            image = image.permute(2, 0, 1)
        return conv_crf(
            unary, image, weight=self.weight, pos_compat=self.log_pos_compat.exp(),
            col_compat=self.log_col_compat.exp(), pos_sdims=self.log_pos_sdims.exp(),
            col_schan=self.log_col_schan.exp(),
            col_sdims=None if self.log_col_sdims is None else self.log_col_sdims.exp(),
            compat=self.compat, mask=mask, mean=self.mean, std=self.std,
            filter_size=s.filter_size, blur=s.blur, num_iter=s.num_iter,
            unary_weight=s.unary_weight, unary_kind=s.unary_kind, init=s.init,
            final_softmax=s.final_softmax)

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
