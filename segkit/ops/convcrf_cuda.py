"""The CUDA backend's launch sequence of :func:`segkit.convcrf`: the forward of the one ConvCRF
kernel family (csrc/cuda/convcrf.cu, segkit.ops.convcrf_grad_cuda.forward_steps) without saved
state; the tests drive it with the kernels compiled for the host (tests/test_convcrf_cuda.py)."""
from __future__ import annotations

import numpy as np

from .convcrf import ConvCrfParams


def cuda_steps(scores, img, params: ConvCrfParams, launch, empty) -> None:
    """ConvCRF of setting `params` in place on `scores` (N, C, H, W) float32, C-contiguous;
    `img` (N, 3, H, W) uint8 or float32, any strides that are multiples of its item size.

    `launch(kernel_name, work_items, args)` runs one kernel, `empty(shape)` allocates a
    float32 device array; tests drive the same sequence with the kernels compiled for the host.
    The trainable op's forward with nothing saved: one pooled message and one pooled Q beside
    the scores (which hold U until the last iteration); a fitted setting's per-class weights
    and compatibility run the same kernels.
    """
    from .convcrf_grad import PARAMS, class_weights, compat_matrix
    from .convcrf_grad_cuda import forward_steps

    n, c = scores.shape[:2]

    def device(value):  # a host value on the device: CuPy's set(), or the emulation's copy
        host = np.ascontiguousarray(value, np.float32)
        out = empty(host.shape)
        if hasattr(out, "set"):
            out.set(host)
        else:
            out[...] = host
        return out

    values = {k: None if getattr(params, k) is None else device(getattr(params, k))
              for k in PARAMS}
    compat = compat_matrix(params)
    forward_steps(launch, lambda shape, dtype: empty(shape), scores, img, None,
                  device(class_weights(params, c)), None if compat is None else device(compat),
                  values, params, keep=False, out=scores)
