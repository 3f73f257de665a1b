// CUDA trainable ConvCRF: the fused backward (GUIDE section 3; the CPU version is
// csrc/cpu/convcrf_grad_backward.cpp), and, included, the forward's kernels of the one family
// (cuda/convcrf.cu). Every kernel is a grid-stride loop; no atomics: the sums over pixels are
// written as per-chunk partials (double) that a kernel adds, in a fixed order, into device
// accumulators, so the gradients are the same bits on every run. Nothing crosses to the host:
// the op's named scalar values are read through pointers, and crfg_param_grads turns the
// accumulators into the gradients (common/convcrf_grad_params.h, the chain rule). Driven by
// segkit/ops/convcrf_grad_cuda.py (the launch sequence). Here fmask is never null.
#include "cuda/convcrf.cu"

namespace segkit {
namespace cudagrad {

// The weight of pooled row/col coordinate `o` (0..n_in-1) in the bilinear taps of pixel i.
__device__ SEGKIT_INLINE float tap_weight(int i, int pad, int b, int n_in, int o) {
  int i0, i1;
  float l0, l1;
  crf::bilinear_taps(i, pad, b, n_in, &i0, &i1, &l0, &l1);
  return (i0 == o ? l0 : 0.0f) + (i1 == o ? l1 : 0.0f);
}

}  // namespace cudagrad
}  // namespace segkit

// v = q (g - sum_c q g) per pixel; dst = v (accumulate 0) or dst += v; q read with its image
// stride `qs` (a slice of the saved pooled Q at blur 1)
extern "C" __global__ void crfg_softmax_jacobian(const float* q, index_t qs, const float* g,
                                                 float* dst, index_t n, int C, index_t hw,
                                                 int accumulate) {
  SEGKIT_GRID_LOOP(idx, n * hw) {
    const index_t base = (idx / hw) * C * hw + idx % hw;
    const float* qq = q + (idx / hw) * qs + idx % hw;
    float dot = 0.0f;
    for (int c = 0; c < C; ++c) dot += qq[c * hw] * g[base + c * hw];
    for (int c = 0; c < C; ++c) {
      const float v = qq[c * hw] * (g[base + c * hw] - dot);
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
