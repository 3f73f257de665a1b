"""Numba fused vote + per-class scale + argmax + confusion counts (one pass over the data):
the arithmetic of :mod:`segkit.reference.vote_confusion`, parallel over chunks of pixels, each
chunk with its own (C, C) histogram, summed at the end.

float16 inputs arrive as their uint16 bits and are converted exactly by LLVM's own
half -> float extension (``fpext``), which becomes one vcvtph2ps per 8 values where the CPU
has F16C (a plain integer sequence elsewhere); every one of the 65536 bit patterns converts
as NumPy's ``float16.astype(float32)`` does (tested).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload


@intrinsic
def half_bits_to_float(typingctx, u):
    """float32 value of the IEEE float16 whose bits are the low 16 bits of integer `u`."""
    if not isinstance(u, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        value = args[0]
        if value.type.width > 16:
            value = builder.trunc(value, ir.IntType(16))
        elif value.type.width < 16:
            value = builder.zext(value, ir.IntType(16))
        return builder.fpext(builder.bitcast(value, ir.HalfType()), ir.FloatType())

    return types.float32(u), codegen


def load(v):
    """float32 value of one input element: float16 bits (uint16) or float32."""
    raise NotImplementedError  # only called from jitted code (see the overload below)


@overload(load)
def _load(v):
    if v == types.uint16:
        return lambda v: half_bits_to_float(v)
    if v == types.float32:
        return lambda v: v
    return None


@njit(cache=True)
def half_to_float_all(bits, out):
    """out[i] = float32 of the float16 bits[i] (for the exhaustive test)."""
    for i in range(bits.size):
        out[i] = half_bits_to_float(bits[i])

#: Pixels per inner tile (the running best/label/acc arrays stay in L1).
TILE = 2048
#: At most this many parallel chunks (each holds a C*C int64 histogram).
MAX_CHUNKS = 256


@njit(parallel=True, cache=True)
def vote_confusion(data, factors, scale, gt, num_classes, has_ign, ign):
    """data: C-contiguous (M, C, P) uint16 (float16 bits) or float32; factors: (M,) float32
    (0 skips a model); scale: (C,) float32 (exp of the bias); gt: (P,) integer labels.
    Returns (counts (C*C,) int64 indexed [gt * C + pred], bad (2,): gt out of range, NaN
    scores)."""
    m_count, nc, npix = data.shape
    tiles = (npix + TILE - 1) // TILE
    chunks = max(1, min(MAX_CHUNKS, tiles))
    per = (tiles + chunks - 1) // chunks
    local = np.zeros((chunks, num_classes * num_classes), np.int64)
    bad = np.zeros((chunks, 2), np.int64)
    for k in prange(chunks):
        best = np.empty(TILE, np.float32)
        lab = np.zeros(TILE, np.int32)
        acc = np.empty(TILE, np.float32)
        for t in range(k * per, min(tiles, (k + 1) * per)):
            x0 = t * TILE
            x1 = min(x0 + TILE, npix)
            length = x1 - x0
            for c in range(nc):
                acc[:length] = 0
                for m in range(m_count):
                    f = factors[m]
                    if f == 0:
                        continue
                    src = data[m, c, x0:x1]
                    for x in range(length):
                        acc[x] = acc[x] + f * load(src[x])
                s_c = scale[c]
                if c == 0:
                    for x in range(length):
                        best[x] = acc[x] * s_c
                        lab[x] = 0
                else:
                    for x in range(length):
                        s = acc[x] * s_c
                        b = best[x]
                        better = s > b
                        best[x] = s if better else b
                        lab[x] = c if better else lab[x]
            for x in range(length):
                if best[x] != best[x]:
                    bad[k, 1] += 1
                g = np.int64(gt[x0 + x])
                if has_ign and g == ign:
                    continue
                if g < 0 or g >= num_classes:
                    bad[k, 0] += 1
                else:
                    local[k, g * num_classes + lab[x]] += 1
    return local.sum(0), bad.sum(0)


@njit(parallel=True, cache=True)
def settled_pixels(probs, ratio, top, settled):
    """For one model's (C, P) probabilities (uint16 float16 bits or float32): top[x] = its top
    class (the first of equal maxima) and settled[x] = that probability > ratio x the second
    largest. Vectorised over tiles of pixels, parallel over tiles."""
    nc, npix = probs.shape
    tiles = (npix + TILE - 1) // TILE
    for t in prange(tiles):
        x0 = t * TILE
        x1 = min(x0 + TILE, npix)
        length = x1 - x0
        best = np.empty(TILE, np.float32)
        second = np.full(TILE, np.float32(-1.0))
        arg = np.zeros(TILE, np.int32)
        src = probs[0, x0:x1]
        for x in range(length):
            best[x] = load(src[x])
        for c in range(1, nc):
            src = probs[c, x0:x1]
            for x in range(length):  # branch-free, so that LLVM vectorises it
                v = load(src[x])
                b = best[x]
                above = v > b
                s2 = second[x]
                second[x] = b if above else (v if v > s2 else s2)
                best[x] = v if above else b
                arg[x] = c if above else arg[x]
        for x in range(length):
            top[x0 + x] = arg[x]
            settled[x0 + x] = best[x] > ratio * second[x]
