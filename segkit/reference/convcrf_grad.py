"""Trainable ConvCRF reference: the definition of right for ``segkit.torch.conv_crf``.

ConvCRF's own formulation (Teichmann and Cipolla 2018, ``GaussCRF`` with ``trainable=True``),
written with torch and ``F.unfold`` so that autograd differentiates it: the (N, C, k*k, h, w)
tensor ConvCRF builds every iteration is built here too (this is the peer the benchmarks
measure against). Float64 by default (``gradcheck``); any float dtype works.

Learnable quantities, as ConvCRF stores them:

* ``weight`` (C,): the per-class message weight w_c (ConvCRF's (1, C, 1, 1) ``weight``);
  pred = (unary_weight - w_c) * U + w_c * M'.
* ``pos_compat``, ``col_compat``: the kernels' scalar weights.
* ``pos_inv``, ``col_inv``, ``colpos_inv``: the reciprocal bandwidths 1/pos_sdims,
  1/col_schan, 1/col_sdims (ConvCRF's ``pos_sdims``, ``col_schan``, ``col_sdims`` parameters).
* ``compat`` (C, C), optional: ConvCRF's ``convcomp`` 1x1 convolution, applied as
  M' = M + compat @ M (ConvCRF's ``message = message + self.comp(message)``).

The validity mask (segkit's addition for padded training crops): pixels where ``mask`` is
False neither send nor receive. A pooled cell averages its valid pixels only (a cell without
one is invalid); a weight is zero unless both of its cells are valid; the upsampled message is
zero at invalid pixels. With every pixel valid this is exactly ConvCRF (and
:func:`segkit.reference.convcrf.convcrf_torch`).
"""
from __future__ import annotations

from typing import Any

from .convcrf import TorchOps, mean_field, pool_geometry


def _pool_sums(x, blur: int, h: int, w: int):
    """Sums of (N, F, H, W) over the blur x blur cells of ConvCRF's pooling grid."""
    import torch.nn.functional as F

    hp, p0 = pool_geometry(h, blur)
    wp, p1 = pool_geometry(w, blur)
    x = F.pad(x, (p1, wp * blur - w - p1, p0, hp * blur - h - p0))
    n, f = x.shape[:2]
    return x.view(n, f, hp, blur, wp, blur).sum(dim=(3, 5))


def conv_crf_torch(unary: Any, image: Any, *, weight: Any, pos_compat: Any, col_compat: Any,
                   pos_inv: Any, col_inv: Any, colpos_inv: Any = None, compat: Any = None,
                   mask: Any = None, filter_size: int = 11, blur: int = 4, num_iter: int = 5,
                   unary_weight: float = 1.0, unary_kind: str = "logits",
                   init: str = "convcrf", final_softmax: bool = False):
    """Differentiable ConvCRF mean-field inference by unfold (ConvCRF's method).

    unary (N, C, H, W) float tensor; image (N, 3, H, W) float tensor, 0-255; weight (C,);
    pos_compat, col_compat, pos_inv, col_inv, colpos_inv: 0-d tensors (colpos_inv None: no
    position term in the colour kernel); compat (C, C) or None; mask (N, H, W) bool or None.
    Everything runs in the unary's dtype. Returns the scores (N, C, H, W).
    """
    import torch
    import torch.nn.functional as F

    u = unary
    dt, dev = u.dtype, u.device
    n, c, h, w = u.shape
    k, s = filter_size, filter_size // 2
    hp, p0 = pool_geometry(h, blur)
    wp, p1 = pool_geometry(w, blur)
    m = (torch.ones((n, 1, h, w), dtype=dt, device=dev) if mask is None
         else mask.to(dt).view(n, 1, h, w))
    counts = _pool_sums(m, blur, h, w)                      # (N, 1, hp, wp)
    valid = (counts > 0).to(dt)
    inv_count = valid / counts.clamp(min=1)

    def pool(x):
        return _pool_sums(x * m, blur, h, w) * inv_count

    def unfold(x):  # (N, F, hp, wp) -> (N, F, k*k, hp, wp), zero outside the grid
        return F.unfold(x, k, padding=s).view(x.shape[0], x.shape[1], k * k, hp, wp)

    ys, xs = torch.meshgrid(torch.arange(h, dtype=dt, device=dev),
                            torch.arange(w, dtype=dt, device=dev), indexing="ij")
    mesh = pool(torch.stack([ys, xs])[None].expand(n, 2, h, w))   # pooled positions
    rgb = pool(image.to(dt))
    # |f(p+d) - f(p)|^2 of the unscaled features, per offset; the scales multiply it
    vpair = unfold(valid) * valid[:, :, None]                    # both cells valid
    dpos = ((unfold(mesh) - mesh[:, :, None]) ** 2).sum(1)       # (N, k*k, hp, wp)
    dcol = ((unfold(rgb) - rgb[:, :, None]) ** 2).sum(1)
    vpair = vpair[:, 0]
    g_pos = torch.exp(-0.5 * pos_inv ** 2 * dpos) * vpair
    col_arg = col_inv ** 2 * dcol
    if colpos_inv is not None:
        col_arg = col_arg + colpos_inv ** 2 * dpos
    g_col = torch.exp(-0.5 * col_arg) * vpair
    kernel = (pos_compat * g_pos + col_compat * g_col)[:, None]  # (N, 1, k*k, hp, wp)

    def message(q):
        msg = (unfold(pool(q)) * kernel).sum(2)
        if blur > 1:
            msg = F.interpolate(msg, scale_factor=blur, mode="bilinear", align_corners=False)
            msg = msg[:, :, p0:p0 + h, p1:p1 + w]
        msg = msg * m
        if compat is not None:
            msg = msg + torch.einsum("ij,njhw->nihw", compat, msg)
        return msg

    wc = weight.view(1, c, 1, 1)
    return mean_field(u, message, unary_weight - wc, wc, num_iter=num_iter,
                      unary_kind=unary_kind, init=init, final_softmax=final_softmax,
                      ops=TorchOps)
