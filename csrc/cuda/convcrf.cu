// CUDA ConvCRF: mean-field inference without ConvCRF's unfold tensor and without stored
// weights. Every array is batched (N images at once, grid-stride loops):
//   convcrf_features_{u8,f32}  pooled features (N, F, hp, wp) from the image (any strides)
//   convcrf_unary_{logits,probs}  U in place of the unary: log_softmax or log, per pixel
//   convcrf_message[_colpos]      M (N, C, hp, wp): one thread per pooled pixel, the k x k
//                                 Gaussian weights computed on the fly (message_pixel)
//   convcrf_start[_softmax], convcrf_step, convcrf_last_step[_softmax]
//                                 one thread per pooled cell: for its b x b pixels the bilinear
//                                 message, update and softmax, averaged into the next pooled Q
//                                 (or, at the last iteration, written as the scores)
// Memory: the scores, two pooled Q/M arrays and the features: O(C*H*W).
// Compiled at run time by CuPy (NVRTC); kernel names say what each launch runs.
#include "common/convcrf.h"

namespace segkit {
namespace cuda {

constexpr int kClassBlock = 16;  // classes whose message one thread accumulates at once

// Work item idx of a kernel over pooled cells: image ni, cell (R, X), and the block of image
// pixels [y0, y1) x [x0, x1) it pools.
struct PooledCell {
  index_t ni;
  int R, X, y0, y1, x0, x1;
  __device__ PooledCell(index_t idx, index_t cells, int wp, int hp, int p0, int p1, int b, int H,
                        int W)
      : ni(idx / cells), R(static_cast<int>((idx / wp) % hp)), X(static_cast<int>(idx % wp)) {
    crf::pool_span(R, p0, b, H, &y0, &y1);
    crf::pool_span(X, p1, b, W, &x0, &x1);
  }
};

template <typename TImg>
__device__ void convcrf_features(const TImg* __restrict__ img, float* __restrict__ feat,
                                 index_t n, int H, int W, int hp, int wp, int p0, int p1, int b,
                                 index_t sn, index_t sc, index_t sh, index_t sw, float pos_inv,
                                 float col_inv, int col_pos, float colpos_inv) {
  const index_t cells = static_cast<index_t>(hp) * wp;
  const int nf = col_pos ? 7 : 5;
  const index_t total = n * cells;
  for (index_t idx = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const PooledCell cell(idx, cells, wp, hp, p0, p1, b, H, W);
    const int X = cell.X, R = cell.R, y0 = cell.y0, y1 = cell.y1, x0 = cell.x0, x1 = cell.x1;
    const index_t ni = cell.ni;
    double sy = 0, sx = 0, cy = 0, cx = 0, r = 0, g = 0, bl = 0;
    const TImg* base = img + ni * sn;
    for (int i = y0; i < y1; ++i)
      for (int j = x0; j < x1; ++j) {
        sy += static_cast<float>(i) * pos_inv;
        sx += static_cast<float>(j) * pos_inv;
        cy += static_cast<float>(i) * colpos_inv;
        cx += static_cast<float>(j) * colpos_inv;
        const TImg* px = base + i * sh + j * sw;
        r += static_cast<float>(px[0]) * col_inv;
        g += static_cast<float>(px[sc]) * col_inv;
        bl += static_cast<float>(px[2 * sc]) * col_inv;
      }
    const double cnt = static_cast<double>(y1 - y0) * (x1 - x0);
    float* f = feat + ni * nf * cells + static_cast<index_t>(R) * wp + X;
    int ch = 0;
    f[cells * ch++] = static_cast<float>(sy / cnt);
    f[cells * ch++] = static_cast<float>(sx / cnt);
    if (col_pos) {
      f[cells * ch++] = static_cast<float>(cy / cnt);
      f[cells * ch++] = static_cast<float>(cx / cnt);
    }
    f[cells * ch++] = static_cast<float>(r / cnt);
    f[cells * ch++] = static_cast<float>(g / cnt);
    f[cells * ch++] = static_cast<float>(bl / cnt);
  }
}

__device__ void convcrf_unary(float* __restrict__ scores, index_t n, int C, index_t hw,
                              int kind) {
  const index_t total = n * hw;
  for (index_t idx = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<index_t>(gridDim.x) * blockDim.x) {
    float* v = scores + (idx / hw) * C * hw + idx % hw;
    crf::unary_pixel(v, C, hw, kind);
  }
}

template <int NCOL>
__device__ void convcrf_message(const float* __restrict__ q, float* __restrict__ m,
                                const float* __restrict__ feat, index_t n, int C, int hp, int wp,
                                int span, float pos_compat, float col_compat) {
  const index_t cells = static_cast<index_t>(hp) * wp;
  const int nf = 2 + NCOL;
  const index_t total = n * cells;
  for (index_t idx = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const int x = static_cast<int>(idx % wp);
    const int r = static_cast<int>((idx / wp) % hp);
    const index_t ni = idx / cells;
    const float* fe = feat + ni * nf * cells;
    for (int c0 = 0; c0 < C; c0 += kClassBlock) {
      const int nc = min_of(kClassBlock, C - c0);
      float acc[kClassBlock];
      crf::message_pixel<2, NCOL, kClassBlock>(q + (ni * C + c0) * cells, cells, wp, nc, fe,
                                               cells, hp, wp, r, x, span, pos_compat,
                                               col_compat, acc);
      float* out = m + (ni * C + c0) * cells + static_cast<index_t>(r) * wp + x;
#pragma unroll
      for (int c = 0; c < kClassBlock; ++c)
        if (c < nc) out[c * cells] = acc[c];
    }
  }
}

// The message of class c at full-resolution pixel (i, j): bilinear (torch's order of
// operations) from the pooled message, or the message itself for blur 1.
struct MessageAt {
  const float* m;  // this image's (C, hp, wp)
  index_t cells;
  int wp, b;
  int y0, y1, x0, x1;
  float h0, h1, l0, l1;
  __device__ float operator()(int c) const {
    const float* p = m + c * cells;
    if (b == 1) return p[static_cast<index_t>(y0) * wp + x0];
    const float* r0 = p + static_cast<index_t>(y0) * wp;
    const float* r1 = p + static_cast<index_t>(y1) * wp;
    return h0 * (l0 * r0[x0] + l1 * r0[x1]) + h1 * (l0 * r1[x0] + l1 * r1[x1]);
  }
};

__device__ void convcrf_update(float* __restrict__ scores, const float* __restrict__ m,
                               float* __restrict__ qnext, index_t n, int C, int H, int W, int hp,
                               int wp, int p0, int p1, int b, float a, float w, int iterate,
                               int softmax, int last) {
  const index_t cells = static_cast<index_t>(hp) * wp;
  const index_t hw = static_cast<index_t>(H) * W;
  const bool pool = !iterate || !last;
  const index_t total = n * cells;
  for (index_t idx = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const PooledCell cell(idx, cells, wp, hp, p0, p1, b, H, W);
    const int X = cell.X, R = cell.R, y0 = cell.y0, y1 = cell.y1, x0 = cell.x0, x1 = cell.x1;
    const index_t ni = cell.ni;
    float* qn = qnext + ni * C * cells + static_cast<index_t>(R) * wp + X;
    if (pool)
      for (int c = 0; c < C; ++c) qn[c * cells] = 0.0f;
    MessageAt msg;
    msg.m = m + ni * C * cells;
    msg.cells = cells;
    msg.wp = wp;
    msg.b = b;
    for (int i = y0; i < y1; ++i) {
      if (b > 1) {
        crf::bilinear_taps(i, p0, b, hp, &msg.y0, &msg.y1, &msg.h0, &msg.h1);
      } else {
        msg.y0 = i;
      }
      for (int j = x0; j < x1; ++j) {
        if (b > 1) {
          crf::bilinear_taps(j, p1, b, wp, &msg.x0, &msg.x1, &msg.l0, &msg.l1);
        } else {
          msg.x0 = j;
        }
        float* u = scores + ni * C * hw + static_cast<index_t>(i) * W + j;
        // pred_c, recomputed in each pass (C is not bounded at compile time)
#define SEGKIT_PRED(c) (iterate ? a * u[(c) * hw] + w * msg(c) : u[(c) * hw])
        float mx = crf::neg_inf(), inv = 1.0f;
        if (softmax) {
          for (int c = 0; c < C; ++c) mx = max_of(mx, SEGKIT_PRED(c));
          float sum = 0.0f;
          for (int c = 0; c < C; ++c) sum += crf::exp_f32(SEGKIT_PRED(c) - mx);
          inv = 1.0f / sum;
        }
        for (int c = 0; c < C; ++c) {
          const float v = softmax ? crf::exp_f32(SEGKIT_PRED(c) - mx) * inv : SEGKIT_PRED(c);
          if (pool)
            qn[c * cells] += v;
          else
            u[c * hw] = v;  // pred_c has been read for the last time
        }
#undef SEGKIT_PRED
      }
    }
    if (pool) {
      const float count = static_cast<float>(y1 - y0) * static_cast<float>(x1 - x0);
      for (int c = 0; c < C; ++c) qn[c * cells] = qn[c * cells] / count;
    }
  }
}

}  // namespace cuda
}  // namespace segkit

