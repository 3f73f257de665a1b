"""The backends of :func:`segkit.convcrf`: each runs one validated setting
(:class:`segkit.ops.convcrf.ConvCrfParams`) on float32 scores (N, C, H, W): in place, or (the
backends of :data:`READS_UNARY`) reading them as the unary and returning new scores."""
from __future__ import annotations

import numpy as np


def _run_numpy(scores, img, params):
    from ..reference.convcrf import convcrf_numpy

    return convcrf_numpy(scores, img.astype(np.float32), **params.reference_kwargs())


def _host_image(img):
    item = img.itemsize
    if img.size and (min(img.strides) < 0 or any(s % item for s in img.strides)):
        img = np.ascontiguousarray(img)
    return img


def _run_numba(scores, img, params):
    from .._numba.convcrf import convcrf as kernel
    from .convcrf import INITS, UNARY_KINDS

    k = params.kernel_constants()
    k.update(unary_kind=UNARY_KINDS.index(k["unary_kind"]), init=INITS.index(k["init"]))
    if params.fitted:
        k.update(class_weight=None if params.weight is None else np.asarray(params.weight),
                 compat=None if params.compat is None else np.asarray(params.compat),
                 unary_weight=params.unary_weight)
        if params.weight is None:  # compat alone: weight_init for every class
            k["class_weight"] = np.full(scores.shape[1], params.weight_init)
    kernel(scores, _host_image(img), **k)
    return scores


def _run_cpp(unary, img, params):
    from .. import _C

    scores = np.empty_like(unary)  # the kernel writes every element
    logits = params.unary_kind == "logits"
    if not _C.convcrf(scores, _host_image(img), params.kernel_params, unary=unary,
                      check_unary=logits):
        from ..errors import InputError
        from .convcrf import check_unary_values

        check_unary_values(unary, params.unary_kind, np)  # names the values
        raise InputError("unary: a value the kernel refuses")  # not reached
    return scores


def _fitted_cpp(scores, img, params):
    from . import convcrf_grad

    return convcrf_grad.apply(scores, np.ascontiguousarray(img, np.float32), params)


def _run_cuda(scores, img, params):
    import cupy

    from .. import _cuda

    def launch(name, total, args):
        _cuda.launch(_cuda.get_kernel("convcrf", name), total, args)  # op_stream's stream

    item = img.itemsize
    if img.size and (min(img.strides) < 0 or any(s % item for s in img.strides)):
        img = cupy.ascontiguousarray(img)
    from .convcrf_cuda import cuda_steps

    cuda_steps(scores, img, params, launch, lambda shape: cupy.empty(shape, np.float32))
    return scores


def _on_cpp(unary, img, params):
    """The cpp runner: the fused kernel, or the trainable op's forward for a fitted setting;
    both read `unary` and return new scores."""
    return (_fitted_cpp if params.fitted else _run_cpp)(unary, img, params)


#: The runner of each backend (the table's row of convcrf). The NumPy reference and the Numba
#: kernels take a fitted setting's per-class weights and compat as arrays; C++ runs the
#: trainable op's forward without saved state for it, CUDA its one kernel family (which takes
#: both).
RUNNERS = {"numpy": _run_numpy, "numba": _run_numba, "cpp": _on_cpp, "cuda": _run_cuda}
#: The backends whose runner only reads the scores it is given (the unary) and returns new ones:
#: the op hands them the caller's float32 C-contiguous unary without a copy.
READS_UNARY = frozenset({"cpp"})
#: The backends whose kernel checks a logits unary (every value finite) in its first pass and
#: raises check_unary_values' InputError: the op does not scan it before.
CHECKS_LOGITS = frozenset({"cpp"})
