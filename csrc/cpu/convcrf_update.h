// CPU ConvCRF: the update (pred, softmax) with every class of a vector of pixels in registers,
// and its loop over a row, written once over the vector width B; and the resampling along a
// row at blur > 1 (the message upsampled, Q pooled). Included by convcrf_rows.cpp only (after
// its `#pragma GCC optimize("no-trapping-math")`).
#pragma once
#include <algorithm>
#include <cstring>

#include "common/convcrf.h"
#include "cpu/convcrf_plan.h"
#include "cpu/convcrf_upsample.h"
#include "cpu/lane_deal.h"
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

// ---- resampling along a row (blur > 1) ------------------------------------------------------

// One message row `m` (ldw floats, Wp valid) upsampled bilinearly along the row into `e`
// (ldw floats; past W the last pixel's value): convcrf_upsample.h's upsample_taps.
template <int B>
SEGKIT_ALWAYS void upsample_row(const Plan& pl, const float* __restrict m, float* __restrict e) {
  upsample_taps<B>(m, pl.ldw, pl.xi0.data(), pl.xi1.data(), pl.xl0.data(), pl.xl1.data(), pl.ldw,
                   e);
}

// The b x b means of pooled row R into the next Q: `acc` holds C rows (stride ldw) of the
// sums over the `rows` full-resolution rows of its cells (the general path: of the valid
// pixels, times the cell's inverse count). Two passes per class: the column sums of each cell
// into the Q row (cells whole inside the image as vectors at blur 2, 4, 8: lane_deal.h's
// block_sums), then the division (or the product with the inverse count), vectorised.
template <int B, bool G>
SEGKIT_ALWAYS void pool_row(const Ctx& cx, int R, int rows, const float* acc_rows) {
  const Plan& pl = *cx.pl;
  const float nrows = static_cast<float>(rows);
  // cells [X0, X1) lie whole inside the row
  const int X0 = (pl.p1 + pl.b - 1) / pl.b;
  const int X1 = std::max(X0, (pl.W + pl.p1) / pl.b);
  const float* __restrict den = pl.pcount.data();
  for (int c = 0; c < pl.C; ++c) {
    const float* __restrict acc = acc_rows + c * pl.ldw;
    float* __restrict q = cx.qnext + c * pl.plane + (pl.s + R) * pl.ld + pl.s;
    auto edge = [&](int X) {
      int x0, x1;
      crf::pool_span(X, pl.p1, pl.b, pl.W, &x0, &x1);
      float s = 0.0f;
      for (int x = x0; x < x1; ++x) s += acc[x];
      q[X] = s;
    };
    for (int X = 0; X < std::min(X0, pl.Wp); ++X) edge(X);
    const bool fixed = X1 - X0 >= Vec<float, B>::lanes &&
                       dispatch_exact<2, 4, 8>(pl.b, [&](auto bb) SEGKIT_BODY {
                         block_sums<B, decltype(bb)::value>(acc - pl.p1, X0, X1, q);
                       });
    if (!fixed)
      for (int X = X0; X < X1; ++X) edge(X);
    for (int X = std::max(X1, X0); X < pl.Wp; ++X) edge(X);
    if (G) {
      const float* __restrict inv = cx.inv + static_cast<index_t>(R) * pl.Wp;
      for (int X = 0; X < pl.Wp; ++X) q[X] *= inv[X];
    } else {
      for (int X = 0; X < pl.Wp; ++X) q[X] = q[X] / (nrows * den[X]);
    }
  }
}

}  // namespace crfrows
}  // namespace cpu
}  // namespace segkit