// ---- entry points (CuPy looks these names up) ---------------------------------------------
// features: (image, feat, n, H, W, hp, wp, p0, p1, blur, image strides n/c/h/w [elements],
//            pos_inv, col_inv, col_pos, colpos_inv)
#define SEGKIT_CONVCRF_FEATURES(NAME, T)                                                       \
  extern "C" __global__ void NAME(const T* img, float* feat, segkit::index_t n, int H, int W,  \
                                  int hp, int wp, int p0, int p1, int b, segkit::index_t sn,   \
                                  segkit::index_t sc, segkit::index_t sh, segkit::index_t sw,  \
                                  float pos_inv, float col_inv, int col_pos, float colpos_inv) { \
    segkit::cuda::convcrf_features<T>(img, feat, n, H, W, hp, wp, p0, p1, b, sn, sc, sh, sw,     \
                                      pos_inv, col_inv, col_pos, colpos_inv);                   \
  }

SEGKIT_CONVCRF_FEATURES(convcrf_features_u8, unsigned char)
SEGKIT_CONVCRF_FEATURES(convcrf_features_f32, float)

// unary: (scores, n, C, H*W); U = log_softmax(scores) (logits) or log(scores) (probs)
extern "C" __global__ void convcrf_unary_logits(float* scores, segkit::index_t n, int C,
                                                segkit::index_t hw) {
  segkit::cuda::convcrf_unary(scores, n, C, hw, segkit::crf::UNARY_LOGITS);
}
extern "C" __global__ void convcrf_unary_probs(float* scores, segkit::index_t n, int C,
                                               segkit::index_t hw) {
  segkit::cuda::convcrf_unary(scores, n, C, hw, segkit::crf::UNARY_PROBS);
}

