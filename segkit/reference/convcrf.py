"""ConvCRF references: the definition of right for ``segkit.convcrf``.

Two independent implementations of the same math (GUIDE section 3, ConvCRF's ``GaussCRF``
with its default configuration, Teichmann and Cipolla 2018):

* :func:`convcrf_torch` follows ConvCRF's own method: per-offset Gaussian filters stored as a
  (N, k, k, h, w) tensor and, every iteration, ``torch.nn.functional.unfold`` of Q into a
  (N, C, k*k, h, w) tensor multiplied by the filters and summed. Any shape and batch, CPU or
  CUDA tensors. This is also the peer the benchmarks measure against.
* :func:`convcrf_numpy` does the same with NumPy by shifting Q once per offset (no unfold):
  O(C*H*W) memory per step, slow but obvious. ``segkit.convcrf(..., backend="numpy")`` runs it.

Both take canonical layouts only: unary (N, C, H, W) and image (N, 3, H, W); the public
function validates and converts. Every constant is rounded to float32 where ConvCRF holds it
in a float32 tensor (1/sdims, 1/schan, the compatibilities, the class weights), so the
results match ConvCRF's to float32 rounding.
"""
from __future__ import annotations

from typing import Any

import numpy as np

#: ConvCRF's default_conf, in segkit's argument names.
DEFAULTS = dict(filter_size=11, blur=4, num_iter=5, pos_sdims=3.0, pos_compat=3.0,
                col_schan=13.0, col_compat=10.0, col_sdims=None, weight_init=0.2,
                unary_weight=1.0, unary_kind="logits", init="convcrf", final_softmax=False)


