"""The C++ ConvCRF's row resampling at blur > 1 on every instruction set, against the torch
reference: the message upsampled along a row (one window of cells per vector and two lane
permutations, or the scalar taps where the window would pass the row's end) and Q pooled per
cell (a compile-time cell width at blur 2, 4, 8; the general sum otherwise, here blur 6).
tests/test_convcrf.py covers blur 2 and 4 at every class block."""
from __future__ import annotations

import numpy as np
import pytest

import segkit

from .test_convcrf import assert_scores_match, torch_reference


@pytest.mark.parametrize("blur", [6, 8])
@pytest.mark.parametrize("h, w", [(13, 37), (21, 70), (5, 13)])
def test_every_isa_row_resampling(simd_isa, blur, h, w):
    rng = np.random.default_rng(10 * blur + w)
    unary = (3 * rng.standard_normal((1, 11, h, w))).astype(np.float32)
    image = rng.integers(0, 256, (1, 3, h, w)).astype(np.uint8)
    out = segkit.convcrf(unary, image, filter_size=5, blur=blur, num_iter=3, backend="cpp")
    assert segkit._C.simd_isa() == simd_isa
    assert_scores_match(out, torch_reference(unary, image, filter_size=5, blur=blur, num_iter=3))
