// CUDA ConvCRF, one kernel family for inference and training (GUIDE section 3; the CPU
// version is csrc/cpu/convcrf_grad*.cpp): the forward's kernels. segkit.convcrf runs them
// without saved state (segkit/ops/convcrf_cuda.py); the trainable op keeps, for its backward,
// Qb_t of every iteration: the pooled Q that iteration t + 1's message pass reads
// (segkit/ops/convcrf_grad_cuda.py; the backward's kernels are cuda/convcrf_grad.cu, which
// includes this file). Every kernel is a grid-stride loop with one thread per full-resolution
// pixel, pooled pixel or pooled cell, batched over the N images; no atomics: every output
// element has one writer. The Gaussian weights are computed on the fly from the pooled
// features (no k*k tensor, no weight planes); the scalar values (pos_compat, col_compat,
// pos_sdims, col_schan, col_sdims) are read through device pointers.
//
// Layouts: full (N, C, H, W); pooled (N, C, hp, wp); the saved pooled Q (N, T, C, hp, wp), a
// slice t of it read or written with its image stride (`is`, `qs`: T * C * hp * wp); features
// (N, 5, hp, wp) unscaled; valid, inv_count (N, hp, wp); fmask (N, H, W) float 0/1, or null
// where every pixel is valid (the forward's kernels only).
#include "common/convcrf.h"
#include "common/convcrf_grad.h"
#include "common/convcrf_grad_params.h"

