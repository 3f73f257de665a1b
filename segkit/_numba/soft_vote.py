"""Numba soft vote: the arithmetic of csrc/common/soft_vote.h (models in order, one float32
rounding per product and per sum, ties to the smallest class), parallel over tiles of pixels.

Numba has no float16 on the CPU, so float16 inputs are read as their uint16 bits and converted
exactly with integer operations (two small intrinsics reinterpret bits as float32 and back).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

#: Pixels per parallel task (a tile's running best/label arrays stay in L1).
TILE = 2048


@intrinsic
def _u32_as_f32(typingctx, u):
    """The float32 whose bits are the low 32 bits of the integer `u` (Numba widens uint32
    arithmetic to 64 bits)."""
    if not isinstance(u, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        value = args[0]
        if value.type.width > 32:
            value = builder.trunc(value, ir.IntType(32))
        return builder.bitcast(value, ir.FloatType())

    return types.float32(u), codegen


@intrinsic
def _f32_as_u32(typingctx, f):
    if f != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(types.float32), codegen


@njit(cache=True)
def half_to_float(h):
    """IEEE float16 bits (uint16) -> float32, exact (zeros, subnormals, inf, NaN). Branch-free
    (every case is computed, then selected) so that LLVM vectorises the loops that call it."""
    u = np.uint32(h)
    sign = (u & np.uint32(0x8000)) << np.uint32(16)
    mag = u & np.uint32(0x7FFF)
    normal = (mag << np.uint32(13)) + np.uint32(0x38000000)
    sub = _f32_as_u32(np.float32(np.int32(mag)) * np.float32(2.0 ** -24))
    special = np.uint32(0x7F800000) | ((mag & np.uint32(0x3FF)) << np.uint32(13))
    bits = sub if mag < np.uint32(0x400) else normal
    bits = special if mag >= np.uint32(0x7C00) else bits
    return _u32_as_f32(sign | bits)


def to_float32(v):
    """float32 value of one input element: float16 bits (uint16) or float32."""
    raise NotImplementedError  # only called from jitted code (see the overload below)


@overload(to_float32)
def _to_float32(v):
    if v == types.uint16:
        return lambda v: half_to_float(v)
    if v == types.float32:
        return lambda v: v
    return None


@njit(parallel=True, cache=True)
def soft_vote(arrays, w, labels, probs, write_probs):
    """arrays: typed List of M C-contiguous (N, C, P) arrays (P = H*W pixels), uint16 (float16
    bits) or float32; w: M float32 factors; labels (N, P); probs (N, C, P) float32, written if
    write_probs. Returns True if a weighted sum was NaN."""
    n, nc, npix = arrays[0].shape
    m_count = len(arrays)
    tiles = (npix + TILE - 1) // TILE
    tasks = n * tiles
    bad = np.zeros(tasks, np.bool_)
    for t in prange(tasks):
        i = t // tiles
        x0 = (t % tiles) * TILE
        x1 = min(x0 + TILE, npix)
        length = x1 - x0
        best = np.empty(length, np.float32)
        lab = np.zeros(length, np.int32)
        acc = np.empty(length, np.float32)
        nan = False
        for c in range(nc):
            acc[:] = 0
            # Models in order, four (then one) at a time: the sum is the same left-to-right
            # chain as one model at a time, with fewer passes over `acc`.
            m = 0
            while m + 4 <= m_count:
                s0 = arrays[m][i, c, x0:x1]
                s1 = arrays[m + 1][i, c, x0:x1]
                s2 = arrays[m + 2][i, c, x0:x1]
                s3 = arrays[m + 3][i, c, x0:x1]
                f0, f1, f2, f3 = w[m], w[m + 1], w[m + 2], w[m + 3]
                for x in range(length):
                    v = acc[x] + f0 * to_float32(s0[x])
                    v = v + f1 * to_float32(s1[x])
                    v = v + f2 * to_float32(s2[x])
                    acc[x] = v + f3 * to_float32(s3[x])
                m += 4
            while m < m_count:
                src = arrays[m][i, c, x0:x1]
                f = w[m]
                for x in range(length):
                    acc[x] = acc[x] + f * to_float32(src[x])
                m += 1
            if write_probs:
                probs[i, c, x0:x1] = acc
            if c == 0:
                best[:] = acc
            else:  # branch-free, so that LLVM vectorises it
                for x in range(length):
                    s = acc[x]
                    b = best[x]
                    better = s > b
                    best[x] = s if better else b
                    lab[x] = c if better else lab[x]
            for x in range(length):
                nan |= acc[x] != acc[x]
        for x in range(length):
            labels[i, x0 + x] = lab[x]
        bad[t] = nan
    return bad.any()
