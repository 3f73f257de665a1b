// CPU ConvCRF: fused mean-field inference, OpenMP over rows, SIMD over pixels of a row.
//
// Per image: pooled features, then the Gaussian weights of half the k x k offsets (K is
// symmetric: K(p, p-e) is read from the plane of e at p-e), stored once in planes with a zero
// halo so that the message loop needs no bounds checks. Each iteration is one pass over Q:
//   blur 1: per row, the message of every class (weights and Q in vector registers, classes
//           in blocks of up to 12 accumulators) followed at once by the update and softmax,
//           written into the other Q buffer;
//   blur b: per pooled row, the message, upsampled along the row; then per pooled row the b
//           full-resolution rows: vertical interpolation, update, softmax, and the b x b
//           average straight into the next pooled Q (no full-resolution Q is ever stored).
// The scores array holds the unary on entry, U = log_softmax(unary) during the iterations
// and the result at the end. Memory: K (k*k/2 pooled planes), two pooled Q, the pooled
// features and, for blur > 1, the row-upsampled message (C*H*W/b): O(C*H*W + k*k*H*W/b^2).
//
// The row routines are compiled three times (baseline, AVX2+FMA, AVX-512) behind `target`
// attributes and picked at run time (runtime.cpp); the message loop uses GCC vector extensions,
// everything else plain loops over a row that the compiler vectorises, calling the shared
// per-element definitions in common/convcrf.h.

// Lets GCC if-convert the float selects of exp/log (and so vectorise them) on baseline SSE2;
// segkit never unmasks floating-point exceptions.
#pragma GCC optimize("no-trapping-math")

#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#define SEGKIT_HAVE_MXCSR 1
#endif

#include "common/convcrf.h"
#include "cpu/convcrf.h"
#include "cpu/runtime.h"

