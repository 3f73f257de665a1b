// CPU ConvCRF: bilinear upsampling along a row from its taps, shared by the forward
// (convcrf_update.h) and the trainable backward (convcrf_grad_upsample.h). Include it after
// the translation unit's `#pragma GCC optimize("no-trapping-math")`.
#pragma once
#include "common/macros.h"
#include "cpu/simd.h"

namespace segkit {
namespace cpu {

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
  constexpr int L = Vec<float, B>::lanes;
  index_t x0 = 0;
  for (; x0 + L <= n; x0 += L) {
    const int base = i0[x0];
    if (i1[x0 + L - 1] - base < L && base + L <= mlen) {
      const V w = loadv<V>(m + base);
      const V a0 = __builtin_shuffle(w, loadv<IV>(i0 + x0) - base);
      const V a1 = __builtin_shuffle(w, loadv<IV>(i1 + x0) - base);
      storev(e + x0, loadv<V>(l0 + x0) * a0 + loadv<V>(l1 + x0) * a1);
    } else {
      for (index_t x = x0; x < x0 + L; ++x) e[x] = l0[x] * m[i0[x]] + l1[x] * m[i1[x]];
    }
  }
  for (index_t x = x0; x < n; ++x) e[x] = l0[x] * m[i0[x]] + l1[x] * m[i1[x]];
}

}  // namespace cpu
}  // namespace segkit
