// CUDA trainable ConvCRF: the forward that keeps the pooled message of every iteration and the
// fused backward (GUIDE section 3; the CPU version is csrc/cpu/convcrf_grad.cpp). Every kernel
// is a grid-stride loop with one thread per full-resolution pixel, pooled pixel or pooled cell,
// batched over the N images; no atomics: every output element has one writer, and the sums
// over pixels are written as per-chunk partials (double) that a kernel adds, in a fixed order,
// into device accumulators, so the gradients are the same bits on every run. Nothing crosses
// to the host: the op's named scalar values are read through pointers, and crfg_param_grads
// turns the accumulators into the gradients (common/convcrf_grad_params.h, the chain rule). The Gaussian weights are computed on the
// fly from the pooled features (no k*k tensor, no weight planes). Driven by
// segkit/ops/convcrf_grad_cuda.py (the launch sequence).
//
// Layouts: full (N, C, H, W); pooled (N, C, hp, wp), the saved messages (N, T, C, hp, wp) read
// with an image stride `ms`; features (N, 5, hp, wp) unscaled; valid, inv_count (N, hp, wp);
// fmask (N, H, W) float 0/1.
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

// The weight of pooled row/col coordinate `o` (0..n_in-1) in the bilinear taps of pixel i.
__device__ SEGKIT_INLINE float tap_weight(int i, int pad, int b, int n_in, int o) {
  int i0, i1;
  float l0, l1;
  crf::bilinear_taps(i, pad, b, n_in, &i0, &i1, &l0, &l1);
  return (i0 == o ? l0 : 0.0f) + (i1 == o ? l1 : 0.0f);
}

}  // namespace cudagrad
}  // namespace segkit

using segkit::index_t;
namespace crf = segkit::crf;
namespace crfgrad = segkit::crfgrad;

// features, validity, inverse counts (per pooled cell) and the float mask (its pixels)
extern "C" __global__ void crfg_prepare(const float* img, const unsigned char* mask, float* feat,
                                        float* valid, float* invc, float* fmask, index_t n,
                                        int H, int W, int hp, int wp, int p0, int p1, int b,
                                        int has_mask) {
  const index_t cells = static_cast<index_t>(hp) * wp, hw = static_cast<index_t>(H) * W;
  SEGKIT_GRID_LOOP(idx, n * cells) {
    const index_t ni = idx / cells, p = idx % cells;
    const int R = static_cast<int>(p / wp), X = static_cast<int>(p % wp);
    int y0, y1, x0, x1;
    crf::pool_span(R, p0, b, H, &y0, &y1);
    crf::pool_span(X, p1, b, W, &x0, &x1);
    double s[crfgrad::kFeatures] = {0, 0, 0, 0, 0}, cnt = 0;
    for (int i = y0; i < y1; ++i)
      for (int j = x0; j < x1; ++j) {
        const index_t q = static_cast<index_t>(i) * W + j;
        const float m = !has_mask || mask[ni * hw + q] ? 1.0f : 0.0f;
        fmask[ni * hw + q] = m;
        if (m == 0.0f) continue;
        cnt += 1;
        s[0] += i;
        s[1] += j;
        for (int ch = 0; ch < 3; ++ch) s[2 + ch] += img[(ni * 3 + ch) * hw + q];
      }
    for (int f = 0; f < crfgrad::kFeatures; ++f)
      feat[(ni * crfgrad::kFeatures + f) * cells + p] =
          cnt > 0 ? static_cast<float>(s[f] / cnt) : 0.0f;
    valid[idx] = cnt > 0 ? 1.0f : 0.0f;
    invc[idx] = cnt > 0 ? static_cast<float>(1.0 / cnt) : 0.0f;
  }
}

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