namespace segkit {
namespace cpu {
namespace {

#define SEGKIT_ALWAYS __attribute__((always_inline)) inline

constexpr index_t kPad = 16;   // rows are padded to whole vectors of the widest ISA (floats)
constexpr int kMaxBlock = 12;  // classes per message pass (accumulators held in registers)
constexpr index_t kPrefetch = 64;  // weights prefetched this many pixels ahead

enum Mode { MODE_INIT = 0, MODE_ITER = 1 };

index_t round_up(index_t x, index_t m) { return (x + m - 1) / m * m; }

// Geometry of one call (every image of a batch has the same shape) and fixed tables.
struct Plan {
  int C, H, W, b, k, s, Hp, Wp, p0, p1, nh, ncol, nfeat;
  index_t ld;       // row stride of the haloed pooled planes (Q, K)
  index_t plane;    // (Hp + 2s) * ld
  index_t ldw;      // row stride of full-width row buffers and of the upsampled message
  index_t HW;
  index_t fstride;  // Hp * Wp: feature plane stride
  float kc;         // K(p, p) = pos_compat + col_compat
  std::vector<index_t> koff;  // ey * ld + ex of the stored (half) offsets
  std::vector<int> ey, ex;
  std::vector<int> xi0, xi1;  // bilinear taps along a row (blur > 1)
  std::vector<float> xl0, xl1;
};

Plan make_plan(const ConvCrfArgs& a) {
  Plan p;
  p.C = static_cast<int>(a.c);
  p.H = static_cast<int>(a.h);
  p.W = static_cast<int>(a.w);
  p.b = a.blur;
  p.k = a.filter_size;
  p.s = a.filter_size / 2;
  crf::pool_geometry(p.H, p.b, &p.Hp, &p.p0);
  crf::pool_geometry(p.W, p.b, &p.Wp, &p.p1);
  p.ld = round_up(round_up(p.Wp, kPad) + 2 * p.s, kPad);
  p.plane = (p.Hp + 2 * static_cast<index_t>(p.s)) * p.ld;
  p.ldw = round_up(p.W, kPad);
  p.HW = static_cast<index_t>(p.H) * p.W;
  p.fstride = static_cast<index_t>(p.Hp) * p.Wp;
  p.ncol = a.col_pos ? 5 : 3;
  p.nfeat = 2 + p.ncol;
  p.kc = a.pos_compat * 1.0f + a.col_compat * 1.0f;
  for (int ey = 0; ey <= p.s; ++ey)
    for (int ex = ey == 0 ? 1 : -p.s; ex <= p.s; ++ex) {
      p.ey.push_back(ey);
      p.ex.push_back(ex);
      p.koff.push_back(ey * p.ld + ex);
    }
  p.nh = static_cast<int>(p.koff.size());
  if (p.b > 1) {
    p.xi0.resize(p.W);
    p.xi1.resize(p.W);
    p.xl0.resize(p.W);
    p.xl1.resize(p.W);
    for (int x = 0; x < p.W; ++x)
      crf::bilinear_taps(x, p.p1, p.b, p.Wp, &p.xi0[x], &p.xi1[x], &p.xl0[x], &p.xl1[x]);
  }
  return p;
}

// What the row routines read and write for the current image and iteration.
struct Ctx {
  const Plan* pl;
  const ConvCrfArgs* a;
  float* scores;      // this image's (C, H, W): U during the iterations, the result at the end
  const float* feat;  // (nfeat, Hp, Wp) pooled features
  float* K;           // nh haloed weight planes
  const float* qcur;  // C haloed planes: Q of this iteration
  float* qnext;       // C haloed planes: Q of the next one
  float* Me;          // (C, Hp, ldw) message upsampled along rows (blur > 1)
};

// Per-thread row buffers: P, M, A hold C rows of ldw floats; mx and sum one row each.
struct Scratch {
  float *P, *M, *A, *mx, *sum;
};

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

// ---- row bodies (inlined into the per-ISA routines below) -----------------------------------

template <int NCOL>
SEGKIT_ALWAYS void weights_row_body(const Ctx& cx, int R) {
  const Plan& pl = *cx.pl;
  for (int j = 0; j < pl.nh; ++j) {
    const int ey = pl.ey[j], ex = pl.ex[j];
    if (R + ey >= pl.Hp) continue;  // zeroed by clear_borders
    const int xs = std::max(0, -ex), xe = std::min(pl.Wp, pl.Wp - ex);
    float* __restrict kp = cx.K + j * pl.plane + (pl.s + R) * pl.ld + pl.s;
    const float* fp = cx.feat + static_cast<index_t>(R) * pl.Wp;
    const float* fq = cx.feat + static_cast<index_t>(R + ey) * pl.Wp + ex;
    const float pc = cx.a->pos_compat, cc = cx.a->col_compat;
    const index_t fs = pl.fstride;
    for (int x = xs; x < xe; ++x) kp[x] = crf::pair_weight<2, NCOL>(fp + x, fq + x, fs, pc, cc);
  }
}

// A vector of B bytes of floats (GCC vector extension; a class member so that template
// arguments do not drop the attribute).
template <int B>
struct Vec {
  typedef float type __attribute__((vector_size(B)));
};

template <int B>
SEGKIT_ALWAYS typename Vec<B>::type loadv(const float* p) {
  typename Vec<B>::type v;
  std::memcpy(&v, p, B);
  return v;
}

template <int B>
SEGKIT_ALWAYS void storev(float* p, typename Vec<B>::type v) {
  std::memcpy(p, &v, B);
}

template <int B>
struct VecI {
  typedef int type __attribute__((vector_size(B)));
};

// crf::exp_f32 lane by lane: the same operations in the same order, so the same results.
template <int B>
SEGKIT_ALWAYS typename Vec<B>::type exp_v(typename Vec<B>::type x) {
  typedef typename Vec<B>::type V;
  typedef typename VecI<B>::type VI;
  const V lo = V{} - 87.0f, hi = V{} + 88.0f;
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  const V r = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const V t = (x - r * 0.693359375f) + r * 2.12194440e-4f;
  V p = V{} + 1.9875691500e-4f;
  p = p * t + 1.3981999507e-3f;
  p = p * t + 8.3334519073e-3f;
  p = p * t + 4.1665795894e-2f;
  p = p * t + 1.6666665459e-1f;
  p = p * t + 5.0000001201e-1f;
  const V e = p * (t * t) + t + 1.0f;
  const VI n = __builtin_convertvector(r, VI);
  return e * (V)((n + 127) << 23);
}

// Message of CB classes along one pooled row: out[cb][x] = sum_d K(p, p+d) Q_cb(p+d) for x in
// [0, nx) rounded up to whole vectors. `q` points at the first class's plane, `base` at the
// row's first pixel inside the halo.
template <int B, int CB>
SEGKIT_ALWAYS void message_block(const float* __restrict q, index_t plane,
                                 const float* __restrict K, const index_t* __restrict koff,
                                 int nh, index_t base, int nx, float kc,
                                 float* __restrict out, index_t out_ld) {
  typedef typename Vec<B>::type V;
  constexpr int L = B / static_cast<int>(sizeof(float));
  const V vkc = V{} + kc;
  for (int x0 = 0; x0 < nx; x0 += L) {
    const index_t p = base + x0;
    V acc[CB];
#pragma GCC unroll 12
    for (int c = 0; c < CB; ++c) acc[c] = vkc * loadv<B>(q + c * plane + p);
    for (int j = 0; j < nh; ++j) {
      const index_t o = koff[j];
      const float* kj = K + j * plane + p;
      // the weights stream from nh planes at once, too many for the hardware prefetcher
      __builtin_prefetch(kj + kPrefetch);
      __builtin_prefetch(kj - o + kPrefetch);
      const V w1 = loadv<B>(kj);      // K(p, p+e)
      const V w2 = loadv<B>(kj - o);  // K(p-e, p) = K(p, p-e)
#pragma GCC unroll 12
      for (int c = 0; c < CB; ++c) {
        const float* qc = q + c * plane + p;
        acc[c] += w1 * loadv<B>(qc + o);
        acc[c] += w2 * loadv<B>(qc - o);
      }
    }
#pragma GCC unroll 12
    for (int c = 0; c < CB; ++c) storev<B>(out + c * out_ld + x0, acc[c]);
  }
}

// Message of every class along pooled row r into C rows of `out` (stride ldw).
template <int B>
SEGKIT_ALWAYS void message_row_body(const Ctx& cx, int r, float* __restrict out) {
  const Plan& pl = *cx.pl;
  const int chunks = (pl.C + kMaxBlock - 1) / kMaxBlock;
  const int base_size = pl.C / chunks, extra = pl.C % chunks;
  const index_t base = (pl.s + r) * pl.ld + pl.s;
  int c0 = 0;
  for (int ch = 0; ch < chunks; ++ch) {
    const int cb = base_size + (ch < extra ? 1 : 0);
    const float* q = cx.qcur + c0 * pl.plane;
    float* o = out + c0 * pl.ldw;
#define SEGKIT_CRF_BLOCK(N)                                                                    \
  case N:                                                                                      \
    message_block<B, N>(q, pl.plane, cx.K, pl.koff.data(), pl.nh, base, pl.Wp, pl.kc, o,      \
                        pl.ldw);                                                               \
    break;
    switch (cb) {
      SEGKIT_CRF_BLOCK(1) SEGKIT_CRF_BLOCK(2) SEGKIT_CRF_BLOCK(3) SEGKIT_CRF_BLOCK(4)
      SEGKIT_CRF_BLOCK(5) SEGKIT_CRF_BLOCK(6) SEGKIT_CRF_BLOCK(7) SEGKIT_CRF_BLOCK(8)
      SEGKIT_CRF_BLOCK(9) SEGKIT_CRF_BLOCK(10) SEGKIT_CRF_BLOCK(11) SEGKIT_CRF_BLOCK(12)
      default: break;
    }
#undef SEGKIT_CRF_BLOCK
    c0 += cb;
  }
}

// U in place for full-resolution row i: log_softmax over classes (LOGITS) or log (PROBS).
SEGKIT_ALWAYS void unary_row_body(const Ctx& cx, int i, const Scratch& sc) {
  const Plan& pl = *cx.pl;
  float* __restrict v = cx.scores + static_cast<index_t>(i) * pl.W;
  const index_t HW = pl.HW;
  const int W = pl.W, C = pl.C;
  if (cx.a->unary_kind == crf::UNARY_PROBS) {
    for (int c = 0; c < C; ++c)
      for (int x = 0; x < W; ++x) v[c * HW + x] = crf::log_f32(v[c * HW + x]);
    return;
  }
  float* __restrict mx = sc.mx;
  float* __restrict sum = sc.sum;
  for (int x = 0; x < W; ++x) mx[x] = v[x];
  for (int c = 1; c < C; ++c)
    for (int x = 0; x < W; ++x) mx[x] = v[c * HW + x] > mx[x] ? v[c * HW + x] : mx[x];
  for (int x = 0; x < W; ++x) sum[x] = 0.0f;
  for (int c = 0; c < C; ++c)
    for (int x = 0; x < W; ++x) sum[x] += crf::exp_f32(v[c * HW + x] - mx[x]);
  for (int x = 0; x < W; ++x) sum[x] = crf::log_f32(sum[x]);
  for (int c = 0; c < C; ++c)
    for (int x = 0; x < W; ++x) v[c * HW + x] = (v[c * HW + x] - mx[x]) - sum[x];
}

// P = U (MODE_INIT) or a * U + w * M (MODE_ITER) for full-resolution row i.
SEGKIT_ALWAYS void pred_row_body(const Ctx& cx, int i, const float* __restrict M,
                                 float* __restrict P, int mode) {
  const Plan& pl = *cx.pl;
  const float* __restrict U = cx.scores + static_cast<index_t>(i) * pl.W;
  const index_t HW = pl.HW, ldw = pl.ldw;
  const int W = pl.W;
  const float a = cx.a->unary_coef, w = cx.a->message_coef;
  for (int c = 0; c < pl.C; ++c) {
    const float* __restrict u = U + c * HW;
    float* __restrict p = P + c * ldw;
    if (mode == MODE_ITER) {
      const float* __restrict m = M + c * ldw;
      for (int x = 0; x < W; ++x) p[x] = a * u[x] + w * m[x];
    } else {
      for (int x = 0; x < W; ++x) p[x] = u[x];
    }
  }
}

// Softmax over the C rows of P (stride ldw), pixel by pixel.
SEGKIT_ALWAYS void softmax_rows_body(const Plan& pl, float* __restrict P, const Scratch& sc) {
  const int W = pl.W, C = pl.C;
  const index_t ldw = pl.ldw;
  float* __restrict mx = sc.mx;
  float* __restrict sum = sc.sum;
  for (int x = 0; x < W; ++x) mx[x] = P[x];
  for (int c = 1; c < C; ++c)
    for (int x = 0; x < W; ++x) mx[x] = P[c * ldw + x] > mx[x] ? P[c * ldw + x] : mx[x];
  for (int x = 0; x < W; ++x) sum[x] = 0.0f;
  for (int c = 0; c < C; ++c)
    for (int x = 0; x < W; ++x) {
      const float e = crf::exp_f32(P[c * ldw + x] - mx[x]);
      P[c * ldw + x] = e;
      sum[x] += e;
    }
  for (int x = 0; x < W; ++x) sum[x] = 1.0f / sum[x];
  for (int c = 0; c < C; ++c)
    for (int x = 0; x < W; ++x) P[c * ldw + x] *= sum[x];
}

// Whether the values of this step go through a softmax.
SEGKIT_ALWAYS bool softmax_after(const ConvCrfArgs& a, int mode, bool last) {
  if (mode == MODE_INIT)
    return a.unary_kind == crf::UNARY_PROBS || a.init == crf::INIT_SOFTMAX;
  return !last || a.final_softmax;
}

// Copy C rows of P (stride ldw) to full-resolution row i of the scores.
SEGKIT_ALWAYS void store_scores_row(const Ctx& cx, int i, const float* __restrict P) {
  const Plan& pl = *cx.pl;
  for (int c = 0; c < pl.C; ++c)
    std::memcpy(cx.scores + c * pl.HW + static_cast<index_t>(i) * pl.W, P + c * pl.ldw,
                sizeof(float) * pl.W);
}

// ---- the update with every class of a block of pixels in registers (C <= 16) -----------------

constexpr int kMaxRegClasses = 16;

// p_c = get(c) for the C <= CM classes of one block of pixels, then softmax over classes when
// `soft`, then put(c, p_c). The same operations as softmax_rows_body, lane by lane.
template <int B, int CM, typename Get, typename Put>
SEGKIT_ALWAYS void update_block(int C, bool soft, const Get& get, const Put& put) {
  typedef typename Vec<B>::type V;
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
        p[c] = exp_v<B>(p[c] - mx);
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
  typedef typename Vec<B>::type V;
  constexpr int L = B / static_cast<int>(sizeof(float));
  const int C = pl.C, W = pl.W;
  const index_t HW = pl.HW;
  int x0 = 0;
  for (; x0 + L <= W; x0 += L)
    update_block<B, CM>(
        C, soft, [&](int c) { return get(c, loadv<B>(U + c * HW + x0), x0); },
        [&](int c, V v) { put(c, v, x0, L); });
  if (x0 < W) {
    const int nv = W - x0;
    float tail[CM * L];
    std::memset(tail, 0, sizeof tail);
    for (int c = 0; c < C; ++c) std::memcpy(tail + c * L, U + c * HW + x0, sizeof(float) * nv);
    update_block<B, CM>(
        C, soft, [&](int c) { return get(c, loadv<B>(tail + c * L), x0); },
        [&](int c, V v) { put(c, v, x0, nv); });
  }
}

// Stores the first n lanes of v at p.
template <int B>
SEGKIT_ALWAYS void store_lanes(float* p, typename Vec<B>::type v, int n) {
  if (n * static_cast<int>(sizeof(float)) == B) {
    storev<B>(p, v);
  } else {
    float t[B / sizeof(float)];
    std::memcpy(t, &v, B);
    std::memcpy(p, t, sizeof(float) * n);
  }
}

template <int B, int CM>
SEGKIT_ALWAYS void rows_blur1_regs(const Ctx& cx, int r, const Scratch& sc, int mode,
                                   bool last) {
  typedef typename Vec<B>::type V;
  const Plan& pl = *cx.pl;
  const bool iterate = mode == MODE_ITER;
  if (iterate) message_row_body<B>(cx, r, sc.M);
  const float a = cx.a->unary_coef, w = cx.a->message_coef;
  float* U = cx.scores + static_cast<index_t>(r) * pl.W;
  const float* M = sc.M;
  const index_t ldw = pl.ldw, HW = pl.HW, plane = pl.plane;
  float* dst = iterate && last ? U : cx.qnext + (pl.s + r) * pl.ld + pl.s;
  const index_t dstride = iterate && last ? HW : plane;
  auto put = [&](int c, V v, int x0, int n) { store_lanes<B>(dst + c * dstride + x0, v, n); };
  const bool soft = softmax_after(*cx.a, mode, last);
  if (iterate)
    update_row_blocks<B, CM>(
        pl, U, soft, [&](int c, V u, int x0) { return a * u + w * loadv<B>(M + c * ldw + x0); },
        put);
  else
    update_row_blocks<B, CM>(pl, U, soft, [&](int, V u, int) { return u; }, put);
}

template <int B, int CM>
SEGKIT_ALWAYS void update_blur_regs(const Ctx& cx, int R, const Scratch& sc, int mode,
                                    bool last) {
  typedef typename Vec<B>::type V;
  const Plan& pl = *cx.pl;
  const int W = pl.W, C = pl.C;
  const index_t ldw = pl.ldw, HW = pl.HW;
  const bool iterate = mode == MODE_ITER;
  const bool pool = !iterate || !last;
  const bool soft = softmax_after(*cx.a, mode, last);
  const float a = cx.a->unary_coef, w = cx.a->message_coef;
  int y0, y1;
  crf::pool_span(R, pl.p0, pl.b, pl.H, &y0, &y1);
  if (pool)
    for (int c = 0; c < C; ++c) std::memset(sc.A + c * ldw, 0, sizeof(float) * W);
  float* A = sc.A;
  for (int i = y0; i < y1; ++i) {
    float* U = cx.scores + static_cast<index_t>(i) * W;
    auto put = [&](int c, V v, int x0, int n) {
      if (pool) {
        float* p = A + c * ldw + x0;  // rows padded to whole vectors
        storev<B>(p, loadv<B>(p) + v);
      } else {
        store_lanes<B>(U + c * HW + x0, v, n);
      }
    };
    if (iterate) {
      int r0, r1;
      float h0, h1;
      crf::bilinear_taps(i, pl.p0, pl.b, pl.Hp, &r0, &r1, &h0, &h1);
      const float* e0 = cx.Me + static_cast<index_t>(r0) * ldw;
      const float* e1 = cx.Me + static_cast<index_t>(r1) * ldw;
      const index_t cs = static_cast<index_t>(pl.Hp) * ldw;
      update_row_blocks<B, CM>(
          pl, U, soft,
          [&](int c, V u, int x0) {
            return a * u + w * (h0 * loadv<B>(e0 + c * cs + x0) + h1 * loadv<B>(e1 + c * cs + x0));
          },
          put);
    } else {
      update_row_blocks<B, CM>(pl, U, soft, [&](int, V u, int) { return u; }, put);
    }
  }
  if (!pool) return;
  const float rows = static_cast<float>(y1 - y0);
  for (int c = 0; c < C; ++c) {
    const float* acc = A + c * ldw;
    float* q = cx.qnext + c * pl.plane + (pl.s + R) * pl.ld + pl.s;
    for (int X = 0; X < pl.Wp; ++X) {
      int x0, x1;
      crf::pool_span(X, pl.p1, pl.b, pl.W, &x0, &x1);
      float s = 0.0f;
      for (int x = x0; x < x1; ++x) s += acc[x];
      q[X] = s / (rows * static_cast<float>(x1 - x0));
    }
  }
}

// blur 1, row r: (message,) update, softmax; into the next Q or, last, into the scores.
template <int B>
SEGKIT_ALWAYS void rows_blur1_body(const Ctx& cx, int r, const Scratch& sc, int mode,
                                   bool last) {
  const Plan& pl = *cx.pl;
  if (mode == MODE_ITER) message_row_body<B>(cx, r, sc.M);
  pred_row_body(cx, r, sc.M, sc.P, mode);
  if (softmax_after(*cx.a, mode, last)) softmax_rows_body(pl, sc.P, sc);
  if (mode == MODE_ITER && last) {
    store_scores_row(cx, r, sc.P);
    return;
  }
  for (int c = 0; c < pl.C; ++c)
    std::memcpy(cx.qnext + c * pl.plane + (pl.s + r) * pl.ld + pl.s, sc.P + c * pl.ldw,
                sizeof(float) * pl.W);
}

// blur b, pooled row R: the message, then upsampled along the row into Me.
template <int B>
SEGKIT_ALWAYS void message_blur_body(const Ctx& cx, int R, const Scratch& sc) {
  const Plan& pl = *cx.pl;
  message_row_body<B>(cx, R, sc.M);
  const int W = pl.W;
  const int* __restrict i0 = pl.xi0.data();
  const int* __restrict i1 = pl.xi1.data();
  const float* __restrict l0 = pl.xl0.data();
  const float* __restrict l1 = pl.xl1.data();
  for (int c = 0; c < pl.C; ++c) {
    const float* __restrict m = sc.M + c * pl.ldw;
    float* __restrict e = cx.Me + (static_cast<index_t>(c) * pl.Hp + R) * pl.ldw;
    for (int x = 0; x < W; ++x) e[x] = l0[x] * m[i0[x]] + l1[x] * m[i1[x]];
  }
}

// blur b, pooled row R: for each of its full-resolution rows, the vertical interpolation of
// the message, update and softmax; then the b x b means into the next pooled Q (or, last,
// the rows into the scores).
template <int B>
SEGKIT_ALWAYS void update_blur_body(const Ctx& cx, int R, const Scratch& sc, int mode,
                                    bool last) {
  const Plan& pl = *cx.pl;
  const int W = pl.W, C = pl.C;
  const index_t ldw = pl.ldw;
  const bool pool = mode == MODE_INIT || !last;
  int y0, y1;
  crf::pool_span(R, pl.p0, pl.b, pl.H, &y0, &y1);
  if (pool)
    for (int c = 0; c < C; ++c) std::memset(sc.A + c * ldw, 0, sizeof(float) * W);
  for (int i = y0; i < y1; ++i) {
    if (mode == MODE_ITER) {
      int r0, r1;
      float h0, h1;
      crf::bilinear_taps(i, pl.p0, pl.b, pl.Hp, &r0, &r1, &h0, &h1);
      for (int c = 0; c < C; ++c) {
        const float* __restrict e0 = cx.Me + (static_cast<index_t>(c) * pl.Hp + r0) * ldw;
        const float* __restrict e1 = cx.Me + (static_cast<index_t>(c) * pl.Hp + r1) * ldw;
        float* __restrict m = sc.M + c * ldw;
        for (int x = 0; x < W; ++x) m[x] = h0 * e0[x] + h1 * e1[x];
      }
    }
    pred_row_body(cx, i, sc.M, sc.P, mode);
    if (softmax_after(*cx.a, mode, last)) softmax_rows_body(pl, sc.P, sc);
    if (!pool) {
      store_scores_row(cx, i, sc.P);
      continue;
    }
    for (int c = 0; c < C; ++c) {
      float* __restrict acc = sc.A + c * ldw;
      const float* __restrict p = sc.P + c * ldw;
      for (int x = 0; x < W; ++x) acc[x] += p[x];
    }
  }
  if (!pool) return;
  const float rows = static_cast<float>(y1 - y0);
  for (int c = 0; c < C; ++c) {
    const float* acc = sc.A + c * ldw;
    float* q = cx.qnext + c * pl.plane + (pl.s + R) * pl.ld + pl.s;
    for (int X = 0; X < pl.Wp; ++X) {
      int x0, x1;
      crf::pool_span(X, pl.p1, pl.b, pl.W, &x0, &x1);
      float s = 0.0f;
      for (int x = x0; x < x1; ++x) s += acc[x];
      q[X] = s / (rows * static_cast<float>(x1 - x0));
    }
  }
}

// ---- the per-ISA routines -----------------------------------------------------------------

struct Ops {
  void (*weights)(const Ctx&, int);
  void (*unary)(const Ctx&, int, const Scratch&);
  void (*rows_blur1)(const Ctx&, int, const Scratch&, int, bool);
  void (*message_blur)(const Ctx&, int, const Scratch&);
  void (*update_blur)(const Ctx&, int, const Scratch&, int, bool);
};

#define SEGKIT_CRF_OPS(NAME, ATTR, B)                                                          \
  ATTR void NAME##_weights(const Ctx& cx, int R) {                                             \
    if (cx.pl->ncol == 3)                                                                      \
      weights_row_body<3>(cx, R);                                                              \
    else                                                                                       \
      weights_row_body<5>(cx, R);                                                              \
  }                                                                                            \
  ATTR void NAME##_unary(const Ctx& cx, int i, const Scratch& sc) { unary_row_body(cx, i, sc); } \
  ATTR void NAME##_rows_blur1(const Ctx& cx, int r, const Scratch& sc, int mode, bool last) {  \
    const int C = cx.pl->C;                                                                    \
    if (C <= 4)                                                                                \
      rows_blur1_regs<B, 4>(cx, r, sc, mode, last);                                            \
    else if (C <= 8)                                                                           \
      rows_blur1_regs<B, 8>(cx, r, sc, mode, last);                                            \
    else if (C <= 12)                                                                          \
      rows_blur1_regs<B, 12>(cx, r, sc, mode, last);                                           \
    else if (C <= kMaxRegClasses)                                                              \
      rows_blur1_regs<B, kMaxRegClasses>(cx, r, sc, mode, last);                               \
    else                                                                                       \
      rows_blur1_body<B>(cx, r, sc, mode, last);                                               \
  }                                                                                            \
  ATTR void NAME##_message_blur(const Ctx& cx, int R, const Scratch& sc) {                     \
    message_blur_body<B>(cx, R, sc);                                                           \
  }                                                                                            \
  ATTR void NAME##_update_blur(const Ctx& cx, int R, const Scratch& sc, int mode, bool last) { \
    const int C = cx.pl->C;                                                                    \
    if (C <= 4)                                                                                \
      update_blur_regs<B, 4>(cx, R, sc, mode, last);                                           \
    else if (C <= 8)                                                                           \
      update_blur_regs<B, 8>(cx, R, sc, mode, last);                                           \
    else if (C <= 12)                                                                          \
      update_blur_regs<B, 12>(cx, R, sc, mode, last);                                          \
    else if (C <= kMaxRegClasses)                                                              \
      update_blur_regs<B, kMaxRegClasses>(cx, R, sc, mode, last);                              \
    else                                                                                       \
      update_blur_body<B>(cx, R, sc, mode, last);                                              \
  }                                                                                            \
  const Ops NAME##_ops = {NAME##_weights, NAME##_unary, NAME##_rows_blur1,                     \
                          NAME##_message_blur, NAME##_update_blur};

