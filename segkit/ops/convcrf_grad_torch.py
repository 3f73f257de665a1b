"""The trainable ConvCRF as a torch op: ``torch.ops.segkit.conv_crf`` and its backward
``torch.ops.segkit.conv_crf_backward``, registered with ``torch.library`` (typed schemas, fake
kernels for ``torch.compile``, autograd). :func:`segkit.torch.conv_crf` and
``segkit.torch.ConvCRF(trainable=True)`` build the call from one setting
(:class:`segkit.ops.convcrf.ConvCrfParams`: the constants) and the learnable values.

Schema (the names are those of the setting; every learnable value is a tensor, so that
gradients reach it, and the backward returns the gradient w.r.t. each by name)::

    conv_crf(Tensor unary, Tensor image, Tensor? mask, Tensor weight, Tensor pos_compat,
             Tensor col_compat, Tensor pos_sdims, Tensor col_schan, Tensor? col_sdims,
             Tensor? compat, int filter_size, int blur, int num_iter, str unary_kind,
             str init, bool final_softmax, float unary_weight) -> (Tensor, Tensor)

CPU tensors run the C++ kernels (segkit.ops.convcrf_grad), CUDA tensors the CUDA kernels
(segkit.ops.convcrf_grad_cuda: the values stay on the device; compiled and emulated on the
host in the tests, not run on a GPU here).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from ..errors import InputError, UnavailableError
from . import convcrf_grad as _grad
from .convcrf import ConvCrfParams, convcrf_params

Tensor = torch.Tensor

#: The op's named scalar values, learnable (gradients w.r.t. each, col_sdims None: absent).
PARAMS = _grad.PARAMS


def geometry_of(p: ConvCrfParams) -> dict[str, Any]:
    """The constant part of a setting as the op's keyword arguments (the schema's names)."""
    return dict(filter_size=p.filter_size, blur=p.blur, num_iter=p.num_iter,
                unary_kind=p.unary_kind, init=p.init, final_softmax=p.final_softmax,
                unary_weight=p.unary_weight)


def _host(x: Optional[Tensor]):
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
    from .. import _cuda

    with _cuda.op_stream(*[t for t in tensors if t is not None]):
        arrays = [None if t is None else cupy.asarray(t.detach().contiguous()) for t in tensors]

        def launch(name, total, args):
            _cuda.launch(_cuda.get_kernel("convcrf_grad", name), total, args)

        out = step(launch, lambda shape, dtype: cupy.empty(shape, dtype), *arrays, *rest)
        return tuple(torch.from_dlpack(o) if isinstance(o, cupy.ndarray) else o for o in out)


def _explain(unary, image, weight, compat, values: dict, geometry: dict) -> None:
    """The InputError naming the first bad input (the slow path, after the check failed)."""
    _grad.check_unary(_host(unary), geometry["unary_kind"])
    if not bool(torch.isfinite(image).all()):
        raise InputError("image contains NaN or inf")
    if not bool(torch.isfinite(weight).all()):
        raise InputError(f"weight must be finite; got {weight.tolist()}")
    if compat is not None and not bool(torch.isfinite(compat).all()):
        raise InputError("compat contains NaN or inf")
    _grad.check_trainable(convcrf_params(None, **geometry, **{
        k: float(v) for k, v in values.items() if v is not None}))
    raise InputError("conv_crf: an input failed the value check")  # not reached


def _range_flags(t: Tensor, positive: bool = False) -> list[Tensor]:
    """0-d bool tensors on t's device, true where every value of `t` is finite (and > 0 with
    `positive`). One reduction pass (aminmax) and no temporary the size of `t`: NaN propagates
    to both ends and an infinity is one of them, so the check is exact. A tensor that holds
    integers (a uint8 image) or nothing has nothing to check."""
    if not t.is_floating_point() or t.numel() == 0:
        return []
    lo, hi = torch.aminmax(t)
    flags = [torch.isfinite(lo) & torch.isfinite(hi)]
    return flags + [lo > 0] if positive else flags


def _checked_setting(unary, image, weight, compat, values: dict, geometry: dict
                     ) -> ConvCrfParams:
    """The op's arguments as the validated setting. Every value check runs on the tensors'
    device, allocates nothing the size of an input and meets the host once (one flag); on
    the CPU the setting holds the scalar values, on CUDA only the geometry (the values stay on
    the device, read by the kernels). On the CPU the unary is checked by the forward kernel in
    its first pass (segkit.ops.convcrf_grad.forward raises), not here."""
    for name, t in (("image", image), ("weight", weight), ("compat", compat), *values.items()):
        if t is not None and t.device != unary.device:
            raise InputError(f"{name} is on {t.device}, the unary on {unary.device}: every "
                             "tensor of conv_crf must be on the unary's device")
    flags = _range_flags(unary, positive=geometry["unary_kind"] == "probs") \
        if unary.is_cuda else []
    for t in (image, weight, compat):
        if t is not None:
            flags += _range_flags(t)
    for k, v in values.items():
        if v is not None:
            flags.append(torch.isfinite(v) & ((v >= 0) if k.endswith("compat") else (v > 0)))
    if flags and not bool(torch.stack(flags).all()):  # the one host synchronisation of a call
        _explain(unary, image, weight, compat, values, geometry)
    if unary.is_cuda:
        return convcrf_params(None, **geometry)
    return convcrf_params(None, **geometry, **{k: float(v) for k, v in values.items()
                                               if v is not None})


@torch.library.custom_op("segkit::conv_crf", mutates_args=())
def _conv_crf_op(unary: Tensor, image: Tensor, mask: Optional[Tensor], weight: Tensor,
                 pos_compat: Tensor, col_compat: Tensor, pos_sdims: Tensor, col_schan: Tensor,
                 col_sdims: Optional[Tensor], compat: Optional[Tensor], filter_size: int,
                 blur: int, num_iter: int, unary_kind: str, init: str, final_softmax: bool,
                 unary_weight: float) -> tuple[Tensor, Tensor]:
    """(scores (N, C, H, W), saved (N, T, C, Hp, Wp): Qb_t, the pooled Q that iteration t + 1's
    message pass reads); float32 inputs as
    :func:`conv_crf` prepares them, the scalar values 0-d tensors on the unary's device."""
    geometry = dict(filter_size=filter_size, blur=blur, num_iter=num_iter,
                    unary_kind=unary_kind, init=init, final_softmax=final_softmax,
                    unary_weight=unary_weight)
    values = dict(zip(PARAMS, (pos_compat, col_compat, pos_sdims, col_schan, col_sdims)))
    p = _checked_setting(unary, image, weight, compat, values, geometry)
    if unary.is_cuda:
        from .convcrf_grad_cuda import forward_steps

        return _on_gpu(lambda launch, empty, u, img, m, w, k, *v: forward_steps(
            launch, empty, u, img, m, w, k, dict(zip(PARAMS, v)), p),
            (unary, image, mask, weight, compat, *values.values()))
    out, saved = _grad.forward(*(_host(x) for x in (unary, image, mask)), p, _host(weight),
                               _host(compat))
    return torch.from_numpy(out), torch.from_numpy(saved)