namespace segkit {
namespace cudagrad {

constexpr int kClassBlock = 16;

#define SEGKIT_GRID_LOOP(idx, total)                                                       \
  for (index_t idx = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x;          \
       idx < (total); idx += static_cast<index_t>(gridDim.x) * blockDim.x)

// The masked, upsampled message of pixel (i, j) of class plane `mb` (hp x wp).
__device__ SEGKIT_INLINE float upsampled(const float* mb, int i, int j, int hp, int wp, int p0,
                                         int p1, int b) {
  int r0, r1, c0, c1;
  float h0, h1, l0, l1;
  crf::bilinear_taps(i, p0, b, hp, &r0, &r1, &h0, &h1);
  crf::bilinear_taps(j, p1, b, wp, &c0, &c1, &l0, &l1);
  const float e0 = l0 * mb[r0 * wp + c0] + l1 * mb[r0 * wp + c1];
  const float e1 = l0 * mb[r1 * wp + c0] + l1 * mb[r1 * wp + c1];
  return h0 * e0 + h1 * e1;
}

// The full-resolution rows [y0, y1) and columns [x0, x1) of pooled cell p (of a grid wp wide).
__device__ inline void cell_span(index_t p, int wp, int p0, int p1, int b, int H, int W, int* y0,
                                 int* y1, int* x0, int* x1) {
  crf::pool_span(static_cast<int>(p / wp), p0, b, H, y0, y1);
  crf::pool_span(static_cast<int>(p % wp), p1, b, W, x0, x1);
}

// Features, validity and inverse counts per pooled cell, and the float mask of its pixels
// (fmask null: not written); the image (N, 3, H, W) read through its strides (elements).
template <typename T>
__device__ void prepare(const T* img, index_t sn, index_t sc, index_t sh, index_t sw,
                        const unsigned char* mask, float* feat, float* valid, float* invc,
                        float* fmask, index_t n, int H, int W, int hp, int wp, int p0, int p1,
                        int b) {
  const index_t cells = static_cast<index_t>(hp) * wp, hw = static_cast<index_t>(H) * W;
  SEGKIT_GRID_LOOP(idx, n * cells) {
    const index_t ni = idx / cells, p = idx % cells;
    int y0, y1, x0, x1;
    cell_span(p, wp, p0, p1, b, H, W, &y0, &y1, &x0, &x1);
    double s[crfgrad::kFeatures] = {0, 0, 0, 0, 0}, cnt = 0;
    for (int i = y0; i < y1; ++i)
      for (int j = x0; j < x1; ++j) {
        const index_t q = static_cast<index_t>(i) * W + j;
        const float m = mask == nullptr || mask[ni * hw + q] ? 1.0f : 0.0f;
        if (fmask != nullptr) fmask[ni * hw + q] = m;
        if (m == 0.0f) continue;
        cnt += 1;
        s[0] += i;
        s[1] += j;
        const T* px = img + ni * sn + i * sh + j * sw;
        for (int ch = 0; ch < 3; ++ch) s[2 + ch] += static_cast<float>(px[ch * sc]);
      }
    for (int f = 0; f < crfgrad::kFeatures; ++f)
      feat[(ni * crfgrad::kFeatures + f) * cells + p] =
          cnt > 0 ? static_cast<float>(s[f] / cnt) : 0.0f;
    valid[idx] = cnt > 0 ? 1.0f : 0.0f;
    invc[idx] = cnt > 0 ? static_cast<float>(1.0 / cnt) : 0.0f;
  }
}

// One pooled cell of the mean-field update, fused: for each of its pixels the prediction
// z_c = (unary_weight - w_c) U_c + w_c (m_c + sum_d compat_cd m_d), m = fmask * upsample(mb)
// (iterate; else z = U, the start), its softmax (`soft`), then either pooled into the next Q
// (qn non-null: masked mean, qn's image stride `qs`) or written to `z` (the last iteration; z
// may be u: each pixel's U is read before its own thread overwrites it). The backward
// recomputes Q at full resolution with the same arithmetic (crfg_upsample, crfg_pred,
// crfg_softmax).
__device__ void update(const float* u, const float* mb, const float* compat,
                       const float* weight, const float* fmask, const float* invc, float* qn,
                       index_t qs, float* z, index_t n, int C, int H, int W, int hp, int wp,
                       int p0, int p1, int b, float unary_weight, int iterate, int soft) {
  const index_t cells = static_cast<index_t>(hp) * wp, hw = static_cast<index_t>(H) * W;
  SEGKIT_GRID_LOOP(idx, n * cells) {
    const index_t ni = idx / cells, p = idx % cells;
    int y0, y1, x0, x1;
    cell_span(p, wp, p0, p1, b, H, W, &y0, &y1, &x0, &x1);
    float* q = qn == nullptr ? nullptr : qn + ni * qs + p;
    if (q != nullptr)
      for (int c = 0; c < C; ++c) q[c * cells] = 0.0f;
    for (int i = y0; i < y1; ++i)
      for (int j = x0; j < x1; ++j) {
        const index_t k = static_cast<index_t>(i) * W + j, base = ni * C * hw + k;
        const float fm = fmask == nullptr ? 1.0f : fmask[ni * hw + k];
        auto msg = [&](int c) {
          return upsampled(mb + (ni * C + c) * cells, i, j, hp, wp, p0, p1, b) * fm;
        };
        auto pred = [&](int c) {
          if (!iterate) return u[base + c * hw];
          float mp = msg(c);
          if (compat != nullptr) {
            float s = 0.0f;
            for (int d = 0; d < C; ++d) s += compat[c * C + d] * msg(d);
            mp += s;
          }
          return (unary_weight - weight[c]) * u[base + c * hw] + weight[c] * mp;
        };
        float mx = crf::neg_inf(), inv = 1.0f;
        if (soft) {
          for (int c = 0; c < C; ++c) mx = pred(c) > mx ? pred(c) : mx;
          float sum = 0.0f;
          for (int c = 0; c < C; ++c) sum += crf::exp_f32(pred(c) - mx);
          inv = 1.0f / sum;
        }
        for (int c = 0; c < C; ++c) {
          const float v = soft ? crf::exp_f32(pred(c) - mx) * inv : pred(c);
          if (q != nullptr)
            q[c * cells] += v * fm;
          else
            z[base + c * hw] = v;
        }
      }
    if (q != nullptr)
      for (int c = 0; c < C; ++c) q[c * cells] = q[c * cells] * invc[idx];
  }
}

}  // namespace cudagrad
}  // namespace segkit

using segkit::index_t;
namespace crf = segkit::crf;
namespace crfgrad = segkit::crfgrad;

