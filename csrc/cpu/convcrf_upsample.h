// CPU ConvCRF: gathers along a row by window loads and lane permutations: the bilinear
// upsampling from its taps, shared by the forward (convcrf_update.h) and the trainable backward
// (convcrf_grad_upsample.h), and the backward's spread of pooled cells over their columns.
// Include it after the translation unit's `#pragma GCC optimize("no-trapping-math")`.
#pragma once
#include "common/macros.h"
#include "cpu/simd.h"

namespace segkit {
namespace cpu {

// The window loop of the two gathers below: for each whole vector of L outputs from x0 whose
// indices lo[x0] .. hi[x0 + L - 1] span fewer than L values of m (mlen readable), vec(x0, w,
// base) with w the window of m from base; every other output, and the tail past the last whole
// vector, one(x).
template <int B, class Whole, class One>
SEGKIT_ALWAYS void over_windows(const float* __restrict m, index_t mlen, const int* __restrict lo,
                                const int* __restrict hi, index_t n, const Whole& vec,
                                const One& one) {
  constexpr int L = Vec<float, B>::lanes;
  index_t x0 = 0;
  for (; x0 + L <= n; x0 += L) {
    const int base = lo[x0];
    if (hi[x0 + L - 1] - base < L && base + L <= mlen)
      vec(x0, loadv<vec_t<float, B>>(m + base), base);
    else
      for (index_t x = x0; x < x0 + L; ++x) one(x);
  }
  for (index_t x = x0; x < n; ++x) one(x);
}

// e[x] = l0[x] m[i0[x]] + l1[x] m[i1[x]] for x < n (the tap arrays hold n entries; m holds
// mlen readable floats). A vector of L outputs whose taps span fewer than L cells reads them
// with one load and two lane permutations (vpermps) instead of 2 L scalar loads; the others,
// and the tail past the last whole vector, take the scalar form: the same products and sum.
template <int B>
SEGKIT_ALWAYS void upsample_taps(const float* __restrict m, index_t mlen, const int* __restrict i0,
                                 const int* __restrict i1, const float* __restrict l0,
                                 const float* __restrict l1, index_t n, float* __restrict e) {
  typedef vec_t<float, B> V;
  typedef vec_t<int, B> IV;
  over_windows<B>(
      m, mlen, i0, i1, n,
      [&](index_t x0, V w, int base) SEGKIT_BODY {
        const V a0 = __builtin_shuffle(w, loadv<IV>(i0 + x0) - base);
        const V a1 = __builtin_shuffle(w, loadv<IV>(i1 + x0) - base);
        storev(e + x0, loadv<V>(l0 + x0) * a0 + loadv<V>(l1 + x0) * a1);
      },
      [&](index_t x) SEGKIT_BODY { e[x] = l0[x] * m[i0[x]] + l1[x] * m[i1[x]]; });
}

// o[x] = m[cell[x]] for x < n (cell ascending; m holds mlen readable floats): one window load
// and one lane permutation per vector where the cells fit.
template <int B>
SEGKIT_ALWAYS void spread_cells(const float* __restrict m, index_t mlen,
                                const int* __restrict cell, index_t n, float* __restrict o) {
  typedef vec_t<float, B> V;
  typedef vec_t<int, B> IV;
  over_windows<B>(
      m, mlen, cell, cell, n,
      [&](index_t x0, V w, int base) SEGKIT_BODY {
        storev(o + x0, __builtin_shuffle(w, loadv<IV>(cell + x0) - base));
      },
      [&](index_t x) SEGKIT_BODY { o[x] = m[cell[x]]; });
}

}  // namespace cpu
}  // namespace segkit