def pool_geometry(n: int, blur: int) -> tuple[int, int]:
    """(pooled size, padding before) of one image side under ConvCRF's blur pooling: the side
    is padded by off = (blur - n % blur) % blur, ceil(off / 2) of it before the first row."""
    off = (blur - n % blur) % blur
    return -(-n // blur), (off + 1) // 2


def coefficients(weight_init: float, unary_weight: float) -> tuple[np.float32, np.float32]:
    """(unary coefficient, message coefficient) as ConvCRF computes them in float32:
    (unary_weight - w) and w with w = float32(weight_init)."""
    w = np.float32(weight_init)
    return np.float32(np.float32(unary_weight) - w), w


def _shifted(d: int, n: int) -> tuple[slice, slice]:
    """(pixels p, pixels p + d) along a side of n, for the p whose p + d is inside (empty when
    |d| >= n)."""
    lo, hi = max(0, -d), min(n, n - d)
    if hi <= lo:
        return slice(0, 0), slice(0, 0)
    return slice(lo, hi), slice(lo + d, hi + d)


def _inv32(x: float) -> np.float32:
    return np.float32(1.0 / x)


# ---------------------------------------------------------------------------------------
# the mean-field loop, once for every reference
# ---------------------------------------------------------------------------------------

class TorchOps:
    """The array operations :func:`mean_field` needs, on torch tensors (classes on dim 1)."""

    @staticmethod
    def log_softmax(x):
        import torch.nn.functional as F
        return F.log_softmax(x, dim=1)

    @staticmethod
    def softmax(x):
        import torch.nn.functional as F
        return F.softmax(x, dim=1)

    @staticmethod
    def log(x):
        import torch
        return torch.log(x)

    @staticmethod
    def cast(x):
        return x


class NumpyOps:
    """The array operations :func:`mean_field` needs, on NumPy arrays (classes on axis 1);
    every iterate is rounded to float32."""

    @staticmethod
    def log_softmax(x):
        return _log_softmax(x)

    @staticmethod
    def softmax(x):
        return _softmax(x)

    @staticmethod
    def log(x):
        with np.errstate(divide="ignore"):
            return np.log(x)

    @staticmethod
    def cast(x):
        return x.astype(np.float32)


def mean_field(u: Any, message: Any, a: Any, w: Any, *, num_iter: int, unary_kind: str,
               init: str, final_softmax: bool, ops: Any = TorchOps) -> Any:
    """ConvCRF's mean-field loop (GUIDE section 3), the one every reference runs.

    u: the unary (N, C, H, W); message(q): M' of Q (pooling, filtering, upsampling, mask and
    compatibility are the caller's); a, w: the unary and message coefficients (scalars or
    (1, C, 1, 1)); ops: :class:`TorchOps` or :class:`NumpyOps`. Start: U = log_softmax(u)
    (logits) or log(u) (probs); Q_0 = U for logits with init "convcrf" (ConvCRF's quirk), else
    softmax(U). Each iteration pred = a * U + w * message(Q), then Q = softmax(pred) but after
    the last (unless final_softmax). Returns the last pred (or its softmax).
    """
    if unary_kind == "logits":
        lg = ops.log_softmax(u)
        q = lg if init == "convcrf" else ops.softmax(lg)
    else:
        lg = ops.log(u)
        q = ops.softmax(lg)
    pred = q
    for i in range(num_iter):
        pred = ops.cast(a * lg + w * message(q))
        if i < num_iter - 1 or final_softmax:
            pred = ops.cast(ops.softmax(pred))
        q = pred
    return pred


# ---------------------------------------------------------------------------------------
# torch: ConvCRF's unfold-based message passing
# ---------------------------------------------------------------------------------------

def convcrf_torch(unary: Any, image: Any, *, filter_size: int = 11, blur: int = 4,
                  num_iter: int = 5, pos_sdims: float = 3.0, pos_compat: float = 3.0,
                  col_schan: float = 13.0, col_compat: float = 10.0,
                  col_sdims: float | None = None, weight_init: float = 0.2,
                  unary_weight: float = 1.0, unary_kind: str = "logits",
                  init: str = "convcrf", final_softmax: bool = False, weight=None,
                  compat=None):
    """ConvCRF mean-field inference with torch and unfold (weight: per-class message
    weights in place of weight_init; compat: C x C, M' = M + compat @ M).

    unary: (N, C, H, W) float; image: (N, 3, H, W) float (0-255). NumPy arrays or torch
    tensors (CPU or CUDA). Returns float32 scores (N, C, H, W) of the same kind (a NumPy array
    for NumPy input, a tensor on the unary's device otherwise).
    """
    import torch
    import torch.nn.functional as F

    numpy_in = isinstance(unary, np.ndarray)
    u = torch.as_tensor(np.asarray(unary) if numpy_in else unary).float()
    img = torch.as_tensor(image, device=u.device).float()
    n, c, h, w = u.shape
    k, s = filter_size, filter_size // 2
    hp, pad0 = pool_geometry(h, blur)
    wp, pad1 = pool_geometry(w, blur)
    f32 = dict(dtype=torch.float32, device=u.device)

    def pool(x):
        if blur == 1:
            return x
        return F.avg_pool2d(x, kernel_size=blur, padding=(pad0, pad1), count_include_pad=False)

    def gaussian(feats):
        """(N, k*k, hp, wp): exp(-|f(p+d) - f(p)|^2 / 2), zero where p+d is outside."""
        f = pool(feats)
        g = torch.zeros((n, k, k, hp, wp), **f32)
        for dy in range(-s, s + 1):
            for dx in range(-s, s + 1):
                ys, yd = _shifted(dy, hp)
                xs, xd = _shifted(dx, wp)
                diff = f[:, :, yd, xd] - f[:, :, ys, xs]
                g[:, dy + s, dx + s, ys, xs] = torch.exp(torch.sum(-0.5 * diff * diff, dim=1))
        return g.view(n, k * k, hp, wp)

    ys, xs = torch.meshgrid(torch.arange(h, **f32), torch.arange(w, **f32), indexing="ij")
    mesh = torch.stack([ys, xs])[None].expand(n, 2, h, w)
    pos = mesh * torch.tensor(_inv32(pos_sdims), **f32)
    col = img * torch.tensor(_inv32(col_schan), **f32)
    if col_sdims is not None:
        col = torch.cat([mesh * torch.tensor(_inv32(col_sdims), **f32), col], dim=1)
    kernel = (torch.tensor(np.float32(pos_compat), **f32) * gaussian(pos)
              + torch.tensor(np.float32(col_compat), **f32) * gaussian(col))
    kernel = kernel[:, None]  # (N, 1, k*k, hp, wp)

    def message(q):
        cols = F.unfold(pool(q), k, padding=s).view(n, c, k * k, hp, wp)
        m = (cols * kernel).sum(2)
        if blur > 1:
            m = F.interpolate(m, scale_factor=blur, mode="bilinear", align_corners=False)
            m = m[:, :, pad0:pad0 + h, pad1:pad1 + w]
        return m

    a, wt = (torch.tensor(v, **f32) for v in coefficients(weight_init, unary_weight))
    if weight is not None:
        wt = torch.tensor(np.asarray(weight, np.float32), **f32).view(1, c, 1, 1)
        a = torch.tensor(np.float32(unary_weight), **f32) - wt
    mix = None if compat is None else torch.tensor(np.asarray(compat, np.float32), **f32)
    message_of = message
    if mix is not None:
        def message(q):
            m = message_of(q)
            return m + torch.einsum("kd,ndhw->nkhw", mix, m)
    pred = mean_field(u, message, a, wt, num_iter=num_iter, unary_kind=unary_kind, init=init,
                      final_softmax=final_softmax, ops=TorchOps)
    return pred.numpy() if numpy_in else pred


# ---------------------------------------------------------------------------------------
# NumPy: the same math by shifting, one offset at a time
# ---------------------------------------------------------------------------------------

def pool_numpy(x: np.ndarray, blur: int) -> np.ndarray:
    """ConvCRF's blur pooling of (..., H, W): mean of the in-image pixels of each blur x blur
    cell, cells placed with ceil(off/2) padding before the first row/column."""
    if blur == 1:
        return x
    h, w = x.shape[-2:]
    hp, p0 = pool_geometry(h, blur)
    wp, p1 = pool_geometry(w, blur)
    padded = np.zeros(x.shape[:-2] + (hp * blur, wp * blur), np.float64)
    padded[..., p0:p0 + h, p1:p1 + w] = x
    ones = np.zeros((hp * blur, wp * blur))
    ones[p0:p0 + h, p1:p1 + w] = 1
    cells = padded.reshape(x.shape[:-2] + (hp, blur, wp, blur)).sum(axis=(-3, -1))
    counts = ones.reshape(hp, blur, wp, blur).sum(axis=(1, 3))
    return (cells / counts).astype(np.float32)


def upsample_numpy(m: np.ndarray, blur: int, h: int, w: int) -> np.ndarray:
    """Bilinear upsampling by `blur` (align_corners=False, as torch), cropped to (h, w) at the
    pooling padding."""
    hp, p0 = pool_geometry(h, blur)
    wp, p1 = pool_geometry(w, blur)

    def taps(n_in, pad, n_out):
        dst = np.arange(pad, pad + n_out, dtype=np.float32)
        src = np.maximum((dst + np.float32(0.5)) / np.float32(blur) - np.float32(0.5), 0)
        i0 = src.astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        l1 = (src - i0).astype(np.float32)
        return i0, i1, np.float32(1) - l1, l1

    y0, y1, hy0, hy1 = taps(hp, p0, h)
    x0, x1, wx0, wx1 = taps(wp, p1, w)
    top = wx0 * m[..., y0, :][..., x0] + wx1 * m[..., y0, :][..., x1]
    bottom = wx0 * m[..., y1, :][..., x0] + wx1 * m[..., y1, :][..., x1]
    return hy0[:, None] * top + hy1[:, None] * bottom


def gaussian_numpy(feats: np.ndarray, filter_size: int) -> np.ndarray:
    """(N, F, h, w) features -> (N, k*k, h, w) weights exp(-|f(p+d) - f(p)|^2 / 2), offsets in
    row-major order, zero where p+d is outside the image."""
    n, _, h, w = feats.shape
    out = np.zeros((n, filter_size * filter_size, h, w), np.float32)
    for i, (dy, dx) in enumerate(offsets(filter_size)):
        ys, yd = _shifted(dy, h)
        xs, xd = _shifted(dx, w)
        diff = feats[:, :, yd, xd] - feats[:, :, ys, xs]
        out[:, i, ys, xs] = np.exp(np.sum(np.float32(-0.5) * diff * diff, axis=1))
    return out


def offsets(filter_size: int) -> list[tuple[int, int]]:
    s = filter_size // 2
    return [(dy, dx) for dy in range(-s, s + 1) for dx in range(-s, s + 1)]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def convcrf_numpy(unary: np.ndarray, image: np.ndarray, *, filter_size: int = 11,
                  blur: int = 4, num_iter: int = 5, pos_sdims: float = 3.0,
                  pos_compat: float = 3.0, col_schan: float = 13.0, col_compat: float = 10.0,
                  col_sdims: float | None = None, weight_init: float = 0.2,
                  unary_weight: float = 1.0, unary_kind: str = "logits",
                  init: str = "convcrf", final_softmax: bool = False, weight=None,
                  compat=None) -> np.ndarray:
    """ConvCRF mean-field inference with NumPy. unary (N, C, H, W), image (N, 3, H, W) 0-255;
    returns float32 scores (N, C, H, W). A fitted CRF: weight (C,) per-class message weights
    in place of weight_init, compat (C, C) mixes the message (M' = M + compat @ M)."""
    u = np.asarray(unary, np.float32)
    img = np.asarray(image, np.float32)
    n, c, h, w = u.shape
    s = filter_size // 2
    hp, _ = pool_geometry(h, blur)
    wp, _ = pool_geometry(w, blur)

    ys, xs = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32),
                         indexing="ij")
    mesh = np.broadcast_to(np.stack([ys, xs])[None], (n, 2, h, w))
    pos = mesh * _inv32(pos_sdims)
    col = img * _inv32(col_schan)
    if col_sdims is not None:
        col = np.concatenate([mesh * _inv32(col_sdims), col], axis=1)
    kernel = (np.float32(pos_compat) * gaussian_numpy(pool_numpy(pos, blur), filter_size)
              + np.float32(col_compat) * gaussian_numpy(pool_numpy(col, blur), filter_size))

    def message(q):
        qp = np.zeros((n, c, hp + 2 * s, wp + 2 * s), np.float32)
        qp[:, :, s:s + hp, s:s + wp] = pool_numpy(q, blur)
        m = np.zeros((n, c, hp, wp), np.float32)
        for i, (dy, dx) in enumerate(offsets(filter_size)):
            m += kernel[:, i:i + 1] * qp[:, :, s + dy:s + dy + hp, s + dx:s + dx + wp]
        return upsample_numpy(m, blur, h, w) if blur > 1 else m

    a, wt = coefficients(weight_init, unary_weight)
    if weight is not None:
        wt = np.asarray(weight, np.float32).reshape(1, c, 1, 1)
        a = (np.float32(unary_weight) - wt).astype(np.float32)
    if compat is not None:
        mix, message_of = np.asarray(compat, np.float32), message

        def message(q):
            m = message_of(q)
            return (m + np.einsum("kd,ndhw->nkhw", mix, m)).astype(np.float32)
    return mean_field(u, message, a, wt, num_iter=num_iter, unary_kind=unary_kind, init=init,
                      final_softmax=final_softmax, ops=NumpyOps)
