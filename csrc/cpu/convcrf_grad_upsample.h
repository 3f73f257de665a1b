// CPU trainable ConvCRF backward: the bilinear upsampling of the pooled message along a cell's
// pooled rows, and the horizontal adjoint of the upsampling with the sum of R_t's parts
// (convcrf_grad_backward.cpp's stages 1 and 2). Include it after the translation unit's
// `#pragma GCC optimize("no-trapping-math")`.
#pragma once
#include "cpu/convcrf_grad_plan.h"
#include "cpu/convcrf_upsample.h"
#include "cpu/lane_deal.h"

namespace segkit {
namespace cpu {
namespace gradrows {

// The pooled message Mb (C, Hp, Wp) upsampled along pooled rows R - 1, R and R + 1 (those
// inside the grid; blur > 1), the rows that cell R's full-resolution rows interpolate, from
// row `from` on (the rows before it are there from the cell before): row r of class c at
// me[me_row(c, r) + j] = l0 Mb[c][r][i0] + l1 Mb[c][r][i1] (convcrf_upsample.h, as
// the forward's).
template <int B>
SEGKIT_ALWAYS void upsample_rows(const Geo& g, const float* Mb, int R, int from, float* me) {
  for (int r = std::max(R - 1, from); r <= R + 1; ++r) {
    if (r < 0 || r >= g.Hp) continue;
    for (int c = 0; c < g.C; ++c)
      upsample_taps<B>(Mb + c * g.HWp + static_cast<index_t>(r) * g.Wp, g.Wp, g.xi0.data(),
                       g.xi1.data(), g.xl0.data(), g.xl1.data(), g.W,
                       me + me_row(g, c, r));
  }
}

// The adjoint's block sums for pooled columns [X0, X1), X1 - X0 >= L (the lanes of a
// vector): o[X] = l1 v over full columns b X + t (t < b), then l0 v over b X + b + t, added in
// that order (v, l1, l0 start at the first regular column's offset); lane_deal.h's blocks,
// the 2 b products of a block formed once.
template <int B, int b>
SEGKIT_ALWAYS void adjoint_block_sums(const float* v, const float* l1, const float* l0, int X0,
                                      int X1, float* __restrict o) {
  typedef vec_t<float, B> V;
  constexpr int L = Vec<float, B>::lanes;
  over_blocks<B, b>(X0, X1, o, [&](int X, const Deal<B, b>& deal) SEGKIT_BODY {
    const index_t j = static_cast<index_t>(b) * X;
    V p1[b + b % 2], p0[b + b % 2];
    for (int q = 0; q < b; ++q) {
      p1[q] = loadv<V>(l1 + j + q * L) * loadv<V>(v + j + q * L);
      p0[q] = loadv<V>(l0 + j + b + q * L) * loadv<V>(v + j + b + q * L);
    }
    V acc = V{} + 0.0f;
    for (int t = 0; t < b; ++t) acc += deal(p1, t);
    for (int t = 0; t < b; ++t) acc += deal(p0, t);
    return acc;
  });
}

// The horizontal taps of the cell's three partial rows: its own pooled row R straight into Rb
// (haloed), the rows R - 1 and R + 1 into P (2, C, Hp, Wp: P[0] row R holds cell R's part of
// row R - 1, P[1] its part of row R + 1). Per pooled column, its taps added in order from 0.
// The interior columns [reg0, reg1) sum the products l1 v, l0 v of their 2b full columns:
// as vectors by adjoint_block_sums at blur 2, 4 and 8 when there are a vector's worth of
// them, else through `prod` (2 W floats of scratch); the edge columns go through the tap
// slots (a padded slot adds 0 * v, which changes no bit).
template <int B>
SEGKIT_ALWAYS void adjoint_cols(const Geo& g, int R, const float* e, float* P, float* Rb,
                                float* prod) {
  for (int q = 0; q < 3; ++q)
    for (int c = 0; c < g.C; ++c) {
      const float* __restrict v = e + (static_cast<index_t>(q) * g.C + c) * g.W;
      float* __restrict o = q == 1 ? Rb + c * g.plane + g.at(R, 0)
                                   : P + ((static_cast<index_t>(q / 2) * g.C + c) * g.Hp + R) * g.Wp;
      auto edge = [&](int X) {
        float acc = 0.0f;
        for (int k = 0; k < g.ntap; ++k) {
          const size_t slot = static_cast<size_t>(k) * g.Wp + X;
          acc += g.tap_w[slot] * v[g.tap_j[slot]];
        }
        o[X] = acc;
      };
      for (int X = 0; X < g.reg0; ++X) edge(X);
      for (int X = g.reg1; X < g.Wp; ++X) edge(X);
      if (g.reg1 <= g.reg0) continue;
      constexpr int L = Vec<float, B>::lanes;
      if (g.reg1 - g.reg0 >= L && dispatch_exact<2, 4, 8>(g.b, [&](auto bb) SEGKIT_BODY {
            adjoint_block_sums<B, decltype(bb)::value>(v + g.reg_off, g.xl1.data() + g.reg_off,
                                               g.xl0.data() + g.reg_off, g.reg0, g.reg1, o);
          }))
        continue;
      float* __restrict a1 = prod;
      float* __restrict a0 = prod + g.W;
      const float* __restrict l0 = g.xl0.data();
      const float* __restrict l1 = g.xl1.data();
      for (int j = 0; j < g.W; ++j) a1[j] = l1[j] * v[j], a0[j] = l0[j] * v[j];
      for (int X = g.reg0; X < g.reg1; ++X) {
        float acc = 0.0f;
        for (int t = 0; t < 2 * g.b; ++t) {
          const int j = g.reg_off + g.b * X + t;
          acc += t < g.b ? a1[j] : a0[j];
        }
        o[X] = acc;
      }
    }
}

// R_t of pooled row r (blur > 1): cell r's own part (already in Rb) with the parts of cells
// r - 1 and r + 1, added in a fixed order.
inline void finish_r(const Geo& g, const float* P, int r, float* Rb) {
  const index_t part = static_cast<index_t>(g.C) * g.HWp;
  for (int c = 0; c < g.C; ++c) {
    const index_t o = static_cast<index_t>(c) * g.HWp + static_cast<index_t>(r) * g.Wp;
    const float* from_up = r > 0 ? P + part + o - g.Wp : nullptr;  // cell r-1's part of r
    const float* from_dn = r + 1 < g.Hp ? P + o + g.Wp : nullptr;  // cell r+1's part of r
    float* __restrict dst = Rb + c * g.plane + g.at(r, 0);
    for (int X = 0; X < g.Wp; ++X) {
      float v = from_up ? from_up[X] + dst[X] : dst[X];
      dst[X] = from_dn ? v + from_dn[X] : v;
    }
  }
}

}  // namespace gradrows
}  // namespace cpu
}  // namespace segkit
