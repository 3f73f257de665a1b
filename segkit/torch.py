"""torch face of segkit: :class:`ConvCRF` as an ``nn.Module`` (for mmseg and other torch
code). Import it explicitly (``from segkit.torch import ConvCRF``); ``import segkit`` never
loads torch.

Inference only: the module runs segkit's fused kernels (C++ for CPU tensors, CUDA for CUDA
tensors, on the tensor's device and torch's current stream, without copies) and returns a
tensor with no gradient.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .ops.convcrf import CrfParams, convcrf, crf_params


class ConvCRF(torch.nn.Module):
    """ConvCRF mean-field inference as a module: ``forward(unary, image) -> scores``.

    Parameters are those of :func:`segkit.convcrf` (``preset``, ``filter_size``, ``blur``,
    ``num_iter``, ...; None: the preset's value or ConvCRF's default) plus ``backend``.

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

    def __init__(self, preset: str | None = None, *, backend: str = "auto", **params: Any):
        super().__init__()
        self.setting: CrfParams = crf_params(preset, **params)
        self.backend = backend

    def _kwargs(self) -> dict[str, Any]:
        kw = self.setting.reference_kwargs()
        return {k: v for k, v in kw.items() if v is not None}

    def forward(self, unary: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """unary (N, C, H, W) or (C, H, W); image (N, 3, H, W), (N, H, W, 3), (H, W, 3) or
        (3, H, W), uint8 or float 0-255, on the unary's device. Returns float32 scores."""
        with torch.no_grad():
            if unary.is_cuda:
                return convcrf(unary.detach(), image.detach(), backend=self.backend,
                               **self._kwargs())
            out = convcrf(unary.detach().numpy(), image.detach().cpu().numpy(),
                          backend=self.backend, **self._kwargs())
            return torch.from_numpy(np.ascontiguousarray(out))

    def labels(self, unary: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """argmax over classes of :meth:`forward` (int64 tensor, (N, H, W) or (H, W))."""
        return self.forward(unary, image).argmax(dim=-3)

    def extra_repr(self) -> str:
        s = self.setting
        return (f"filter_size={s.filter_size}, blur={s.blur}, num_iter={s.num_iter}, "
                f"unary_kind={s.unary_kind!r}, init={s.init!r}, backend={self.backend!r}")


__all__ = ["ConvCRF"]