// prepare: (image, its strides n/c/h/w in elements, mask or null, feat, valid, inv_count,
// fmask or null, n, H, W, hp, wp, p0, p1, blur); uint8 or float32 images
#define SEGKIT_CRFG_PREPARE(NAME, T)                                                           \
  extern "C" __global__ void NAME(const T* img, index_t sn, index_t sc, index_t sh,            \
                                  index_t sw, const unsigned char* mask, float* feat,          \
                                  float* valid, float* invc, float* fmask, index_t n, int H,   \
                                  int W, int hp, int wp, int p0, int p1, int b) {              \
    segkit::cudagrad::prepare<T>(img, sn, sc, sh, sw, mask, feat, valid, invc, fmask, n, H, W, \
                                 hp, wp, p0, p1, b);                                           \
  }
SEGKIT_CRFG_PREPARE(crfg_prepare_u8, unsigned char)
SEGKIT_CRFG_PREPARE(crfg_prepare_f32, float)

// U from the unary, per pixel: log_softmax (logits) or log (probs)
extern "C" __global__ void crfg_unary(const float* x, float* u, index_t n, int C, index_t hw,
                                      int kind) {
  SEGKIT_GRID_LOOP(idx, n * hw) {
    const index_t base = (idx / hw) * C * hw + idx % hw;
    for (int c = 0; c < C; ++c) u[base + c * hw] = x[base + c * hw];
    crf::unary_pixel(u + base, C, hw, kind);
  }
}

// dst = softmax(src) over classes, per pixel (dst may be src)
extern "C" __global__ void crfg_softmax(const float* src, float* dst, index_t n, int C,
                                        index_t hw) {
  SEGKIT_GRID_LOOP(idx, n * hw) {
    const index_t base = (idx / hw) * C * hw + idx % hw;
    for (int c = 0; c < C; ++c) dst[base + c * hw] = src[base + c * hw];
    crf::softmax_pixel(dst + base, C, hw);
  }
}

// out(p) = sum_d A(p, p+d) in(p+d) per pooled pixel (in's image stride `is`); with
// `sums` (non-null), also the five sums of common/convcrf_grad.h with
// S = sum_c in_c(p) qb_c(p+d) (qb's image stride `qs`; qb null without sums), written as
// doubles, planar: sums[k * n * cells + idx]. The scalar values are read through
// their pointers (col_sdims null: no position term in the colour kernel).
extern "C" __global__ void crfg_pass(const float* in, index_t is, const float* qb, index_t qs,
                                     float* out, double* sums, const float* feat,
                                     const float* valid,
                                     index_t n, int C, int hp, int wp, int span,
                                     const float* pos_compat, const float* col_compat,
                                     const float* pos_sdims, const float* col_schan,
                                     const float* col_sdims) {
  const index_t cells = static_cast<index_t>(hp) * wp;
  const crfgrad::ParamValues pv =
      crfgrad::values_at(pos_compat, col_compat, pos_sdims, col_schan, col_sdims);
  const crfgrad::Scales sc = crfgrad::scales_from(pv);
  const float pc = pv.pos_compat, cc = pv.col_compat;
  SEGKIT_GRID_LOOP(idx, n * cells) {
    const index_t ni = idx / cells, p = idx % cells;
    const int r = static_cast<int>(p / wp), x = static_cast<int>(p % wp);
    const float* f = feat + ni * crfgrad::kFeatures * cells;
    const float* v = valid + ni * cells;
    const float* src = in + ni * is;
    const float* qq = qb == nullptr ? nullptr : qb + ni * qs;
    double t[crfgrad::kGradSums] = {0, 0, 0, 0, 0};
    const int ylo = r - span < 0 ? 0 : r - span, yhi = r + span > hp - 1 ? hp - 1 : r + span;
    const int xlo = x - span < 0 ? 0 : x - span, xhi = x + span > wp - 1 ? wp - 1 : x + span;
    for (int c0 = 0; c0 < C; c0 += segkit::cudagrad::kClassBlock) {
      const int nc = C - c0 < segkit::cudagrad::kClassBlock ? C - c0
                                                            : segkit::cudagrad::kClassBlock;
      float acc[segkit::cudagrad::kClassBlock];
      for (int c = 0; c < segkit::cudagrad::kClassBlock; ++c) acc[c] = 0.0f;
      for (int y = ylo; y <= yhi; ++y)
        for (int xx = xlo; xx <= xhi; ++xx) {
          const index_t q = static_cast<index_t>(y) * wp + xx;
          float dpos, dcol, gp, gc;
          crfgrad::pair_distances(f + p, f + q, cells, &dpos, &dcol);
          crfgrad::pair_gaussians(dpos, dcol, sc, &gp, &gc);
          const float vv = v[p] * v[q];
          gp *= vv;
          gc *= vv;
          const float a = pc * gp + cc * gc;
          float s = 0.0f;
          for (int c = 0; c < segkit::cudagrad::kClassBlock; ++c)
            if (c < nc) {
              acc[c] += a * src[(c0 + c) * cells + q];
              if (sums != nullptr) s += src[(c0 + c) * cells + p] * qq[(c0 + c) * cells + q];
            }
          if (sums != nullptr) {
            t[0] += gp * s;
            t[1] += gc * s;
            t[2] += dpos * gp * s;
            t[3] += dcol * gc * s;
            t[4] += dpos * gc * s;
          }
        }
      for (int c = 0; c < nc; ++c) out[(ni * C + c0 + c) * cells + p] = acc[c];
    }
    if (sums != nullptr)
      for (int k = 0; k < crfgrad::kGradSums; ++k) sums[k * n * cells + idx] = t[k];
  }
}