@_conv_crf_op.register_fake
def _conv_crf_fake(unary, image, mask, weight, pos_compat, col_compat, pos_sdims, col_schan,
                   col_sdims, compat, filter_size, blur, num_iter, unary_kind, init,
                   final_softmax, unary_weight):
    n, c, h, w = unary.shape
    return (unary.new_empty(unary.shape),
            unary.new_empty((n, num_iter, c, -(-h // blur), -(-w // blur))))


@torch.library.custom_op("segkit::conv_crf_backward", mutates_args=())
def _conv_crf_backward_op(grad: Tensor, saved: Tensor, unary: Tensor, image: Tensor,
                          mask: Optional[Tensor], weight: Tensor, pos_compat: Tensor,
                          col_compat: Tensor, pos_sdims: Tensor, col_schan: Tensor,
                          col_sdims: Optional[Tensor], compat: Optional[Tensor],
                          filter_size: int, blur: int, num_iter: int, unary_kind: str,
                          init: str, final_softmax: bool, unary_weight: float
                          ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                                     Tensor]:
    """(d_unary, d_weight, d_pos_compat, d_col_compat, d_pos_sdims, d_col_schan, d_col_sdims,
    d_compat): the gradient w.r.t. each input of ``conv_crf`` by name (float32; the scalars
    0-d, d_col_sdims 0 when absent, d_compat (0,) when absent), from grad = dL/d scores and
    the forward's saved pooled Q."""
    geometry = dict(filter_size=filter_size, blur=blur, num_iter=num_iter,
                    unary_kind=unary_kind, init=init, final_softmax=final_softmax,
                    unary_weight=unary_weight)
    values = dict(zip(PARAMS, (pos_compat, col_compat, pos_sdims, col_schan, col_sdims)))
    if unary.is_cuda:
        from .convcrf_grad_cuda import backward_steps

        p = convcrf_params(None, **geometry)  # the values stay on the device
        du, dw, dp, dk = _on_gpu(lambda launch, empty, gr, sv, u, img, m, w, k, *v:
                                 backward_steps(launch, empty, gr, u, img, m, w, k,
                                                dict(zip(PARAMS, v)), sv, p),
                                 (grad, saved, unary, image, mask, weight, compat,
                                  *values.values()))
        dk = unary.new_zeros((0,)) if dk is None else dk
        return (du, dw, *dp.unbind(0), dk)
    p = convcrf_params(None, **geometry, **{k: float(v) for k, v in values.items()
                                            if v is not None})
    du, dw, dp, dk = _grad.backward(*(_host(x) for x in (grad, unary, image, mask)), p,
                                    _host(weight), _host(compat), _host(saved))
    f32 = dict(dtype=torch.float32)
    return (torch.from_numpy(du), torch.tensor(dw, **f32),
            *(torch.tensor(dp[k], **f32) for k in PARAMS),
            torch.zeros((0,), **f32) if dk is None else torch.tensor(dk, **f32))


@_conv_crf_backward_op.register_fake
def _conv_crf_backward_fake(grad, saved, unary, image, mask, weight, pos_compat, col_compat,
                            pos_sdims, col_schan, col_sdims, compat, *constants):
    c = unary.shape[1]
    return (unary.new_empty(unary.shape), unary.new_empty((c,)),
            *(unary.new_empty(()) for _ in PARAMS),
            unary.new_empty((c, c) if compat is not None else (0,)))


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:10], output[1])
    ctx.constants = inputs[10:]
    # `saved` has no gradient (so grad_out, of the one differentiable output, is never None
    # here): without these autograd would hand _backward a zero tensor of its size (C*Hp*Wp
    # floats per iteration) at the step's peak
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_out, _grad_saved):
    *tensors, saved = ctx.saved_tensors
    unary, image, mask, weight, pc, cc, ps, cs, cps, compat = tensors
    du, dw, dpc, dcc, dps, dcs, dcps, dk = torch.ops.segkit.conv_crf_backward(
        grad_out.contiguous(), saved, *tensors, *ctx.constants)
    return (du, None, None, dw, dpc, dcc, dps, dcs, dcps if cps is not None else None,
            dk if compat is not None else None) + (None,) * len(ctx.constants)


_conv_crf_op.register_autograd(_backward, setup_context=_setup_context)
