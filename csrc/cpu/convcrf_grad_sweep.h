// CPU trainable ConvCRF backward (convcrf_grad_backward.cpp): the per-thread scratch, the
// context of a stage and the kernels of one full-resolution row of the sweep (U, the message,
// the softmax and its Jacobian, dw and dU, the vertical adjoint of the upsampling; the fused
// row without a compat matrix, the general one with it). Include it after the translation
// unit's `#pragma GCC optimize("no-trapping-math")`.
#pragma once
#include "cpu/convcrf_grad_rows.h"
#include "cpu/convcrf_grad_upsample.h"

namespace segkit {
namespace cpu {
namespace gradrows {
// Per-thread scratch: C rows of W each; the three adjoint rows and (blur > 1) the cell's three
// row-upsampled message rows; two pooled rows' k*k Gaussians and kernels (gp, gc, ga);
// the horizontal adjoint's products (prod); dw's 16 lanes per class (part).
struct BwdScratch {
  std::vector<float> u, m, mp, z, gr, dq, dqe, h, e, me, mx, sum, gp, gc, ga, prod, part;
  int me_next = -1;  // the cell whose first two message rows `me` holds (-1: none)
  explicit BwdScratch(const Geo& g)
      : u(static_cast<size_t>(g.C) * g.W), m(u.size()), mp(u.size()), z(u.size()),
        gr(u.size()), dq(u.size()), dqe(u.size()), h(u.size()), e(3 * u.size()),
        me(g.b > 1 ? 3 * u.size() : 0), mx(g.W), sum(g.W),
        gp(2 * static_cast<size_t>(2 * g.s + 1) * (2 * g.s + 1) * g.ldg), gc(gp.size()),
        ga(gp.size()),
        prod(2 * static_cast<size_t>(g.W)), part(static_cast<size_t>(g.C) * 16) {}
};

// Everything a stage reads, for one image.
struct Ctx {
  const Geo* g;
  const ConvCrfGradArgs* a;
  const Image* im;
  const float *weight, *compat, *x, *gout, *lmx, *lls;
  const float* Qs;      // saved pooled Q of the image (T, C, HWp)
  const float* Mb;      // the pooled message of t (C, HWp)
  const float* load = nullptr;  // saved Qb to copy into `into`, haloed, along the sweep
  float* into = nullptr;
  float *dU, *Rb, *dQb, *P;
  double *dw_part, *dmu_part;
  int T;
};

// U of row i (C rows of W): log_softmax from the per-pixel max and log-sum, or log.
inline void u_row(const Ctx& k, int i, float* __restrict u) {
  const Geo& g = *k.g;
  const index_t row = static_cast<index_t>(i) * g.W;
  const float* __restrict mx = k.lmx + row;
  const float* __restrict ls = k.lls + row;
  for (int c = 0; c < g.C; ++c) {
    const float* __restrict x = k.x + c * g.HW + row;
    float* __restrict o = u + static_cast<index_t>(c) * g.W;
    if (k.a->unary_kind == crf::UNARY_PROBS)
      for (int j = 0; j < g.W; ++j) o[j] = crf::log_f32(x[j]);
    else
      for (int j = 0; j < g.W; ++j) o[j] = (x[j] - mx[j]) - ls[j];
  }
}

// a u + w m with w m rounded on its own and a u fused into the add (one FMA): the same bits
// in the fused row and pred_u whatever order the compiler gives the two products.
template <class V>
SEGKIT_ALWAYS V pred_value(float a, V u, float w, V m) {
  V wm = w * m;
  __asm__("" : "+x"(wm));
  return a * u + wm;
}

// z (C rows of W) = (unary_weight - w_c) u + w_c mp.
template <int B>
SEGKIT_ALWAYS void pred_u(const Ctx& k, const float* __restrict u, const float* __restrict mp,
                          float* __restrict z) {
  const Geo& g = *k.g;
  for (int c = 0; c < g.C; ++c) {
    const float w = k.weight[c], au = k.a->unary_weight - w;
    const index_t o = static_cast<index_t>(c) * g.W;
    over_cols<B>(0, g.W, [&](auto f, int j) SEGKIT_BODY {
      st(z + o + j, pred_value(au, ld(f, u + o + j), w, ld(f, mp + o + j)));
    });
  }
}

// The cell's dQb spread over its columns, dqe (C rows of W) = (pool^T dQb) / mask: the same
// for the cell's b rows (blur 1: the row itself). `e`: W floats of scratch.
template <int B>
SEGKIT_ALWAYS void unpool_cell(const Ctx& k, int R, float* __restrict dqe, float* __restrict e) {
  const Geo& g = *k.g;
  const float* __restrict ic = k.im->inv_count.data() + static_cast<index_t>(R) * g.Wp;
  for (int c = 0; c < g.C; ++c) {
    const float* __restrict src = k.dQb + c * g.HWp + static_cast<index_t>(R) * g.Wp;
    float* __restrict o = dqe + static_cast<index_t>(c) * g.W;
    if (g.b == 1) {
      for (int j = 0; j < g.W; ++j) o[j] = src[j] * ic[j];
      continue;
    }
    for (int X = 0; X < g.Wp; ++X) e[X] = src[X] * ic[X];
    spread_cells<B>(e, g.W, g.cellx.data(), g.W, o);
  }
}

// dq (C rows of W) = pool^T dQb for row i: the cell's spread times the row's mask.
inline void unpool_row(const Ctx& k, int i, const float* __restrict dqe, float* __restrict dq) {
  const Geo& g = *k.g;
  const float* __restrict fm = k.im->fm(i);
  for (int c = 0; c < g.C; ++c)
    for (int j = 0; j < g.W; ++j) dq[c * g.W + j] = dqe[c * g.W + j] * fm[j];
}

// dw += G (M' - U), dU (+)= (unary_weight - w) G, h = w G; with compat dcompat += h m^T and
// h <- h + compat^T h (into dm). Returns the gradient of the message, masked, in s.h/s.mp.
template <int B>
SEGKIT_ALWAYS const float* weight_terms(const Ctx& k, int t, int i, BwdScratch& s, double* dw,
                                        double* dmu) {
  const Geo& g = *k.g;
  const int C = g.C;
  const index_t row = static_cast<index_t>(i) * g.W;
  const float* mp = k.compat ? s.mp.data() : s.m.data();
  for (int c = 0; c < C; ++c) {
    const float w = k.weight[c], au = k.a->unary_weight - w;
    const float* __restrict gc = s.gr.data() + static_cast<index_t>(c) * g.W;
    const float* __restrict uc = s.u.data() + static_cast<index_t>(c) * g.W;
    const float* __restrict mc = mp + static_cast<index_t>(c) * g.W;
    float* __restrict du = k.dU + c * g.HW + row;
    float* __restrict hc = s.h.data() + static_cast<index_t>(c) * g.W;
    const float acc = dot16<B>(gc, mc, uc, g.W);
    if (t == k.T)
      for (int j = 0; j < g.W; ++j) du[j] = au * gc[j];
    else
      for (int j = 0; j < g.W; ++j) du[j] += au * gc[j];
    for (int j = 0; j < g.W; ++j) hc[j] = w * gc[j];
    dw[c] += acc;
  }
  float* dm = s.h.data();
  if (k.compat != nullptr) {
    for (int c = 0; c < C; ++c)
      for (int d = 0; d < C; ++d) {
        const float* hc = s.h.data() + static_cast<index_t>(c) * g.W;
        const float* md = s.m.data() + static_cast<index_t>(d) * g.W;
        dmu[static_cast<size_t>(c) * C + d] += dot16<B>(hc, md, nullptr, g.W);
      }
    dm = s.mp.data();  // the message's M' is no longer needed
    for (int d = 0; d < C; ++d) {
      float* o = dm + static_cast<index_t>(d) * g.W;
      std::memcpy(o, s.h.data() + static_cast<index_t>(d) * g.W, sizeof(float) * g.W);
      for (int c = 0; c < C; ++c) {
        const float kk = k.compat[c * C + d];
        const float* hc = s.h.data() + static_cast<index_t>(c) * g.W;
        for (int j = 0; j < g.W; ++j) o[j] += kk * hc[j];
      }
    }
  }
  const float* __restrict fm = k.im->fm(i);
  for (int c = 0; c < C; ++c) {
    float* __restrict o = dm + static_cast<index_t>(c) * g.W;
    for (int j = 0; j < g.W; ++j) o[j] *= fm[j];
  }
  return dm;
}

// The adjoint of the upsampling for row i's masked message gradient v: blur 1 straight into
// R; otherwise the vertical taps into the cell's three partial rows (pooled rows R - 1, R,
// R + 1).
inline void adjoint_rows(const Ctx& k, int i, int R, const float* __restrict v, float* e) {
  const Geo& g = *k.g;
  const index_t cw = static_cast<index_t>(g.C) * g.W;
  if (g.b == 1) {
    for (int c = 0; c < g.C; ++c)
      std::memcpy(k.Rb + c * g.plane + g.at(i, 0), v + static_cast<index_t>(c) * g.W,
                  sizeof(float) * g.W);
    return;
  }
  const int tap[2] = {g.yi0[i], g.yi1[i]};
  const float lam[2] = {g.yl0[i], g.yl1[i]};
  for (int q = 0; q < 2; ++q) {
    float* __restrict o = e + (tap[q] - R + 1) * cw;
    const float l = lam[q];
    for (index_t p = 0; p < cw; ++p) o[p] += l * v[p];
  }
}

// o += v, o /= v, o -= exp(u) t over n values (restrict: vectorised).
inline void add_to(float* __restrict o, const float* __restrict v, int n) {
  for (int j = 0; j < n; ++j) o[j] += v[j];
}
inline void divide_by(float* __restrict o, const float* __restrict v, int n) {
  for (int j = 0; j < n; ++j) o[j] /= v[j];
}
inline void sub_exp_times(float* __restrict o, const float* __restrict u,
                          const float* __restrict t, int n) {
  for (int j = 0; j < n; ++j) o[j] -= crf::exp_f32(u[j]) * t[j];
}

// Stage 0, row i, logits and Q_0 = U (ConvCRF's start): start_row in two sweeps over the row's
// C x W values, one loop per class each: dU += pool^T dQb_0 and its sum over the classes; then
// dU -= softmax(x) times that sum. The same arithmetic per value as start_row, so the same bits.
template <int B>
SEGKIT_ALWAYS void start_row_logits(const Ctx& k, int i, BwdScratch& s) {
  const Geo& g = *k.g;
  const index_t row = static_cast<index_t>(i) * g.W;
  const float* fm = k.im->fm(i);
  const float* lm = k.lmx + row;
  const float* ls = k.lls + row;
  float* tot = s.sum.data();
  std::fill(tot, tot + g.W, 0.0f);
  for (int c = 0; c < g.C; ++c) {
    float* du = k.dU + c * g.HW + row;
    const float* dqe = s.dqe.data() + static_cast<index_t>(c) * g.W;
    over_cols<B>(0, g.W, [&](auto f, int j) SEGKIT_BODY {
      auto dq = ld(f, dqe + j) * ld(f, fm + j);
      __asm__("" : "+x"(dq));  // rounded on its own, as start_row's stored dq (no FMA)
      const auto d = ld(f, du + j) + dq;
      st(du + j, d);
      st(tot + j, ld(f, tot + j) + d);
    });
  }
  for (int c = 0; c < g.C; ++c) {
    float* du = k.dU + c * g.HW + row;
    const float* x = k.x + c * g.HW + row;
    over_cols<B>(0, g.W, [&](auto f, int j) SEGKIT_BODY {
      const auto u = (ld(f, x + j) - ld(f, lm + j)) - ld(f, ls + j);
      st(du + j, ld(f, du + j) - crf::exp_poly(u) * ld(f, tot + j));
    });
  }
}

// Stage 0, row i, with a softmax start (probabilities, or init "softmax"; the logits with Q_0 = U
// take start_row_logits): the start's term, softmax(U) through its Jacobian, into dU, then dU
// back through U = log_softmax(x) or log(x).
inline void start_row(const Ctx& k, int i, BwdScratch& s) {
  const Geo& g = *k.g;
  const int C = g.C;
  const index_t row = static_cast<index_t>(i) * g.W;
  unpool_row(k, i, s.dqe.data(), s.dq.data());
  std::memcpy(s.z.data(), s.u.data(), sizeof(float) * C * g.W);
  softmax_row(s.z.data(), C, g.W, g.W, s.mx.data(), s.sum.data());
  jacobian(g, s.z.data(), s.dq.data(), s.sum.data(), s.gr.data());
  for (int c = 0; c < C; ++c)
    add_to(k.dU + c * g.HW + row, s.gr.data() + static_cast<index_t>(c) * g.W, g.W);
  if (k.a->unary_kind == crf::UNARY_PROBS) {
    for (int c = 0; c < C; ++c) divide_by(k.dU + c * g.HW + row, k.x + c * g.HW + row, g.W);
    return;
  }
  float* __restrict tot = s.sum.data();
  for (int j = 0; j < g.W; ++j) tot[j] = 0.0f;
  for (int c = 0; c < C; ++c) add_to(tot, k.dU + c * g.HW + row, g.W);
  for (int c = 0; c < C; ++c)
    sub_exp_times(k.dU + c * g.HW + row, s.u.data() + static_cast<index_t>(c) * g.W, tot, g.W);
}

// v times the mask's 0/1 at fm (MASKED), else v.
template <bool MASKED, class V>
SEGKIT_ALWAYS V masked_by(V f, V v, const float* fm) {
  if constexpr (MASKED) return v * ld(f, fm); else return v;
}

// Row i of stage t >= 1 without a compat matrix: the work of u_row, message_row, pred_u,
// softmax_row, unpool_row, jacobian, weight_terms and adjoint_rows in four sweeps over the
// row's C x W values, a tile of kTile columns at a time (a tile's values stay in L1 between
// the sweeps), each sweep one loop per class: (1) U, the masked message M, M - U, z = a U + w M
// and its running max over the classes; (2) exp and the sum; (3) Q and sum_c Q dQ; (4) G,
// dw's 16 lanes, dU and the upsampling's vertical adjoint. The same arithmetic per value as
// the general path (sweep_cell with compat; dw's lanes through add_lanes, as dot16), so the same
// bits. Without a mask (MASKED false) the products by the mask's 1s are left out: the same
// values.
constexpr int kTile = 256;  // a multiple of dw's 16 lanes

template <int B, bool MASKED>
SEGKIT_ALWAYS void fused_row(const Ctx& k, int t, int i, int R, BwdScratch& s, double* dw) {
  const Geo& g = *k.g;
  const ConvCrfGradArgs& a = *k.a;
  const int C = g.C, W = g.W;
  const index_t row = static_cast<index_t>(i) * W, cw = static_cast<index_t>(C) * W;
  const bool last = t == k.T;
  const bool jac = !last || a.final_softmax;  // G_t through the softmax Jacobian
  const bool saved_q = jac && !last && g.b == 1;  // Q_t is the saved Qb_t (masked)
  const bool soft = jac && !saved_q;  // Q_t = softmax(z_t) recomputed
  const bool probs = a.unary_kind == crf::UNARY_PROBS;
  const float* fm = k.im->fm(i);
  const float* lm = k.lmx + row;
  const float* ls = k.lls + row;
  float* mx = s.mx.data();
  float* sum = s.sum.data();
  float* dot = s.h.data();
  float* part = s.part.data();  // C x 16 lanes of dw, across the tiles
  const float h0 = g.yl0[i], h1 = g.yl1[i];
  // dQ_t: the incoming gradient at T (through the final softmax), else pool^T dQb_t
  const float* dq0 = last ? k.gout + row : s.dqe.data();
  const index_t dqs = last ? g.HW : W;
  float* ev0 = nullptr;  // the two taps' partial rows (may be one row: added one after the other)
  float* ev1 = nullptr;
  if (g.b > 1) ev0 = s.e.data() + (g.yi0[i] - R + 1) * cw, ev1 = s.e.data() + (g.yi1[i] - R + 1) * cw;
  std::fill(part, part + static_cast<size_t>(C) * 16, 0.0f);
  if (probs) u_row(k, i, s.u.data());  // U = log(x) first, in mu (read back below)
  for (int j0 = 0; j0 < W; j0 += kTile) {
    const int j1 = std::min(W, j0 + kTile);
    for (int c = 0; c < C; ++c) {  // (1)
      const float* x = k.x + c * g.HW + row;
      float* mu = s.u.data() + static_cast<index_t>(c) * W;
      float* z = s.z.data() + static_cast<index_t>(c) * W;
      const float w = k.weight[c], au = a.unary_weight - w;
      const float* e0 = g.b == 1 ? k.Mb + c * g.HWp + static_cast<index_t>(i) * g.Wp
                                 : s.me.data() + me_row(g, c, g.yi0[i]);
      const float* e1 = g.b == 1 ? e0 : s.me.data() + me_row(g, c, g.yi1[i]);
      over_cols<B>(j0, j1, [&](auto f, int j) SEGKIT_BODY {
        typedef decltype(f) V;
        const V u = probs ? ld(f, mu + j) : (ld(f, x + j) - ld(f, lm + j)) - ld(f, ls + j);
        const V m0 = g.b == 1 ? ld(f, e0 + j) : h0 * ld(f, e0 + j) + h1 * ld(f, e1 + j);
        const V m = masked_by<MASKED>(f, m0, fm + j);
        st(mu + j, m - u);
        if (!soft) return;
        const V zz = pred_value(au, u, w, m);
        st(z + j, zz);
        if (c == 0) {
          st(mx + j, zz);
        } else {
          const V old = ld(f, mx + j);
          st(mx + j, old < zz ? zz : old);
        }
      });
    }
    if (soft) {  // (2)
      for (int j = j0; j < j1; ++j) sum[j] = 0.0f;
      for (int c = 0; c < C; ++c) {
        float* z = s.z.data() + static_cast<index_t>(c) * W;
        over_cols<B>(j0, j1, [&](auto f, int j) SEGKIT_BODY {
          const auto e = crf::exp_poly(ld(f, z + j) - ld(f, mx + j));
          st(z + j, e);
          st(sum + j, ld(f, sum + j) + e);
        });
      }
      for (int j = j0; j < j1; ++j) sum[j] = 1.0f / sum[j];
    }
    if (jac) {  // (3)
      for (int j = j0; j < j1; ++j) dot[j] = 0.0f;
      for (int c = 0; c < C; ++c) {
        float* q = s.z.data() + static_cast<index_t>(c) * W;
        const float* d = dq0 + c * dqs;
        const float* qs = k.Qs + t * static_cast<index_t>(C) * g.HWp + c * g.HWp + row;
        over_cols<B>(j0, j1, [&](auto f, int j) SEGKIT_BODY {
          const auto qq = saved_q ? ld(f, qs + j) : ld(f, q + j) * ld(f, sum + j);
          st(q + j, qq);
          const auto dd = last ? ld(f, d + j) : masked_by<MASKED>(f, ld(f, d + j), fm + j);
          st(dot + j, ld(f, dot + j) + qq * dd);
        });
      }
    }
    for (int c = 0; c < C; ++c) {  // (4)
      const float w = k.weight[c], au = a.unary_weight - w;
      const index_t o = static_cast<index_t>(c) * W;
      const float* q = s.z.data() + o;
      const float* d = dq0 + c * dqs;
      const float* mu = s.u.data() + o;
      float* du = k.dU + c * g.HW + row;
      float* rb = g.b == 1 ? k.Rb + c * g.plane + g.at(i, 0) : nullptr;
      float* p16 = part + static_cast<index_t>(c) * 16;
      over_cols<B>(j0, j1, [&](auto f, int j) SEGKIT_BODY {
        typedef decltype(f) V;
        const V dd = ld(f, d + j);
        V gr = dd;
        if (jac) gr = last ? ld(f, q + j) * (dd - ld(f, dot + j))
                           : ld(f, q + j) * (masked_by<MASKED>(f, dd, fm + j) - ld(f, dot + j));
        add_lanes(p16, j, gr, ld(f, mu + j));
        st(du + j, last ? au * gr : ld(f, du + j) + au * gr);
        const V gm = masked_by<MASKED>(f, w * gr, fm + j);  // the message's gradient
        if (g.b == 1) {
          st(rb + j, gm);
          return;
        }
        st(ev0 + o + j, ld(f, ev0 + o + j) + h0 * gm);
        st(ev1 + o + j, ld(f, ev1 + o + j) + h1 * gm);
      });
    }
  }
  for (int c = 0; c < C; ++c) {
    float acc = 0.0f;
    for (int l = 0; l < 16; ++l) acc += part[static_cast<index_t>(c) * 16 + l];
    dw[c] += acc;
  }
}

}  // namespace gradrows
}  // namespace cpu
}  // namespace segkit