SEGKIT_CRF_OPS(base, , 16)
#if defined(__x86_64__) || defined(__i386__)
SEGKIT_CRF_OPS(avx2, __attribute__((target("avx2,fma"))), 32)
SEGKIT_CRF_OPS(avx512, __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq"))), 64)
#endif
#undef SEGKIT_CRF_OPS

const Ops& pick_ops() {
#if defined(__x86_64__) || defined(__i386__)
  switch (active_isa()) {
    case Isa::Avx512: return avx512_ops;
    case Isa::Avx2: return avx2_ops;
    default: return base_ops;
  }
#else
  return base_ops;
#endif
}

void check_args(const ConvCrfArgs& a) {
  if (a.n < 0 || a.c < 1 || a.h < 0 || a.w < 0)
    throw std::invalid_argument("convcrf: bad shape (n, c, h, w) = (" + std::to_string(a.n) +
                                ", " + std::to_string(a.c) + ", " + std::to_string(a.h) + ", " +
                                std::to_string(a.w) + ")");
  if (a.h > (1 << 30) || a.w > (1 << 30))
    throw std::invalid_argument("convcrf: image side larger than 2^30");
  if (a.filter_size < 1 || a.filter_size % 2 == 0)
    throw std::invalid_argument("convcrf: filter_size must be a positive odd integer, got " +
                                std::to_string(a.filter_size));
  if (a.blur < 1 || (a.blur > 1 && a.blur % 2 == 1))
    throw std::invalid_argument("convcrf: blur must be 1 or even, got " +
                                std::to_string(a.blur));
  if (a.num_iter < 1)
    throw std::invalid_argument("convcrf: num_iter must be >= 1, got " +
                                std::to_string(a.num_iter));
  if (a.unary_kind != crf::UNARY_LOGITS && a.unary_kind != crf::UNARY_PROBS)
    throw std::invalid_argument("convcrf: bad unary_kind code " + std::to_string(a.unary_kind));
  if (a.init != crf::INIT_CONVCRF && a.init != crf::INIT_SOFTMAX)
    throw std::invalid_argument("convcrf: bad init code " + std::to_string(a.init));
}

// Sets to zero every element of the K and Q planes that no image of this call writes: the halo
// rows and columns, the row tails, and the weights whose neighbour p+e is outside the grid.
// The message loop reads them (times a zero weight) without bounds checks.
void clear_borders(const Plan& pl, float* K, float* Q0, float* Q1, int plane_index) {
  const int nplanes = pl.nh + 2 * pl.C;
  const int j = plane_index;
  if (j >= nplanes) return;
  float* p;
  int ey = 0, ex = 0;
  bool weights = j < pl.nh;
  if (weights) {
    p = K + j * pl.plane;
    ey = pl.ey[j];
    ex = pl.ex[j];
  } else {
    const int q = j - pl.nh;
    p = (q < pl.C ? Q0 : Q1) + (q % pl.C) * pl.plane;
  }
  const int rows = pl.Hp + 2 * pl.s;
  for (int y = 0; y < rows; ++y) {
    float* row = p + y * pl.ld;
    const int R = y - pl.s;
    // valid (written) columns of this row, relative to the row start
    int lo = 0, hi = 0;
    if (R >= 0 && R < pl.Hp) {
      if (!weights) {
        lo = pl.s;
        hi = pl.s + pl.Wp;
      } else if (R + ey < pl.Hp) {
        lo = pl.s + std::max(0, -ex);
        hi = pl.s + std::min(pl.Wp, pl.Wp - ex);
      }
    }
    if (hi <= lo) {
      std::memset(row, 0, sizeof(float) * pl.ld);
    } else {
      std::memset(row, 0, sizeof(float) * lo);
      std::memset(row + hi, 0, sizeof(float) * (pl.ld - hi));
    }
  }
}

// Working memory kept between calls (a dataset job calls once per image): allocating and
// first touching the tens of MB that blur 1 needs costs more than its iterations. At most two
// blocks are kept (concurrent calls each take their own); convcrf_release_workspace() frees
// them.
class WorkspacePool {
 public:
  struct Block {
    std::unique_ptr<float[]> data;
    size_t size = 0;
  };

  Block acquire(size_t n) {
    Block b;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!free_.empty()) {
        b = std::move(free_.back());
        free_.pop_back();
      }
    }
    if (b.size < n) {
      b.data.reset();
      b.data.reset(new float[n]);  // uninitialised: every element read is written first
      b.size = n;
    }
    return b;
  }

  void release(Block b) {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.size() < 2) free_.push_back(std::move(b));
  }

  std::int64_t clear() {
    std::lock_guard<std::mutex> lock(mu_);
    std::int64_t bytes = 0;
    for (const Block& b : free_) bytes += static_cast<std::int64_t>(b.size * sizeof(float));
    free_.clear();
    return bytes;
  }

  std::int64_t held() {
    std::lock_guard<std::mutex> lock(mu_);
    std::int64_t bytes = 0;
    for (const Block& b : free_) bytes += static_cast<std::int64_t>(b.size * sizeof(float));
    return bytes;
  }

 private:
  std::mutex mu_;
  std::vector<Block> free_;
};