// qb = masked b x b means of q, per pooled cell
extern "C" __global__ void crfg_pool(const float* q, float* qb, const float* fmask,
                                     const float* invc, index_t n, int C, int H, int W, int hp,
                                     int wp, int p0, int p1, int b) {
  const index_t cells = static_cast<index_t>(hp) * wp, hw = static_cast<index_t>(H) * W;
  SEGKIT_GRID_LOOP(idx, n * cells) {
    const index_t ni = idx / cells, p = idx % cells;
    int y0, y1, x0, x1;
    crf::pool_span(static_cast<int>(p / wp), p0, b, H, &y0, &y1);
    crf::pool_span(static_cast<int>(p % wp), p1, b, W, &x0, &x1);
    for (int c = 0; c < C; ++c) {
      float s = 0.0f;
      for (int i = y0; i < y1; ++i)
        for (int j = x0; j < x1; ++j) {
          const index_t k = static_cast<index_t>(i) * W + j;
          s += q[(ni * C + c) * hw + k] * fmask[ni * hw + k];
        }
      qb[(ni * C + c) * cells + p] = s * invc[idx];
    }
  }
}

// out(p) = sum_d A(p, p+d) in(p+d) per pooled pixel (out's image stride `os`); with `sums`
// (non-null), also the five sums of common/convcrf_grad.h with S = sum_c in_c(p) qb_c(p+d),
// written as doubles, planar: sums[k * n * cells + idx]. The scalar values are read through
// their pointers (col_sdims null: no position term in the colour kernel).
extern "C" __global__ void crfg_pass(const float* in, const float* qb, float* out, index_t os,
                                     double* sums, const float* feat, const float* valid,
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
    const float* src = in + ni * C * cells;
    const float* qq = qb + ni * C * cells;
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
      for (int c = 0; c < nc; ++c) out[ni * os + (c0 + c) * cells + p] = acc[c];
    }
    if (sums != nullptr)
      for (int k = 0; k < crfgrad::kGradSums; ++k) sums[k * n * cells + idx] = t[k];
  }
}

