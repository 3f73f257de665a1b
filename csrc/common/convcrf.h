// ConvCRF mean-field inference: the pieces shared by the CPU and CUDA backends.
//
// The contract (GUIDE section 3; ConvCRF's GaussCRF with default_conf) in one place:
//   * U = log_softmax(unary) (LOGITS) or log(unary) (PROBS).
//   * Features on the full-resolution grid: position (i, j) * (1/pos_sdims); colour
//     RGB * (1/col_schan), preceded by (i, j) * (1/col_sdims) when that term is on. Every
//     product is rounded to float32, as ConvCRF's float32 tensors do.
//   * blur b > 1: features and Q are averaged over b x b cells on a grid of ceil(H/b) x
//     ceil(W/b) cells, placed with pad = ceil(off/2) (off = (b - H % b) % b) before the first
//     row (column); only in-image pixels count. The message is upsampled bilinearly
//     (align_corners=False) by b and cropped at the same padding.
//   * For every offset d of the k x k window (d = 0 included) on the pooled grid:
//     K(p, p+d) = pos_compat * exp(-|dpos|^2 / 2) + col_compat * exp(-|dcol|^2 / 2), zero
//     where p+d is outside. K is symmetric: K(p, p+d) = K(p+d, p), bit for bit.
//   * M_c(p) = sum_d K(p, p+d) Q_c(p+d); pred = a * U + w * M (a = unary_weight - w).
//   * Q_0 = U (LOGITS with INIT_CONVCRF, ConvCRF's quirk) or softmax(U); Q = softmax(pred)
//     after every iteration but the last (and after the last with final_softmax).
#pragma once
#include "common/macros.h"
#include "common/math.h"