WorkspacePool& pool() {
  static WorkspacePool* p = new WorkspacePool();  // never destroyed: safe at exit
  return *p;
}

struct Sizes {
  index_t k, q, feat, me, scratch_per_thread;
};

Sizes sizes_of(const Plan& pl) {
  Sizes s;
  s.k = pl.nh * pl.plane;
  s.q = static_cast<index_t>(pl.C) * pl.plane;
  s.feat = pl.nfeat * pl.fstride;
  s.me = pl.b > 1 ? static_cast<index_t>(pl.C) * pl.Hp * pl.ldw : 0;
  s.scratch_per_thread = 3 * static_cast<index_t>(pl.C) * pl.ldw + 2 * pl.ldw;
  return s;
}

}  // namespace

std::int64_t convcrf_workspace_bytes(const ConvCrfArgs& a) {
  check_args(a);
  if (a.n == 0 || a.h == 0 || a.w == 0) return 0;
  const Plan pl = make_plan(a);
  const Sizes s = sizes_of(pl);
  return static_cast<std::int64_t>(sizeof(float)) *
         (s.k + 2 * s.q + s.feat + s.me + max_threads() * s.scratch_per_thread);
}

template <typename TImg>
void convcrf(float* scores, const TImg* image, const ConvCrfArgs& a) {
  check_args(a);
  if (a.n == 0 || a.h == 0 || a.w == 0) return;
  const Plan pl = make_plan(a);
  const Sizes sz = sizes_of(pl);
  const Ops& ops = pick_ops();
  const int threads = max_threads();

  const size_t total = static_cast<size_t>(sz.k + 2 * sz.q + sz.feat + sz.me) +
                       static_cast<size_t>(threads) * sz.scratch_per_thread;
  WorkspacePool::Block block = pool().acquire(total);
  float* const K = block.data.get();
  float* Q[2] = {K + sz.k, K + sz.k + sz.q};
  float* const feat = Q[1] + sz.q;
  float* const Me = feat + sz.feat;
  float* const scratch = Me + sz.me;

#pragma omp parallel num_threads(threads)
  {
#ifdef _OPENMP
    const int tid = omp_get_thread_num();
#else
    const int tid = 0;
#endif
#ifdef SEGKIT_HAVE_MXCSR
    // Flush subnormal results to zero while this call runs (restored below): weights and
    // probabilities near 1e-38 multiply into subnormal products, which x86 processors
    // compute through microcode assists many times slower. Such terms are below 1e-30 of
    // any score, far under the tolerance to ConvCRF's own float32 results.
    const unsigned int saved_csr = _mm_getcsr();
    _mm_setcsr(saved_csr | 0x8000);  // FTZ (inputs are read as they are)
#endif
    float* mine = scratch + tid * sz.scratch_per_thread;
    const index_t rows = static_cast<index_t>(pl.C) * pl.ldw;
    const Scratch sc = {mine, mine + rows, mine + 2 * rows, mine + 3 * rows,
                        mine + 3 * rows + pl.ldw};
    Ctx cx;
    cx.pl = &pl;
    cx.a = &a;
    cx.feat = feat;
    cx.K = K;
    cx.Me = Me;
    // clear_borders writes only what no later phase writes; the barriers after the weights
    // and the first Q order it before every read.
#pragma omp for schedule(dynamic, 1) nowait
    for (int j = 0; j < pl.nh + 2 * pl.C; ++j) clear_borders(pl, K, Q[0], Q[1], j);
    for (index_t n = 0; n < a.n; ++n) {
      cx.scores = scores + n * pl.C * pl.HW;
      const TImg* img = image + n * a.im_sn;
      // Rows are handed out dynamically, four at a time: on a shared machine a thread that is
      // descheduled for a while then delays only its current rows, not a fixed half.
      // U (no barrier: the next barriers order it before Q_0), features, weights, Q_0.
#pragma omp for schedule(dynamic, 4) nowait
      for (int i = 0; i < pl.H; ++i) ops.unary(cx, i, sc);
#pragma omp for schedule(dynamic, 4)
      for (int R = 0; R < pl.Hp; ++R) features_row(pl, a, img, feat, R);
#pragma omp for schedule(dynamic, 4)
      for (int R = 0; R < pl.Hp; ++R) ops.weights(cx, R);
      cx.qcur = nullptr;
      cx.qnext = Q[0];
      if (pl.b == 1) {
#pragma omp for schedule(dynamic, 4)
        for (int r = 0; r < pl.H; ++r) ops.rows_blur1(cx, r, sc, MODE_INIT, false);
      } else {
#pragma omp for schedule(dynamic, 4)
        for (int R = 0; R < pl.Hp; ++R) ops.update_blur(cx, R, sc, MODE_INIT, false);
      }
      for (int it = 0; it < a.num_iter; ++it) {
        const bool last = it == a.num_iter - 1;
        cx.qcur = Q[it % 2];
        cx.qnext = Q[(it + 1) % 2];
        if (pl.b == 1) {
#pragma omp for schedule(dynamic, 4)
          for (int r = 0; r < pl.H; ++r) ops.rows_blur1(cx, r, sc, MODE_ITER, last);
        } else {
#pragma omp for schedule(dynamic, 4)
          for (int R = 0; R < pl.Hp; ++R) ops.message_blur(cx, R, sc);
#pragma omp for schedule(dynamic, 4)
          for (int R = 0; R < pl.Hp; ++R) ops.update_blur(cx, R, sc, MODE_ITER, last);
        }
      }
    }
#ifdef SEGKIT_HAVE_MXCSR
    _mm_setcsr(saved_csr);
#endif
  }
  pool().release(std::move(block));
}

std::int64_t convcrf_release_workspace() { return pool().clear(); }
std::int64_t convcrf_cached_workspace() { return pool().held(); }

template void convcrf<std::uint8_t>(float*, const std::uint8_t*, const ConvCrfArgs&);
template void convcrf<float>(float*, const float*, const ConvCrfArgs&);

}  // namespace cpu
}  // namespace segkit
