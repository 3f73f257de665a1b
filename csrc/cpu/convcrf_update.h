// CPU ConvCRF: the update (pred, softmax) with every class of a vector of pixels in registers,
// and its loop over a row, written once over the vector width B. Included by convcrf_rows.cpp
// only (after its `#pragma GCC optimize("no-trapping-math")`).
#pragma once
#include <cstring>

#include "common/convcrf.h"
#include "cpu/convcrf_plan.h"
#include "cpu/simd.h"

namespace segkit {
namespace cpu {
namespace crfrows {

// ---- the update with every class of a block of pixels in registers (C <= 16) -----------------

// p_c = get(c) for the C <= CM classes of one block of pixels, then softmax over classes when
// `soft`, then put(c, p_c). The same operations as softmax_rows_body, lane by lane.
template <int B, int CM, typename Get, typename Put>
SEGKIT_ALWAYS void update_block(int C, bool soft, const Get& get, const Put& put) {
  typedef vec_t<float, B> V;
  V p[CM];
#pragma GCC unroll 16
  for (int c = 0; c < CM; ++c)
    if (c < C) p[c] = get(c);
  if (soft) {
    V mx = p[0];
#pragma GCC unroll 16
    for (int c = 1; c < CM; ++c)
      if (c < C) mx = p[c] > mx ? p[c] : mx;
    V sum = V{};
#pragma GCC unroll 16
    for (int c = 0; c < CM; ++c)
      if (c < C) {
        p[c] = crf::exp_poly(p[c] - mx);
        sum += p[c];
      }
    const V inv = 1.0f / sum;
#pragma GCC unroll 16
    for (int c = 0; c < CM; ++c)
      if (c < C) p[c] *= inv;
  }
#pragma GCC unroll 16
  for (int c = 0; c < CM; ++c)
    if (c < C) put(c, p[c]);
}

// Runs update_block over the W pixels of a row: whole vectors in place, the last partial
// vector through zero-padded copies. get(c, u, x0) / put(c, value, x0) see the block's unary
// vector u and its first pixel; `dst(c)` is where put's values of class c go for x0 = 0 (for
// the copies of the tail).
template <int B, int CM, typename Get, typename Put>
SEGKIT_ALWAYS void update_row_blocks(const Plan& pl, const float* U, bool soft, const Get& get,
                                     const Put& put) {
  typedef vec_t<float, B> V;
  constexpr int L = Vec<float, B>::lanes;
  const int C = pl.C, W = pl.W;
  const index_t HW = pl.HW;
  int x0 = 0;
  for (; x0 + L <= W; x0 += L)
    update_block<B, CM>(
        C, soft, [&](int c) { return get(c, loadv<V>(U + c * HW + x0), x0); },
        [&](int c, V v) { put(c, v, x0, L); });
  if (x0 < W) {
    const int nv = W - x0;
    float tail[CM * L];
    std::memset(tail, 0, sizeof tail);
    for (int c = 0; c < C; ++c) std::memcpy(tail + c * L, U + c * HW + x0, sizeof(float) * nv);
    update_block<B, CM>(
        C, soft, [&](int c) { return get(c, loadv<V>(tail + c * L), x0); },
        [&](int c, V v) { put(c, v, x0, nv); });
  }
}

}  // namespace crfrows
}  // namespace cpu
}  // namespace segkit