// The fused update per pooled cell (segkit::cudagrad::update): crfg_start pools Q_0 = U (or
// softmax(U) with soft), crfg_update pools Q = softmax(z) into qn (qn non-null) or writes the
// last z (or its softmax) to `z`
extern "C" __global__ void crfg_start(const float* u, const float* fmask, const float* invc,
                                      float* qn, index_t qs, index_t n, int C, int H, int W,
                                      int hp, int wp, int p0, int p1, int b, int soft) {
  segkit::cudagrad::update(u, nullptr, nullptr, nullptr, fmask, invc, qn, qs, nullptr, n, C, H,
                           W, hp, wp, p0, p1, b, 0.0f, 0, soft);
}
extern "C" __global__ void crfg_update(const float* u, const float* mb, const float* compat,
                                       const float* weight, const float* fmask,
                                       const float* invc, float* qn, index_t qs, float* z,
                                       index_t n, int C, int H, int W, int hp, int wp, int p0,
                                       int p1, int b, float unary_weight, int soft) {
  segkit::cudagrad::update(u, mb, compat, weight, fmask, invc, qn, qs, z, n, C, H, W, hp, wp, p0,
                           p1, b, unary_weight, 1, soft);
}

// m = fmask * upsample(mb) per pixel
extern "C" __global__ void crfg_upsample(const float* mb, float* m,
                                         const float* fmask, index_t n, int C, int H, int W,
                                         int hp, int wp, int p0, int p1, int b) {
  const index_t hw = static_cast<index_t>(H) * W, cells = static_cast<index_t>(hp) * wp;
  SEGKIT_GRID_LOOP(idx, n * hw) {
    const index_t ni = idx / hw, k = idx % hw;
    const int i = static_cast<int>(k / W), j = static_cast<int>(k % W);
    const float fm = fmask[idx];
    for (int c = 0; c < C; ++c)
      m[(ni * C + c) * hw + k] =
          segkit::cudagrad::upsampled(mb + (ni * C + c) * cells, i, j, hp, wp, p0, p1, b) * fm;
  }
}

// z = (unary_weight - w_c) U + w_c (m + compat m), per pixel
extern "C" __global__ void crfg_pred(const float* u, const float* m, const float* compat,
                                     const float* weight, float* z, index_t n, int C,
                                     index_t hw, float unary_weight, int has_compat) {
  SEGKIT_GRID_LOOP(idx, n * hw) {
    const index_t base = (idx / hw) * C * hw + idx % hw;
    for (int c = 0; c < C; ++c) {
      float mp = m[base + c * hw];
      if (has_compat) {
        float s = 0.0f;
        for (int d = 0; d < C; ++d) s += compat[c * C + d] * m[base + d * hw];
        mp += s;
      }
      z[base + c * hw] = (unary_weight - weight[c]) * u[base + c * hw] + weight[c] * mp;
    }
  }
}
