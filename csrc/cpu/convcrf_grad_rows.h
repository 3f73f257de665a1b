// CPU trainable ConvCRF backward (convcrf_grad_backward.cpp): the row kernels (softmax and its
// Jacobian, the masked message of a row, a pooled row's Gaussians, dw's lane sums; the passes
// are in convcrf_grad_pass.h, the upsampling in convcrf_grad_upsample.h), each compiled once per
// instruction set through cpu/simd.h's dispatch. Include it after the translation unit's
// `#pragma GCC optimize("no-trapping-math")`.
#pragma once
#include <type_traits>
#include "cpu/convcrf_grad_plan.h"

namespace segkit {
namespace cpu {
namespace gradrows {

// In-place softmax over C rows of W values, `cs` apart.
inline void softmax_row(float* p, int C, index_t cs, int W, float* mx, float* sum) {
  for (int j = 0; j < W; ++j) mx[j] = p[j];
  for (int c = 1; c < C; ++c)
    for (int j = 0; j < W; ++j) mx[j] = std::max(mx[j], p[c * cs + j]);
  for (int j = 0; j < W; ++j) sum[j] = 0.0f;
  for (int c = 0; c < C; ++c)
    for (int j = 0; j < W; ++j) {
      const float e = crf::exp_f32(p[c * cs + j] - mx[j]);
      p[c * cs + j] = e;
      sum[j] += e;
    }
  for (int j = 0; j < W; ++j) sum[j] = 1.0f / sum[j];
  for (int c = 0; c < C; ++c)
    for (int j = 0; j < W; ++j) p[c * cs + j] *= sum[j];
}

// The masked, upsampled message of full-resolution row i (in cell R) from the pooled Mb (C, Hp,
// Wp) at blur 1, or from the cell's row-upsampled rows `me` (upsample_rows, me_row)
// otherwise, into m (C rows of W), then M' = M + compat M into mp (mp = m without compat).
inline void message_row(const Geo& g, const Image& im, const float* Mb, const float* compat, int i,
                        float* m, float* mp) {
  const int W = g.W;
  const float h0 = g.yl0[i], h1 = g.yl1[i];
  const float* fm = im.fm(i);
  for (int c = 0; c < g.C; ++c) {
    float* o = m + static_cast<index_t>(c) * W;
    if (g.b == 1) {
      const float* r0 = Mb + c * g.HWp + static_cast<index_t>(i) * g.Wp;
      for (int j = 0; j < W; ++j) o[j] = r0[j] * fm[j];
      continue;
    }
    const float* e0 = Mb + me_row(g, c, g.yi0[i]);
    const float* e1 = Mb + me_row(g, c, g.yi1[i]);
    for (int j = 0; j < W; ++j) o[j] = (h0 * e0[j] + h1 * e1[j]) * fm[j];
  }
  if (compat == nullptr) return;
  for (int c = 0; c < g.C; ++c) {
    float* o = mp + static_cast<index_t>(c) * W;
    std::memcpy(o, m + static_cast<index_t>(c) * W, sizeof(float) * W);
    for (int d = 0; d < g.C; ++d) {
      const float k = compat[c * g.C + d];
      const float* md = m + static_cast<index_t>(d) * W;
      for (int j = 0; j < W; ++j) o[j] += k * md[j];
    }
  }
}

// The Gaussians of pooled row r at offset (dy, dx), validity included, for the ldg columns
// of a Gaussian row, a vector of columns at a time (crfgrad::pair_distances and
// pair_gaussians written on vectors, in the same order): read from the haloed features and
// validity, so every read is inside the planes and the loop has no bounds (a neighbour
// outside the grid, or a column past Wp, has validity 0 and gets weight +0).
template <int B>
SEGKIT_ALWAYS void weight_row(const Geo& g, const Image& im, const crfgrad::Scales& sc,
                              const ConvCrfGradArgs& args, int r, int dy, int dx, float* gp,
                              float* gc, float* ga) {
  typedef vec_t<float, B> V;
  constexpr int L = Vec<float, B>::lanes;
  const float* f = im.featH.data();
  const float* v = im.validH.data();
  const index_t P = g.at(r, 0), Q = g.at(r + dy, dx), fs = g.plane;
  for (index_t x = 0; x < g.ldg; x += L) {
    V d[kFeatures];
    for (int ff = 0; ff < kFeatures; ++ff)
      d[ff] = loadv<V>(f + ff * fs + Q + x) - loadv<V>(f + ff * fs + P + x);
    const V dpos = d[0] * d[0] + d[1] * d[1];
    const V dcol = (d[2] * d[2] + d[3] * d[3]) + d[4] * d[4];
    const V a = crf::exp_poly(-0.5f * (sc.pos2 * dpos));
    const V b = crf::exp_poly(-0.5f * (sc.col2 * dcol + sc.colpos2 * dpos));
    const V vv = loadv<V>(v + P + x) * loadv<V>(v + Q + x);
    const V wp = a * vv, wc = b * vv;
    storev(gp + x, wp);
    storev(gc + x, wc);
    storev(ga + x, args.pos_compat * wp + args.col_compat * wc);
  }
}

// The k*k Gaussians of pooled row r (Gp and Gc, each k*k rows of ldg, offset o's at o * ldg;
// zero where p+d leaves the grid) and the kernel the passes apply, Ga = pos_compat Gp +
// col_compat Gc: computed per row where the passes need them, not kept for the whole grid
// (that would be 3 k*k pooled planes: 24 MB at 512x512, blur 4).
inline void weights_row(const Geo& g, const Image& im, const crfgrad::Scales& sc,
                        const ConvCrfGradArgs& args, int r, float* Gp, float* Gc, float* Ga) {
  const int k = 2 * g.s + 1;
  dispatch_isa([&](auto isa) SEGKIT_BODY {
    for (int o = 0; o < k * k; ++o) {
      const int dy = o / k - g.s, dx = o % k - g.s;
      float* gp = Gp + static_cast<index_t>(o) * g.ldg;
      float* gc = Gc + static_cast<index_t>(o) * g.ldg;
      float* ga = Ga + static_cast<index_t>(o) * g.ldg;
      if (r + dy < 0 || r + dy >= g.Hp) {
        std::fill(gp, gp + g.ldg, 0.0f);
        std::fill(gc, gc + g.ldg, 0.0f);
        std::fill(ga, ga + g.ldg, 0.0f);
        continue;
      }
      weight_row<decltype(isa)::bytes>(g, im, sc, args, r, dy, dx, gp, gc, ga);
    }
  });
}

// Row r of the saved pooled Q (C planes of HWp) into the haloed layout (halo left as it is).
inline void halo_row(const Geo& g, const float* src, int r, float* dst) {
  for (int c = 0; c < g.C; ++c)
    std::memcpy(dst + c * g.plane + g.at(r, 0), src + c * g.HWp + static_cast<index_t>(r) * g.Wp,
                sizeof(float) * g.Wp);
}

inline crfgrad::Scales scales_of(const ConvCrfGradArgs& a) {
  crfgrad::Scales sc;
  sc.pos2 = a.pos_inv * a.pos_inv;
  sc.col2 = a.col_inv * a.col_inv;
  sc.colpos2 = a.col_pos ? a.colpos_inv * a.colpos_inv : 0.0f;
  return sc;
}

inline bool start_softmax(const ConvCrfGradArgs& a) {
  return a.unary_kind == crf::UNARY_PROBS || a.init == crf::INIT_SOFTMAX;
}

// Columns [j0, j1) through body(lanes, j): whole vectors of B bytes (lanes a vec_t) from j0,
// then one float at a time (lanes a float): the same operations, so the same bits per value.
template <int B, class F>
SEGKIT_ALWAYS void over_cols(int j0, int j1, const F& body) {
  constexpr int L = Vec<float, B>::lanes;
  int j = j0;
  for (; j + L <= j1; j += L) body(vec_t<float, B>{}, j);
  for (; j < j1; ++j) body(0.0f, j);
}
template <class V>
SEGKIT_ALWAYS V ld(V, const float* p) {
  if constexpr (std::is_same_v<V, float>) return *p; else return loadv<V>(p);
}
template <class V>
SEGKIT_ALWAYS void st(float* p, V v) {
  if constexpr (std::is_same_v<V, float>) *p = v; else storev(p, v);
}

// dw's sums: part[j mod 16] += a[j] x[j] for the lanes (vector or float) at column j, 16
// lanes in all whatever the vector width (a float reduction in a fixed order, the same bits
// on every instruction set). The fused rows and dot16 both add through here.
template <class V>
SEGKIT_ALWAYS void add_lanes(float* part, int j, V a, V x) {
  float* lane = part + (std::is_same_v<V, float> ? j % 16 : j % 16 / (sizeof(V) / 4) * (sizeof(V) / 4));
  st(lane, ld(a, lane) + a * x);
}

// sum_j a[j] (b[j] - c[j]) (c null: sum_j a[j] b[j]) over n values, in 16 lanes (add_lanes),
// added in order at the end.
template <int B>
SEGKIT_ALWAYS float dot16(const float* a, const float* b, const float* c, int n) {
  float part[16] = {};
  over_cols<B>(0, n, [&](auto f, int j) SEGKIT_BODY {
    add_lanes(part, j, ld(f, a + j), c ? ld(f, b + j) - ld(f, c + j) : ld(f, b + j));
  });
  float acc = 0.0f;
  for (int l = 0; l < 16; ++l) acc += part[l];
  return acc;
}

// gr = q (d - sum_c q d), all C rows of W (the softmax Jacobian applied to d).
inline void jacobian(const Geo& g, const float* __restrict q, const float* __restrict d,
                     float* __restrict dot, float* __restrict gr) {
  for (int j = 0; j < g.W; ++j) dot[j] = 0.0f;
  for (int c = 0; c < g.C; ++c)
    for (int j = 0; j < g.W; ++j) dot[j] += q[c * g.W + j] * d[c * g.W + j];
  for (int c = 0; c < g.C; ++c)
    for (int j = 0; j < g.W; ++j) gr[c * g.W + j] = q[c * g.W + j] * (d[c * g.W + j] - dot[j]);
}

// Flush-to-zero and denormals-are-zero on this thread while in scope (the previous mode is
// restored). Probabilities far below the largest (exp(-90)) are denormal, and so are the
// gradients they scale; every FMA on one takes a microcode assist (about 100 cycles).
struct DenormalsAreZero {
#if SEGKIT_X86
  unsigned saved = _mm_getcsr();
  DenormalsAreZero() { _mm_setcsr(saved | 0x8040u); }
  ~DenormalsAreZero() { _mm_setcsr(saved); }
#endif
};

}  // namespace gradrows
}  // namespace cpu
}  // namespace segkit
