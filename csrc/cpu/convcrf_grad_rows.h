// CPU trainable ConvCRF backward (convcrf_grad_backward.cpp): the row kernels (softmax and its
// Jacobian, the masked message of a row, a pooled row's Gaussians, the message passes and the
// parameter sums; the upsampling is in convcrf_grad_upsample.h), each compiled once per
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
// Wp) at blur 1, or from the cell's row-upsampled rows `me` (upsample_rows) otherwise, into m
// (C rows of W), then M' = M + compat M into mp (mp = m without compat).
inline void message_row(const Geo& g, const Image& im, const float* Mb, const float* compat, int i,
                        int R, float* m, float* mp) {
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
    const float* e0 = Mb + (3 * static_cast<index_t>(c) + g.yi0[i] - R + 1) * W;
    const float* e1 = Mb + (3 * static_cast<index_t>(c) + g.yi1[i] - R + 1) * W;
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

// out(p) = sum_d A(p, p+d) in(p+d) for pooled row r and CB classes from c0 (`in` haloed, `out`
// C planes of HWp), with the CB accumulators of a vector of pixels in registers.
template <int B, int CB>
SEGKIT_ALWAYS void pass_block(const Geo& g, const float* Ga, const float* in, float* out, int r,
                              int c0) {
  typedef vec_t<float, B> V;
  constexpr int L = Vec<float, B>::lanes;
  const int k = 2 * g.s + 1;
  const float* q = in + static_cast<index_t>(c0) * g.plane;
  for (int x0 = 0; x0 < g.Wp; x0 += L) {
    V acc[CB];
    for (int c = 0; c < CB; ++c) acc[c] = V{};
    for (int dy = -g.s; dy <= g.s; ++dy) {
      if (r + dy < 0 || r + dy >= g.Hp) continue;
      for (int dx = -g.s; dx <= g.s; ++dx) {
        const index_t o = (dy + g.s) * k + dx + g.s;
        const index_t wofs = o * g.ldg + x0;
        const V w = loadv<V>(Ga + wofs);
        const float* src = q + g.at(r + dy, x0 + dx);
        for (int c = 0; c < CB; ++c) acc[c] += w * loadv<V>(src + c * g.plane);
      }
    }
    const int nv = std::min(L, g.Wp - x0);
    for (int c = 0; c < CB; ++c)
      store_lanes(out + (c0 + c) * g.HWp + static_cast<index_t>(r) * g.Wp + x0, acc[c], nv);
  }
}

// The five parameter sums of pooled row r: S(p, d) = sum_c R_c(p) Qb_c(p+d) (both haloed).
// One vector of pixels at a time over every offset, so that R_c(p) and the rows of Qb around
// it stay in L1 (offsets outside would stream every class plane once per offset); the row's
// partials go to double once per vector of pixels.
template <int B>
SEGKIT_ALWAYS void sums_row(const Geo& g, const Image& im, const float* Gp, const float* Gc,
                            const float* R, const float* qb, int r, double* sums) {
  typedef vec_t<float, B> V;
  constexpr int L = Vec<float, B>::lanes;
  const int k = 2 * g.s + 1;
  const float* f = im.featH.data();
  const int dy0 = std::max(-g.s, -r), dy1 = std::min(g.s, g.Hp - 1 - r);
  double t[kGradSums] = {0, 0, 0, 0, 0};
  for (int x0 = 0; x0 < g.Wp; x0 += L) {
    const index_t hp = g.at(r, x0);
    V fp[kFeatures];
    for (int ff = 0; ff < kFeatures; ++ff) fp[ff] = loadv<V>(f + ff * g.plane + hp);
    V v0{}, v1{}, v2{}, v3{}, v4{};
    for (int dy = dy0; dy <= dy1; ++dy) {
      for (int dx = -g.s; dx <= g.s; ++dx) {
        const index_t o = (dy + g.s) * k + dx + g.s;
        const index_t hq = g.at(r + dy, x0 + dx);
        // four partial sums over the classes (one accumulator would chain C dependent FMAs)
        V S0{}, S1{}, S2{}, S3{};
        int c = 0;
        for (; c + 4 <= g.C; c += 4) {
          const float* rc = R + c * g.plane + hp;
          const float* qc = qb + c * g.plane + hq;
          S0 += loadv<V>(rc) * loadv<V>(qc);
          S1 += loadv<V>(rc + g.plane) * loadv<V>(qc + g.plane);
          S2 += loadv<V>(rc + 2 * g.plane) * loadv<V>(qc + 2 * g.plane);
          S3 += loadv<V>(rc + 3 * g.plane) * loadv<V>(qc + 3 * g.plane);
        }
        for (; c < g.C; ++c)
          S0 += loadv<V>(R + c * g.plane + hp) * loadv<V>(qb + c * g.plane + hq);
        const V S = (S0 + S1) + (S2 + S3);
        V dpos{}, dcol{};
        for (int ff = 0; ff < kFeatures; ++ff) {
          const V d = loadv<V>(f + ff * g.plane + hq) - fp[ff];
          if (ff < 2)
            dpos += d * d;
          else
            dcol += d * d;
        }
        const index_t wofs = o * g.ldg + x0;
        const V ps = loadv<V>(Gp + wofs) * S, cs = loadv<V>(Gc + wofs) * S;
        v0 += ps;
        v1 += cs;
        v2 += dpos * ps;
        v3 += dcol * cs;
        v4 += dpos * cs;
      }
    }
    float l[5][L];
    std::memcpy(l[0], &v0, sizeof v0), std::memcpy(l[1], &v1, sizeof v1);
    std::memcpy(l[2], &v2, sizeof v2), std::memcpy(l[3], &v3, sizeof v3);
    std::memcpy(l[4], &v4, sizeof v4);
    for (int j = 0; j < kGradSums; ++j)
      for (int i = 0; i < L; ++i) t[j] += l[j][i];
  }
  for (int j = 0; j < kGradSums; ++j) sums[j] = t[j];
}

// out = A in for pooled row r, every class (classes in blocks of up to 8; `in` haloed, `out` C
// planes of HWp). The backward's pass; the forward has its own (convcrf_message.h).
template <int B>
SEGKIT_ALWAYS void pass_classes(const Geo& g, const float* Ga, const float* in, float* out,
                                int r) {
  const int chunks = (g.C + 7) / 8, base = g.C / chunks, extra = g.C % chunks;
  int c0 = 0;
  for (int ch = 0; ch < chunks; ++ch) {
    const int cb = base + (ch < extra ? 1 : 0);
    dispatch_exact<1, 2, 3, 4, 5, 6, 7, 8>(cb, [&](auto n) SEGKIT_BODY {
      pass_block<B, decltype(n)::value>(g, Ga, in, out, r, c0);
    });
    c0 += cb;
  }
}

// out = A in for pooled row r (pass_classes), and the row's five parameter sums against `qb`.
inline void pass_row(const Geo& g, const Image& im, const float* Gp, const float* Gc,
                     const float* Ga, const float* in, const float* qb, float* out, int r,
                     double* sums) {
  dispatch_isa([&](auto isa) SEGKIT_BODY {
    constexpr int B = decltype(isa)::bytes;
    pass_classes<B>(g, Ga, in, out, r);
    sums_row<B>(g, im, Gp, Gc, in, qb, r, sums);
  });
}

// The pooled message of row r, Mb = A qb (qb haloed), into Mb (C planes of HWp).
inline void message_pass_row(const Geo& g, const float* Ga, const float* qb, float* Mb, int r) {
  dispatch_isa([&](auto isa) SEGKIT_BODY {
    pass_classes<decltype(isa)::bytes>(g, Ga, qb, Mb, r);
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

// The per-pixel max mx and log-sum ls of the softmax over the C rows (HW apart) of row x.
inline void log_sum_row(const Geo& g, const float* x, float* __restrict mx,
                        float* __restrict ls) {
  for (int j = 0; j < g.W; ++j) mx[j] = x[j];
  for (int c = 1; c < g.C; ++c)
    for (int j = 0; j < g.W; ++j) mx[j] = std::max(mx[j], x[c * g.HW + j]);
  for (int j = 0; j < g.W; ++j) ls[j] = 0.0f;
  for (int c = 0; c < g.C; ++c)
    for (int j = 0; j < g.W; ++j) ls[j] += crf::exp_f32(x[c * g.HW + j] - mx[j]);
  for (int j = 0; j < g.W; ++j) ls[j] = crf::log_f32(ls[j]);
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