// message: (Q, M, feat, n, C, hp, wp, span, pos_compat, col_compat); the colour kernel without
// (convcrf_message) or with (convcrf_message_colpos) its position term
#define SEGKIT_CONVCRF_MESSAGE(NAME, NCOL)                                                     \
  extern "C" __global__ void NAME(const float* q, float* m, const float* feat,                 \
                                  segkit::index_t n, int C, int hp, int wp, int span,          \
                                  float pos_compat, float col_compat) {                        \
    segkit::cuda::convcrf_message<NCOL>(q, m, feat, n, C, hp, wp, span, pos_compat, col_compat); \
  }
SEGKIT_CONVCRF_MESSAGE(convcrf_message, 3)
SEGKIT_CONVCRF_MESSAGE(convcrf_message_colpos, 5)

// update: (scores, M, Q_next, n, C, H, W, hp, wp, p0, p1, blur, unary_coef, message_coef)
//   convcrf_start[_softmax]       Q_0 = U (or softmax(U)), pooled
//   convcrf_step                  Q = softmax(a U + w M), pooled into Q_next
//   convcrf_last_step[_softmax]   scores = a U + w M (or its softmax), full resolution
#define SEGKIT_CONVCRF_UPDATE(NAME, ITERATE, SOFTMAX, LAST)                                    \
  extern "C" __global__ void NAME(float* scores, const float* m, float* qnext,                 \
                                  segkit::index_t n, int C, int H, int W, int hp, int wp,      \
                                  int p0, int p1, int b, float a, float w) {                   \
    segkit::cuda::convcrf_update(scores, m, qnext, n, C, H, W, hp, wp, p0, p1, b, a, w,        \
                                 ITERATE, SOFTMAX, LAST);                                      \
  }
SEGKIT_CONVCRF_UPDATE(convcrf_start, 0, 0, 0)
SEGKIT_CONVCRF_UPDATE(convcrf_start_softmax, 0, 1, 0)
SEGKIT_CONVCRF_UPDATE(convcrf_step, 1, 1, 0)
SEGKIT_CONVCRF_UPDATE(convcrf_last_step, 1, 0, 1)
SEGKIT_CONVCRF_UPDATE(convcrf_last_step_softmax, 1, 1, 1)
