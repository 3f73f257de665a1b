// CPU ConvCRF: the pooled features of a row (scalar, once per image) and, for the general
// path (mask or per-class weights), the 0/1 mask rows, validity and inverse counts.
// Included by convcrf.cpp only.
#pragma once
#include "common/convcrf.h"
#include "cpu/convcrf_plan.h"

namespace segkit {
namespace cpu {
namespace crfrows {

// ---- features (scalar, once per image) ------------------------------------------------------

template <typename TImg>
void features_row(const Plan& pl, const ConvCrfArgs& a, const TImg* img, float* feat, int R) {
  if (pl.b == 1) {  // no pooling: the products themselves
    float* f = feat + static_cast<index_t>(R) * pl.Wp;
    const float fy = static_cast<float>(R) * a.pos_inv;
    const float cy = static_cast<float>(R) * a.colpos_inv;
    const TImg* row = img + R * a.im_sh;
    const int c0 = a.col_pos ? 4 : 2;
    for (int x = 0; x < pl.Wp; ++x) {
      f[x] = fy;
      f[pl.fstride + x] = static_cast<float>(x) * a.pos_inv;
      if (a.col_pos) {
        f[2 * pl.fstride + x] = cy;
        f[3 * pl.fstride + x] = static_cast<float>(x) * a.colpos_inv;
      }
      const TImg* px = row + x * a.im_sw;
      for (int ch = 0; ch < 3; ++ch)
        f[(c0 + ch) * pl.fstride + x] = static_cast<float>(px[ch * a.im_sc]) * a.col_inv;
    }
    return;
  }
  int y0, y1;
  crf::pool_span(R, pl.p0, pl.b, pl.H, &y0, &y1);
  for (int X = 0; X < pl.Wp; ++X) {
    int x0, x1;
    crf::pool_span(X, pl.p1, pl.b, pl.W, &x0, &x1);
    double sy = 0, sx = 0, cy = 0, cx = 0, rgb[3] = {0, 0, 0};
    for (int i = y0; i < y1; ++i)
      for (int j = x0; j < x1; ++j) {
        // float32 products, as ConvCRF's float32 tensors; the mean in double
        sy += static_cast<float>(i) * a.pos_inv;
        sx += static_cast<float>(j) * a.pos_inv;
        cy += static_cast<float>(i) * a.colpos_inv;
        cx += static_cast<float>(j) * a.colpos_inv;
        const TImg* px = img + i * a.im_sh + j * a.im_sw;
        for (int ch = 0; ch < 3; ++ch)
          rgb[ch] += static_cast<float>(px[ch * a.im_sc]) * a.col_inv;
      }
    const double n = static_cast<double>(y1 - y0) * (x1 - x0);
    float* f = feat + static_cast<index_t>(R) * pl.Wp + X;
    int ch = 0;
    f[pl.fstride * ch++] = static_cast<float>(sy / n);
    f[pl.fstride * ch++] = static_cast<float>(sx / n);
    if (a.col_pos) {
      f[pl.fstride * ch++] = static_cast<float>(cy / n);
      f[pl.fstride * ch++] = static_cast<float>(cx / n);
    }
    for (int c = 0; c < 3; ++c) f[pl.fstride * ch++] = static_cast<float>(rgb[c] / n);
  }
}

// The general path's pooled features of row R: the means over the valid pixels of each cell
// (cx.fm), the cell's validity and float32(1 / its number of valid pixels); an invalid cell
// has zero features, validity and inverse count.
template <typename TImg>
void features_row_masked(const Ctx& cx, const TImg* img, float* feat, int R) {
  const Plan& pl = *cx.pl;
  const ConvCrfArgs& a = *cx.a;
  int y0, y1;
  crf::pool_span(R, pl.p0, pl.b, pl.H, &y0, &y1);
  for (int X = 0; X < pl.Wp; ++X) {
    int x0, x1;
    crf::pool_span(X, pl.p1, pl.b, pl.W, &x0, &x1);
    double f[crf::kMaxFeatures] = {0, 0, 0, 0, 0, 0, 0}, n = 0;
    for (int i = y0; i < y1; ++i)
      for (int j = x0; j < x1; ++j) {
        if (cx.fm[i * pl.ldw + j] == 0.0f) continue;
        n += 1;
        int ch = 0;
        f[ch++] += static_cast<float>(i) * a.pos_inv;
        f[ch++] += static_cast<float>(j) * a.pos_inv;
        if (a.col_pos) {
          f[ch++] += static_cast<float>(i) * a.colpos_inv;
          f[ch++] += static_cast<float>(j) * a.colpos_inv;
        }
        const TImg* px = img + i * a.im_sh + j * a.im_sw;
        for (int c = 0; c < 3; ++c) f[ch++] += static_cast<float>(px[c * a.im_sc]) * a.col_inv;
      }
    const index_t q = static_cast<index_t>(R) * pl.Wp + X;
    for (int ch = 0; ch < pl.nfeat; ++ch)
      feat[ch * pl.fstride + q] = n > 0 ? static_cast<float>(f[ch] / n) : 0.0f;
    cx.valid[q] = n > 0 ? 1.0f : 0.0f;
    cx.inv[q] = n > 0 ? static_cast<float>(1.0 / n) : 0.0f;
  }
}

// The general path's mask of full-resolution row i as 0/1 floats (all 1 without a mask).
inline void mask_row(const Ctx& cx, const std::uint8_t* mask, int i) {
  const Plan& pl = *cx.pl;
  float* fm = cx.fm + static_cast<index_t>(i) * pl.ldw;
  for (int x = 0; x < pl.W; ++x) fm[x] = mask == nullptr || mask[x] ? 1.0f : 0.0f;
  for (index_t x = pl.W; x < pl.ldw; ++x) fm[x] = 0.0f;
}

}  // namespace crfrows
}  // namespace cpu
}  // namespace segkit
