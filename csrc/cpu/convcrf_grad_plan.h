// CPU trainable ConvCRF, shared by the forward (convcrf_grad.cpp) and the backward
// (convcrf_grad_backward.cpp): the geometry of a call (pooled grid, haloed planes, bilinear
// taps), the argument checks, and the per-image pooled features. Include it after the
// translation unit's `#pragma GCC optimize("no-trapping-math")`, as the row kernels.
#pragma once
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "common/convcrf.h"
#include "common/convcrf_grad.h"
#include "cpu/convcrf_grad.h"
#include "cpu/runtime.h"
#include "cpu/simd.h"

namespace segkit {
namespace cpu {
namespace gradrows {

using crfgrad::kFeatures;
using crfgrad::kGradSums;

inline int thread_id() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

constexpr int kRowBlock = 8;  // rows per partial sum of dw / dcompat (fixed: deterministic)

constexpr index_t kPad = 16;  // rows padded to whole vectors of the widest ISA (floats)

inline index_t round_up(index_t x, index_t m) { return (x + m - 1) / m * m; }

struct Geo {
  int C, H, W, b, s, Hp, Wp, p0, p1;
  index_t HW, HWp;
  // haloed pooled planes (Qb, R and the features the passes read): s zero rows and columns
  // around the grid, rows `ld` apart, planes `plane` apart; element (r, x) at `at(r, x)`
  index_t ld, plane, ldg;  // ldg: Wp rounded up to whole vectors (a pooled row's Gaussians)
  index_t at(int r, int x) const { return (s + r) * ld + s + x; }
  std::vector<int> xi0, xi1, yi0, yi1, cellx;
  std::vector<float> xl0, xl1, yl0, yl1;
  // full columns [cx0[X], cx1[X]) of pooled column X
  std::vector<int> cx0, cx1;
  // adjoint of the horizontal interpolation, gathered per pooled column X: the (full column,
  // coefficient) pairs col_j/col_w[col_at[X] .. col_at[X + 1]), in increasing full column
  // (xi0's tap before xi1's), the order of the scatter it replaces
  std::vector<int> col_at, col_j;
  std::vector<float> col_w;
  // the same pairs in `ntap` slots per pooled column (slot k of column X at k * Wp + X, in the
  // order above, padded with weight 0 at column 0): the gather vectorises over X
  int ntap = 0;
  std::vector<int> tap_j;
  std::vector<float> tap_w;
  // pooled columns [reg0, reg1) whose pairs are exactly the 2b full columns reg_off + b X + t,
  // t < 2b, with coefficient xl1 for t < b and xl0 after (the interior of the row)
  int reg0 = 0, reg1 = 0, reg_off = 0;
  // adjoint of the vertical interpolation: for pooled row r, the (full row, coefficient) pairs
  std::vector<std::vector<std::pair<int, float>>> rows_of;
};

// Where row r (pooled, r >= -1) of class c starts among a cell's three row-upsampled message
// rows (C x 3 rows of W floats): slot (r + 3) % 3, so that a cell keeps the two rows the cell
// before it left there.
inline index_t me_row(const Geo& g, int c, int r) {
  return (3 * static_cast<index_t>(c) + (r + 3) % 3) * g.W;
}

inline Geo make_geo(const ConvCrfGradArgs& a) {
  Geo g;
  g.C = static_cast<int>(a.c);
  g.H = static_cast<int>(a.h);
  g.W = static_cast<int>(a.w);
  g.b = a.blur;
  g.s = a.filter_size / 2;
  crf::pool_geometry(g.H, g.b, &g.Hp, &g.p0);
  crf::pool_geometry(g.W, g.b, &g.Wp, &g.p1);
  g.HW = static_cast<index_t>(g.H) * g.W;
  g.HWp = static_cast<index_t>(g.Hp) * g.Wp;
  g.ld = round_up(round_up(g.Wp, kPad) + 2 * g.s, kPad);
  g.plane = (g.Hp + 2 * static_cast<index_t>(g.s)) * g.ld;
  g.ldg = round_up(g.Wp, kPad);
  g.xi0.resize(g.W), g.xi1.resize(g.W), g.xl0.resize(g.W), g.xl1.resize(g.W);
  g.cellx.resize(g.W);
  for (int x = 0; x < g.W; ++x) {
    crf::bilinear_taps(x, g.p1, g.b, g.Wp, &g.xi0[x], &g.xi1[x], &g.xl0[x], &g.xl1[x]);
    g.cellx[x] = (x + g.p1) / g.b;
  }
  g.cx0.resize(g.Wp), g.cx1.resize(g.Wp);
  for (int X = 0; X < g.Wp; ++X) crf::pool_span(X, g.p1, g.b, g.W, &g.cx0[X], &g.cx1[X]);
  std::vector<int> count(g.Wp + 1, 0);
  for (int x = 0; x < g.W; ++x) ++count[g.xi0[x] + 1], ++count[g.xi1[x] + 1];
  for (int X = 0; X < g.Wp; ++X) count[X + 1] += count[X];
  g.col_at = count;
  g.col_j.resize(2 * static_cast<size_t>(g.W)), g.col_w.resize(2 * static_cast<size_t>(g.W));
  for (int x = 0; x < g.W; ++x) {
    const int k0 = count[g.xi0[x]]++;
    g.col_j[k0] = x, g.col_w[k0] = g.xl0[x];
    const int k1 = count[g.xi1[x]]++;
    g.col_j[k1] = x, g.col_w[k1] = g.xl1[x];
  }
  for (int X = 0; X < g.Wp; ++X) g.ntap = std::max(g.ntap, g.col_at[X + 1] - g.col_at[X]);
  g.tap_j.assign(static_cast<size_t>(g.ntap) * g.Wp, 0);
  g.tap_w.assign(g.tap_j.size(), 0.0f);
  for (int X = 0; X < g.Wp; ++X)
    for (int kk = g.col_at[X]; kk < g.col_at[X + 1]; ++kk) {
      const size_t slot = static_cast<size_t>(kk - g.col_at[X]) * g.Wp + X;
      g.tap_j[slot] = g.col_j[kk], g.tap_w[slot] = g.col_w[kk];
    }
  g.reg_off = g.b / 2 - g.p1 - g.b;
  auto regular = [&](int X) {
    if (g.b < 2 || g.col_at[X + 1] - g.col_at[X] != 2 * g.b) return false;
    for (int t = 0; t < 2 * g.b; ++t) {
      const int kk = g.col_at[X] + t, j = g.reg_off + g.b * X + t;
      if (g.col_j[kk] != j || g.col_w[kk] != (t < g.b ? g.xl1[j] : g.xl0[j])) return false;
    }
    return true;
  };
  while (g.reg0 < g.Wp && !regular(g.reg0)) ++g.reg0;
  g.reg1 = g.reg0;
  while (g.reg1 < g.Wp && regular(g.reg1)) ++g.reg1;
  g.yi0.resize(g.H), g.yi1.resize(g.H), g.yl0.resize(g.H), g.yl1.resize(g.H);
  g.rows_of.resize(g.Hp);
  for (int i = 0; i < g.H; ++i) {
    crf::bilinear_taps(i, g.p0, g.b, g.Hp, &g.yi0[i], &g.yi1[i], &g.yl0[i], &g.yl1[i]);
    g.rows_of[g.yi0[i]].push_back({i, g.yl0[i]});
    g.rows_of[g.yi1[i]].push_back({i, g.yl1[i]});
  }
  return g;
}

inline void check_args(const ConvCrfGradArgs& a) {
  if (a.n < 0 || a.c < 1 || a.h < 0 || a.w < 0 || a.h > (1 << 30) || a.w > (1 << 30))
    throw std::invalid_argument("convcrf_grad: bad shape (n, c, h, w) = (" +
                                std::to_string(a.n) + ", " + std::to_string(a.c) + ", " +
                                std::to_string(a.h) + ", " + std::to_string(a.w) + ")");
  if (a.filter_size < 1 || a.filter_size % 2 == 0)
    throw std::invalid_argument("convcrf_grad: filter_size must be a positive odd integer, got " +
                                std::to_string(a.filter_size));
  if (a.blur < 1 || (a.blur > 1 && a.blur % 2 == 1))
    throw std::invalid_argument("convcrf_grad: blur must be 1 or even, got " +
                                std::to_string(a.blur));
  if (a.num_iter < 1)
    throw std::invalid_argument("convcrf_grad: num_iter must be >= 1, got " +
                                std::to_string(a.num_iter));
  if (a.unary_kind != crf::UNARY_LOGITS && a.unary_kind != crf::UNARY_PROBS)
    throw std::invalid_argument("convcrf_grad: bad unary_kind code " +
                                std::to_string(a.unary_kind));
  if (a.init != crf::INIT_CONVCRF && a.init != crf::INIT_SOFTMAX)
    throw std::invalid_argument("convcrf_grad: bad init code " + std::to_string(a.init));
}

// Per-image pooled features (unscaled), validity and inverse counts, full-resolution mask.
struct Image {
  std::vector<float> inv_count;
  std::vector<float> fmask;  // the mask as 0/1 floats (H*W), or one row of ones (W) without
  int fm_step = 0;           // a mask; row i at fm_step * i
  const float* fm(int i) const { return fmask.data() + static_cast<index_t>(fm_step) * i; }
  bool masked() const { return fm_step != 0; }
  std::vector<float> featH, validH;  // the features and validity in the haloed layout
};

inline void prepare_image(const Geo& g, const float* img, const std::uint8_t* mask, Image& im) {
  im.featH.assign(kFeatures * g.plane, 0.0f);  // zero halos: the passes read them
  im.validH.assign(g.plane, 0.0f);
  im.inv_count.assign(g.HWp, 0.0f);
  im.fm_step = mask == nullptr ? 0 : g.W;
  im.fmask.resize(mask == nullptr ? g.W : g.HW);
  for (size_t p = 0; p < im.fmask.size(); ++p)
    im.fmask[p] = mask == nullptr || mask[p] ? 1.0f : 0.0f;
#pragma omp parallel for schedule(dynamic, 4) num_threads(max_threads())
  for (int R = 0; R < g.Hp; ++R) {
    int y0, y1;
    crf::pool_span(R, g.p0, g.b, g.H, &y0, &y1);
    for (int X = 0; X < g.Wp; ++X) {
      int x0, x1;
      crf::pool_span(X, g.p1, g.b, g.W, &x0, &x1);
      double sum[kFeatures] = {0, 0, 0, 0, 0}, n = 0;
      for (int i = y0; i < y1; ++i)
        for (int j = x0; j < x1; ++j) {
          const index_t p = static_cast<index_t>(i) * g.W + j;
          if (mask != nullptr && mask[p] == 0) continue;
          n += 1;
          sum[0] += i;
          sum[1] += j;
          for (int ch = 0; ch < 3; ++ch) sum[2 + ch] += img[ch * g.HW + p];
        }
      const index_t q = static_cast<index_t>(R) * g.Wp + X;
      if (n == 0) continue;
      const index_t h = g.at(R, X);
      for (int f = 0; f < kFeatures; ++f)
        im.featH[f * g.plane + h] = static_cast<float>(sum[f] / n);
      im.validH[h] = 1.0f;
      im.inv_count[q] = static_cast<float>(1.0 / n);
    }
  }
}

}  // namespace gradrows
}  // namespace cpu
}  // namespace segkit
