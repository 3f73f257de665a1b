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
// row-upsampled message rows; one pooled row's k*k Gaussians (gp, gc); the horizontal adjoint's
// products (prod).
struct BwdScratch {
  std::vector<float> u, m, mp, z, gr, dq, dqe, h, e, me, mx, sum, gp, gc, prod;
  explicit BwdScratch(const Geo& g)
      : u(static_cast<size_t>(g.C) * g.W), m(u.size()), mp(u.size()), z(u.size()),
        gr(u.size()), dq(u.size()), dqe(u.size()), h(u.size()), e(3 * u.size()),
        me(g.b > 1 ? 3 * u.size() : 0), mx(g.W), sum(g.W),
        gp(static_cast<size_t>(2 * g.s + 1) * (2 * g.s + 1) * g.ldg), gc(gp.size()),
        prod(2 * static_cast<size_t>(g.W)) {}
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

// z (C rows of W) = (unary_weight - w_c) u + w_c mp.
inline void pred_u(const Ctx& k, const float* __restrict u, const float* __restrict mp,
                   float* __restrict z) {
  const Geo& g = *k.g;
  for (int c = 0; c < g.C; ++c) {
    const float w = k.weight[c], au = k.a->unary_weight - w;
    for (int j = 0; j < g.W; ++j) z[c * g.W + j] = au * u[c * g.W + j] + w * mp[c * g.W + j];
  }
}

// The cell's dQb spread over its columns, dqe (C rows of W) = (pool^T dQb) / mask: the same
// for the cell's b rows (blur 1: the row itself).
inline void unpool_cell(const Ctx& k, int R, float* __restrict dqe, float* __restrict e) {
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
    const int* __restrict cell = g.cellx.data();
    for (int j = 0; j < g.W; ++j) o[j] = e[cell[j]];
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
inline const float* weight_terms(const Ctx& k, int t, int i, BwdScratch& s, double* dw,
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
    const float acc = dot_lanes(gc, mc, uc, g.W);
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
        dmu[static_cast<size_t>(c) * C + d] += dot_lanes(hc, md, nullptr, g.W);
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

// Stage 0, row i: the start's term (Q_0 = U, or softmax(U) through its Jacobian) into dU,
// then dU back through U = log_softmax(x) or log(x).
inline void start_row(const Ctx& k, int i, BwdScratch& s) {
  const Geo& g = *k.g;
  const int C = g.C;
  const index_t row = static_cast<index_t>(i) * g.W;
  unpool_row(k, i, s.dqe.data(), s.dq.data());
  const float* add = s.dq.data();
  if (start_softmax(*k.a)) {
    std::memcpy(s.z.data(), s.u.data(), sizeof(float) * C * g.W);
    softmax_row(s.z.data(), C, g.W, g.W, s.mx.data(), s.sum.data());
    jacobian(g, s.z.data(), s.dq.data(), s.sum.data(), s.gr.data());
    add = s.gr.data();
  }
  for (int c = 0; c < C; ++c)
    add_to(k.dU + c * g.HW + row, add + static_cast<index_t>(c) * g.W, g.W);
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

// o += l v over n values.
inline void add_scaled(float* __restrict o, const float* __restrict v, float l, int n) {
  for (int j = 0; j < n; ++j) o[j] += l * v[j];
}

// Row i of stage t >= 1 without a compat matrix: the work of u_row, message_row, pred_u,
// softmax_row, unpool_row, jacobian, weight_terms and adjoint_rows in four sweeps over the
// row's C x W values (each of those helpers sweeps it once or more): (1) U, the masked message
// M, z = a U + w M and its running max over the classes; (2) exp and the sum; (3) Q and
// sum_c Q dQ; (4) G, dw, dU and the upsampling's vertical adjoint. The same arithmetic per
// value as the general path (sweep_cell with compat), so the same bits.
inline void fused_row(const Ctx& k, int t, int i, int R, BwdScratch& s, double* dw) {
  const Geo& g = *k.g;
  const ConvCrfGradArgs& a = *k.a;
  const int C = g.C, W = g.W;
  const index_t row = static_cast<index_t>(i) * W, cw = static_cast<index_t>(C) * W;
  const bool last = t == k.T;
  const bool jac = !last || a.final_softmax;  // G_t through the softmax Jacobian
  const bool saved_q = jac && !last && g.b == 1;  // Q_t is the saved Qb_t (masked)
  const bool soft = jac && !saved_q;  // Q_t = softmax(z_t) recomputed
  const float* __restrict fm = k.im->fm(i);
  float* __restrict mx = s.mx.data();
  float* __restrict sum = s.sum.data();
  const float h0 = g.yl0[i], h1 = g.yl1[i];
  for (int c = 0; c < C; ++c) {  // (1)
    const float* __restrict x = k.x + c * g.HW + row;
    float* __restrict u = s.u.data() + static_cast<index_t>(c) * W;
    float* __restrict m = s.m.data() + static_cast<index_t>(c) * W;
    float* __restrict z = s.z.data() + static_cast<index_t>(c) * W;
    if (a.unary_kind == crf::UNARY_PROBS) {
      for (int j = 0; j < W; ++j) u[j] = crf::log_f32(x[j]);
    } else {
      const float* __restrict lm = k.lmx + row;
      const float* __restrict ls = k.lls + row;
      for (int j = 0; j < W; ++j) u[j] = (x[j] - lm[j]) - ls[j];
    }
    if (g.b == 1) {
      const float* __restrict r0 = k.Mb + c * g.HWp + static_cast<index_t>(i) * g.Wp;
      for (int j = 0; j < W; ++j) m[j] = r0[j] * fm[j];
    } else {
      const float* __restrict e0 = s.me.data() + (3 * static_cast<index_t>(c) + g.yi0[i] - R + 1) * W;
      const float* __restrict e1 = s.me.data() + (3 * static_cast<index_t>(c) + g.yi1[i] - R + 1) * W;
      for (int j = 0; j < W; ++j) m[j] = (h0 * e0[j] + h1 * e1[j]) * fm[j];
    }
    if (!soft) continue;
    const float w = k.weight[c], au = a.unary_weight - w;
    for (int j = 0; j < W; ++j) z[j] = au * u[j] + w * m[j];
    if (c == 0)
      for (int j = 0; j < W; ++j) mx[j] = z[j];
    else
      for (int j = 0; j < W; ++j) mx[j] = std::max(mx[j], z[j]);
  }
  if (soft) {  // (2)
    for (int j = 0; j < W; ++j) sum[j] = 0.0f;
    for (int c = 0; c < C; ++c) {
      float* __restrict z = s.z.data() + static_cast<index_t>(c) * W;
      for (int j = 0; j < W; ++j) {
        const float e = crf::exp_f32(z[j] - mx[j]);
        z[j] = e;
        sum[j] += e;
      }
    }
    for (int j = 0; j < W; ++j) sum[j] = 1.0f / sum[j];
  }
  // dQ_t: the incoming gradient at T (through the final softmax), else pool^T dQb_t
  const float* dq0 = last ? k.gout + row : s.dqe.data();
  const index_t dqs = last ? g.HW : W;
  float* __restrict dot = mx;  // the max is no longer needed
  if (jac) {  // (3)
    for (int j = 0; j < W; ++j) dot[j] = 0.0f;
    for (int c = 0; c < C; ++c) {
      float* __restrict q = s.z.data() + static_cast<index_t>(c) * W;
      const float* __restrict d = dq0 + c * dqs;
      if (saved_q) {
        std::memcpy(q, k.Qs + t * static_cast<index_t>(C) * g.HWp + c * g.HWp + row,
                    sizeof(float) * W);
      } else {
        for (int j = 0; j < W; ++j) q[j] *= sum[j];
      }
      if (last)
        for (int j = 0; j < W; ++j) dot[j] += q[j] * d[j];
      else
        for (int j = 0; j < W; ++j) dot[j] += q[j] * (d[j] * fm[j]);
    }
  }
  float* ev[2] = {nullptr, nullptr};
  if (g.b > 1) ev[0] = s.e.data() + (g.yi0[i] - R + 1) * cw, ev[1] = s.e.data() + (g.yi1[i] - R + 1) * cw;
  for (int c = 0; c < C; ++c) {  // (4)
    const float w = k.weight[c], au = a.unary_weight - w;
    const index_t o = static_cast<index_t>(c) * W;
    const float* __restrict q = s.z.data() + o;
    const float* __restrict d = dq0 + c * dqs;
    const float* __restrict u = s.u.data() + o;
    const float* __restrict m = s.m.data() + o;
    float* __restrict gr = s.gr.data() + o;
    float* __restrict du = k.dU + c * g.HW + row;
    if (!jac)
      std::memcpy(gr, d, sizeof(float) * W);
    else if (last)
      for (int j = 0; j < W; ++j) gr[j] = q[j] * (d[j] - dot[j]);
    else
      for (int j = 0; j < W; ++j) gr[j] = q[j] * (d[j] * fm[j] - dot[j]);
    dw[c] += dot_lanes(gr, m, u, W);
    if (last)
      for (int j = 0; j < W; ++j) du[j] = au * gr[j];
    else
      for (int j = 0; j < W; ++j) du[j] += au * gr[j];
    for (int j = 0; j < W; ++j) gr[j] = (w * gr[j]) * fm[j];  // the message's gradient
    if (g.b == 1) {
      std::memcpy(k.Rb + c * g.plane + g.at(i, 0), gr, sizeof(float) * W);
      continue;
    }
    add_scaled(ev[0] + o, gr, g.yl0[i], W);  // the two taps may be one row: one after the other
    add_scaled(ev[1] + o, gr, g.yl1[i], W);
  }
}

}  // namespace gradrows
}  // namespace cpu
}  // namespace segkit