namespace segkit {
namespace crf {

enum UnaryKind { UNARY_LOGITS = 0, UNARY_PROBS = 1 };
enum Init { INIT_CONVCRF = 0, INIT_SOFTMAX = 1 };

// Largest number of feature channels (2 position + 2 colour-position + 3 colour).
constexpr int kMaxFeatures = 7;

// The float helpers (common/math.h), by their ConvCRF names.
using math::exp_f32;
using math::exp_poly;
using math::log_f32;
using math::neg_inf;

// ---- geometry ----------------------------------------------------------------------------

// Pooled size and padding before the first cell of one image side (blur b >= 1).
SEGKIT_HD SEGKIT_INLINE void pool_geometry(int n, int b, int* pooled, int* pad) {
  const int off = (b - n % b) % b;
  *pooled = (n + b - 1) / b;
  *pad = (off + 1) / 2;
}

// In-image pixel range [lo, hi) of pooled cell P along a side of n pixels.
SEGKIT_HD SEGKIT_INLINE void pool_span(int P, int pad, int b, int n, int* lo, int* hi) {
  *lo = max_of(P * b - pad, 0);
  *hi = min_of(P * b - pad + b, n);
}

// Bilinear taps (align_corners=False) of full-resolution pixel i, whose position in the
// upsampled (uncropped) image is i + pad, on a pooled side of n_in cells: torch's
// area_pixel_compute_source_index with scale 1/b, clamped at 0 and at the last cell.
SEGKIT_HD SEGKIT_INLINE void bilinear_taps(int i, int pad, int b, int n_in, int* i0, int* i1,
                                           float* l0, float* l1) {
  const float scale = static_cast<float>(1.0 / b);
  float src = scale * (static_cast<float>(i + pad) + 0.5f) - 0.5f;
  src = src < 0.0f ? 0.0f : src;
  int lo = static_cast<int>(src);  // src >= 0: truncation is floor
  lo = min_of(lo, n_in - 1);
  float lam = src - static_cast<float>(lo);
  lam = lam < 0.0f ? 0.0f : (lam > 1.0f ? 1.0f : lam);
  *i0 = lo;
  *i1 = lo + (lo < n_in - 1 ? 1 : 0);
  *l1 = lam;
  *l0 = 1.0f - lam;
}

// ---- the Gaussian weight of one offset -----------------------------------------------------
// Features are planar: channel f of pixel p at feat[f * fstride + p]. NPOS position channels
// come first, then NCOL colour channels (ConvCRF's order; the sum runs in channel order).
// Returns K(p, q) = pos_compat * exp(-|f_pos(q) - f_pos(p)|^2 / 2)
//                 + col_compat * exp(-|f_col(q) - f_col(p)|^2 / 2).
template <int NPOS, int NCOL>
SEGKIT_HD SEGKIT_INLINE float pair_weight(const float* fp, const float* fq, index_t fstride,
                                          float pos_compat, float col_compat) {
  float ep = 0.0f, ec = 0.0f;
SEGKIT_UNROLL
  for (int f = 0; f < NPOS; ++f) {
    const float d = fq[f * fstride] - fp[f * fstride];
    ep += -0.5f * (d * d);
  }
SEGKIT_UNROLL
  for (int f = NPOS; f < NPOS + NCOL; ++f) {
    const float d = fq[f * fstride] - fp[f * fstride];
    ec += -0.5f * (d * d);
  }
  return pos_compat * exp_f32(ep) + col_compat * exp_f32(ec);
}

// ---- the message for one pixel and a block of classes ---------------------------------------
// M_c(p) = sum_d K(p, p+d) Q_c(p+d) at pixel (r, x) of a pooled grid hp x wp, for the first
// nc <= CB classes of `q` (planar, `qplane` apart, rows `ld` apart), with the weights computed
// on the fly from the pooled features (planar, fstride apart, rows wp apart). Offsets that
// leave the grid contribute nothing. The CUDA kernel runs this as is; the CPU backend runs the
// same sum vectorised over a row with stored weights.
template <int NPOS, int NCOL, int CB>
SEGKIT_HD SEGKIT_INLINE void message_pixel(const float* q, index_t qplane, index_t ld, int nc,
                                           const float* feat, index_t fstride, int hp, int wp,
                                           int r, int x, int span, float pos_compat,
                                           float col_compat, float* acc) {
  const float* fp = feat + static_cast<index_t>(r) * wp + x;
SEGKIT_UNROLL
  for (int c = 0; c < CB; ++c) acc[c] = 0.0f;
  const int y0 = max_of(r - span, 0), y1 = min_of(r + span, hp - 1);
  const int x0 = max_of(x - span, 0), x1 = min_of(x + span, wp - 1);
  for (int y = y0; y <= y1; ++y) {
    for (int xx = x0; xx <= x1; ++xx) {
      const float* fq = feat + static_cast<index_t>(y) * wp + xx;
      const float k = pair_weight<NPOS, NCOL>(fp, fq, fstride, pos_compat, col_compat);
      const float* qi = q + static_cast<index_t>(y) * ld + xx;
SEGKIT_UNROLL
      for (int c = 0; c < CB; ++c)
        if (c < nc) acc[c] += k * qi[c * qplane];
    }
  }
}

// ---- the update for one pixel -------------------------------------------------------------
// pred_c = a * U_c + w * M_c for the C classes of one pixel (values `stride` apart), then
// softmax over classes when `softmax`. Writes `out` (may alias `u`).
SEGKIT_HD SEGKIT_INLINE void update_pixel(const float* u, const float* m, float* out, int C,
                                          index_t stride, index_t mstride, float a, float w,
                                          bool softmax) {
  float mx = neg_inf();
  for (int c = 0; c < C; ++c) {
    const float v = a * u[c * stride] + w * m[c * mstride];
    out[c * stride] = v;
    mx = v > mx ? v : mx;
  }
  if (!softmax) return;
  float sum = 0.0f;
  for (int c = 0; c < C; ++c) {
    const float e = exp_f32(out[c * stride] - mx);
    out[c * stride] = e;
    sum += e;
  }
  const float inv = 1.0f / sum;
  for (int c = 0; c < C; ++c) out[c * stride] *= inv;
}

// In-place softmax over the C classes of one pixel.
SEGKIT_HD SEGKIT_INLINE void softmax_pixel(float* v, int C, index_t stride) {
  float mx = neg_inf();
  for (int c = 0; c < C; ++c) mx = v[c * stride] > mx ? v[c * stride] : mx;
  float sum = 0.0f;
  for (int c = 0; c < C; ++c) {
    const float e = exp_f32(v[c * stride] - mx);
    v[c * stride] = e;
    sum += e;
  }
  const float inv = 1.0f / sum;
  for (int c = 0; c < C; ++c) v[c * stride] *= inv;
}

// U in place for one pixel: log_softmax (LOGITS) or log (PROBS).
SEGKIT_HD SEGKIT_INLINE void unary_pixel(float* v, int C, index_t stride, int kind) {
  if (kind == UNARY_PROBS) {
    for (int c = 0; c < C; ++c) v[c * stride] = log_f32(v[c * stride]);
    return;
  }
  float mx = neg_inf();
  for (int c = 0; c < C; ++c) mx = v[c * stride] > mx ? v[c * stride] : mx;
  float sum = 0.0f;
  for (int c = 0; c < C; ++c) sum += exp_f32(v[c * stride] - mx);
  const float lse = log_f32(sum);
  for (int c = 0; c < C; ++c) v[c * stride] = (v[c * stride] - mx) - lse;
}

}  // namespace crf
}  // namespace segkit