// m = fmask * upsample(mb) per pixel (mb's image stride `ms`)
extern "C" __global__ void crfg_upsample(const float* mb, index_t ms, float* m,
                                         const float* fmask, index_t n, int C, int H, int W,
                                         int hp, int wp, int p0, int p1, int b) {
  const index_t hw = static_cast<index_t>(H) * W, cells = static_cast<index_t>(hp) * wp;
  SEGKIT_GRID_LOOP(idx, n * hw) {
    const index_t ni = idx / hw, k = idx % hw;
    const int i = static_cast<int>(k / W), j = static_cast<int>(k % W);
    const float fm = fmask[idx];
    for (int c = 0; c < C; ++c)
      m[(ni * C + c) * hw + k] =
          segkit::cudagrad::upsampled(mb + ni * ms + c * cells, i, j, hp, wp, p0, p1, b) * fm;
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

// v = q (g - sum_c q g) per pixel; dst = v (accumulate 0) or dst += v
extern "C" __global__ void crfg_softmax_jacobian(const float* q, const float* g, float* dst,
                                                 index_t n, int C, index_t hw, int accumulate) {
  SEGKIT_GRID_LOOP(idx, n * hw) {
    const index_t base = (idx / hw) * C * hw + idx % hw;
    float dot = 0.0f;
    for (int c = 0; c < C; ++c) dot += q[base + c * hw] * g[base + c * hw];
    for (int c = 0; c < C; ++c) {
      const float v = q[base + c * hw] * (g[base + c * hw] - dot);
      dst[base + c * hw] = accumulate ? dst[base + c * hw] + v : v;
    }
  }
}

// per pixel at one iteration: prod = G (M' - U) (for d weight), dU (+)= (unary_weight - w) G,
// dM = fmask (w G + compat^T (w G))
extern "C" __global__ void crfg_step_back(const float* g, const float* u, const float* m,
                                          const float* compat, const float* weight,
                                          const float* fmask, float* prod, float* du, float* dm,
                                          index_t n, int C, index_t hw, float unary_weight,
                                          int has_compat, int first) {
  SEGKIT_GRID_LOOP(idx, n * hw) {
    const index_t base = (idx / hw) * C * hw + idx % hw;
    const float fm = fmask[idx];
    for (int c = 0; c < C; ++c) {
      const index_t k = base + c * hw;
      float mp = m[k], back = weight[c] * g[k];
      if (has_compat)
        for (int d = 0; d < C; ++d) {
          mp += compat[c * C + d] * m[base + d * hw];
          back += compat[d * C + c] * weight[d] * g[base + d * hw];
        }
      prod[k] = g[k] * (mp - u[k]);
      du[k] = (first ? 0.0f : du[k]) + (unary_weight - weight[c]) * g[k];
      dm[k] = back * fm;
    }
  }
}

// r = upsample^T dm, per pooled cell (a gather over the pixels whose taps reach it)
extern "C" __global__ void crfg_upsample_adjoint(const float* dm, float* r, index_t n, int C,
                                                 int H, int W, int hp, int wp, int p0, int p1,
                                                 int b) {
  const index_t cells = static_cast<index_t>(hp) * wp, hw = static_cast<index_t>(H) * W;
  SEGKIT_GRID_LOOP(idx, n * cells) {
    const index_t ni = idx / cells, p = idx % cells;
    const int R = static_cast<int>(p / wp), X = static_cast<int>(p % wp);
    const int ilo = R * b - p0 - b < 0 ? 0 : R * b - p0 - b;
    const int ihi = R * b - p0 + 2 * b > H ? H : R * b - p0 + 2 * b;
    const int jlo = X * b - p1 - b < 0 ? 0 : X * b - p1 - b;
    const int jhi = X * b - p1 + 2 * b > W ? W : X * b - p1 + 2 * b;
    for (int c = 0; c < C; ++c) {
      float s = 0.0f;
      for (int i = ilo; i < ihi; ++i) {
        const float hy = segkit::cudagrad::tap_weight(i, p0, b, hp, R);
        if (hy == 0.0f) continue;
        float row = 0.0f;
        for (int j = jlo; j < jhi; ++j) {
          const float hx = segkit::cudagrad::tap_weight(j, p1, b, wp, X);
          row += hx * dm[(ni * C + c) * hw + static_cast<index_t>(i) * W + j];
        }
        s += hy * row;
      }
      r[(ni * C + c) * cells + p] = s;
    }
  }
}

// dq = fmask * inv_count * dqb(cell), per pixel
extern "C" __global__ void crfg_unpool(const float* dqb, float* dq, const float* fmask,
                                       const float* invc, index_t n, int C, int H, int W,
                                       int hp, int wp, int p0, int p1, int b) {
  const index_t cells = static_cast<index_t>(hp) * wp, hw = static_cast<index_t>(H) * W;
  SEGKIT_GRID_LOOP(idx, n * hw) {
    const index_t ni = idx / hw, k = idx % hw;
    const int i = static_cast<int>(k / W), j = static_cast<int>(k % W);
    const index_t cell = static_cast<index_t>((i + p0) / b) * wp + (j + p1) / b;
    const float f = fmask[idx] * invc[ni * cells + cell];
    for (int c = 0; c < C; ++c) dq[(ni * C + c) * hw + k] = dqb[(ni * C + c) * cells + cell] * f;
  }
}

// dst += src, elementwise
extern "C" __global__ void crfg_add(float* dst, const float* src, index_t total) {
  SEGKIT_GRID_LOOP(idx, total) dst[idx] += src[idx];
}

// Partial sums over chunks of pixels: out[(i * cj + j) * nchunks + k] = sum over pixels P of
// chunk k (of n * hw pixels) of a_i(P) * b_j(P), planes (N, C, hw); diag: j = i only (cj = 1);
// b null: b = 1
extern "C" __global__ void crfg_dot_chunks(const float* a, const float* bb, double* out,
                                           index_t n, int C, index_t hw, index_t chunk,
                                           int nchunks, int diag) {
  const int cj = diag ? 1 : C;
  SEGKIT_GRID_LOOP(idx, static_cast<index_t>(C) * cj * nchunks) {
    const int k = static_cast<int>(idx % nchunks);
    const int j0 = static_cast<int>((idx / nchunks) % cj);
    const int i = static_cast<int>(idx / nchunks / cj);
    const int j = diag ? i : j0;
    const index_t lo = k * chunk, hi = lo + chunk < n * hw ? lo + chunk : n * hw;
    double s = 0.0;
    for (index_t P = lo; P < hi; ++P) {
      const index_t base = (P / hw) * C * hw + P % hw;
      s += static_cast<double>(a[base + i * hw]) * (bb ? bb[base + j * hw] : 1.0f);
    }
    out[idx] = s;
  }
}

// Partial sums over chunks of rows of doubles: part[r * nchunks + k] = sum of in[r * len + P]
// over the P of chunk k
extern "C" __global__ void crfg_chunk_sums(const double* in, double* part, int rows,
                                           index_t len, index_t chunk, int nchunks) {
  SEGKIT_GRID_LOOP(idx, static_cast<index_t>(rows) * nchunks) {
    const index_t r = idx / nchunks, k = idx % nchunks;
    const index_t lo = k * chunk, hi = lo + chunk < len ? lo + chunk : len;
    double s = 0.0;
    for (index_t P = lo; P < hi; ++P) s += in[r * len + P];
    part[idx] = s;
  }
}

// acc[r] = (first ? 0 : acc[r]) + sum_k part[r * nchunks + k], k in order: one iteration's
// partials added to the device accumulators
extern "C" __global__ void crfg_accumulate(const double* part, double* acc, int rows,
                                           int nchunks, int first) {
  SEGKIT_GRID_LOOP(r, rows) {
    double s = first ? 0.0 : acc[r];
    for (int k = 0; k < nchunks; ++k) s += part[r * nchunks + k];
    acc[r] = s;
  }
}

// The gradients, float32, from the accumulators: d_weight = acc_w; d_compat = w_c acc_mu
// (compat given); d_params: the chain rule of each named value (common/convcrf_grad_params.h)
extern "C" __global__ void crfg_param_grads(const double* acc_w, const double* acc_s,
                                            const double* acc_mu, const float* weight,
                                            const float* pos_compat, const float* col_compat,
                                            const float* pos_sdims, const float* col_schan,
                                            const float* col_sdims, float* d_weight,
                                            float* d_params, float* d_compat, int C) {
  const index_t cc = static_cast<index_t>(C) * C;
  SEGKIT_GRID_LOOP(idx, cc + C + 1) {
    if (idx < C) {
      d_weight[idx] = static_cast<float>(acc_w[idx]);
    } else if (idx < C + cc) {
      const index_t k = idx - C;
      if (d_compat != nullptr)
        d_compat[k] = static_cast<float>(acc_mu[k] * static_cast<double>(weight[k / C]));
    } else {
      double d[crfgrad::kParams];
      crfgrad::parameter_gradients(
          acc_s, crfgrad::values_at(pos_compat, col_compat, pos_sdims, col_schan, col_sdims),
          d);
      for (int k = 0; k < crfgrad::kParams; ++k) d_params[k] = static_cast<float>(d[k]);
    }
  }
}

// through U: dx = dU - softmax(x) sum_c dU (logits, `ref` = U) or dU / x (probs, `ref` = x)
extern "C" __global__ void crfg_dx(float* du, const float* ref, index_t n, int C, index_t hw,
                                   int kind) {
  SEGKIT_GRID_LOOP(idx, n * hw) {
    const index_t base = (idx / hw) * C * hw + idx % hw;
    if (kind == crf::UNARY_PROBS) {
      for (int c = 0; c < C; ++c) du[base + c * hw] /= ref[base + c * hw];
      continue;
    }
    float tot = 0.0f;
    for (int c = 0; c < C; ++c) tot += du[base + c * hw];
    for (int c = 0; c < C; ++c) du[base + c * hw] -= crf::exp_f32(ref[base + c * hw]) * tot;
  }
}
