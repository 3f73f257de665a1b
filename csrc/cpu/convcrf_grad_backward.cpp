// CPU trainable ConvCRF: the fused backward (GUIDE section 3, "The trainable ConvCRF"; the
// determinism rules are in convcrf_grad.cpp's header comment).
//
// The forward keeps Qb_t (saved[t], t < T), the pooled Q that iteration t + 1's message pass
// read. One image at a time, inside ONE OpenMP parallel region per image. First the message of
// T, Mb_T = A Qb_{T-1}. Then going back from t = T to t = 0, each stage is three loops (each
// ending in the region's barrier):
//  1. the sweep over full-resolution rows, one pooled cell (its b rows) per task, contiguous
//     runs of cells per thread: U from the unary; M'_t (Mb_t upsampled: along the cell's
//     three pooled rows, two of them left by the cell before, then per row); G_t, from the incoming
//     gradient (t = T) or from Q_t (recomputed at blur > 1; at blur 1 the saved Qb_t itself)
//     and pool^T dQb_t through the softmax Jacobian; dw, dU, dcompat; the adjoint of the
//     upsampling, vertical taps first (along the rows) into three partial rows per cell, then
//     the horizontal taps on those three (block sums as vectors). Without a compat matrix a
//     row is four sweeps over its C x W values, tile by tile (fused_row). G and Q never leave
//     the thread's scratch: no full-resolution buffer but the unary's gradient itself. Stage 0
//     adds the start's term and goes back through the log-softmax in the same sweep. The
//     cell's row of Qb_{t-2} is copied into its haloed buffer on the way.
//  2. (blur > 1) R_t per pooled row: the three partial rows of the cells around it, added in
//     a fixed order.
//  3. per pair of pooled rows, their k*k Gaussians and kernels (computed here at every stage:
//     kept for the whole grid they would be the largest buffer), dQb_{t-1} = A R_t (both rows
//     from one load of R: convcrf_grad_pass.h) and the parameter sums against Qb_{t-1}; the
//     message of t - 1, Mb_{t-1} = A Qb_{t-2}.
// Every partial sum (dw, dcompat per cell, the parameter sums per pooled row) stays in its
// own slot across the stages and the slots are added in a fixed order at the end: the same
// bits on a rerun, whatever thread ran which cell.

#pragma GCC optimize("no-trapping-math")

#include "cpu/convcrf_grad.h"

#include "cpu/convcrf_grad_pass.h"
#include "cpu/convcrf_grad_sweep.h"
#include "cpu/convcrf_workspace.h"
#include "cpu/log_sum.h"

namespace segkit {
namespace cpu {

using namespace gradrows;  // NOLINT: the kernels of this op

namespace {

// Stage t's sweep over pooled cell R (see the top of this file), B bytes of SIMD.
template <int B>
SEGKIT_ALWAYS void sweep_cell(const Ctx& k, int t, int R, BwdScratch& s) {
  const Geo& g = *k.g;
  const ConvCrfGradArgs& a = *k.a;
  const int C = g.C;
  const index_t pooled = static_cast<index_t>(C) * g.HWp;
  int y0, y1;
  crf::pool_span(R, g.p0, g.b, g.H, &y0, &y1);
  double* dw = k.dw_part + static_cast<size_t>(R) * C;
  double* dmu = k.compat ? k.dmu_part + static_cast<size_t>(R) * C * C : nullptr;
  if (t >= 1 && g.b > 1) std::fill(s.e.begin(), s.e.end(), 0.0f);
  if (t < k.T) unpool_cell<B>(k, R, s.dqe.data(), s.mx.data());
  if (k.load != nullptr) halo_row(g, k.load, R, k.into);
  if (t >= 1 && g.b > 1) {  // rows R - 1 and R are there when this thread just swept R - 1
    upsample_rows<B>(g, k.Mb, R, s.me_next == R ? R + 1 : R - 1, s.me.data());
    s.me_next = R + 1;
  }
  for (int i = y0; i < y1; ++i) {
    const index_t row = static_cast<index_t>(i) * g.W;
    if (k.compat == nullptr && t > 0) {
      if (k.im->masked())
        fused_row<B, true>(k, t, i, R, s, dw);
      else  // the mask's products by 1 left out
        fused_row<B, false>(k, t, i, R, s, dw);
      continue;
    }
    if (t == 0 && !start_softmax(a)) {
      start_row_logits<B>(k, i, s);
      continue;
    }
    u_row(k, i, s.u.data());
    if (t == 0) {
      start_row(k, i, s);
      continue;
    }
    message_row(g, *k.im, g.b > 1 ? s.me.data() : k.Mb, k.compat, i, s.m.data(), s.mp.data());
    const float* mp = k.compat ? s.mp.data() : s.m.data();
    if (t == k.T) {  // G_T = dL/dout, through the final softmax if there is one
      for (int c = 0; c < C; ++c)
        std::memcpy(s.gr.data() + static_cast<index_t>(c) * g.W, k.gout + c * g.HW + row,
                    sizeof(float) * g.W);
      if (a.final_softmax) {
        pred_u<B>(k, s.u.data(), mp, s.z.data());
        softmax_row(s.z.data(), C, g.W, g.W, s.mx.data(), s.sum.data());
        std::memcpy(s.dq.data(), s.gr.data(), sizeof(float) * C * g.W);
        jacobian(g, s.z.data(), s.dq.data(), s.sum.data(), s.gr.data());
      }
    } else {  // G_t = Q_t (dQ_t - sum_c Q_t dQ_t)
      if (g.b == 1) {  // Q_t is the saved Qb_t where the mask is set; elsewhere dQ_t = 0
        const float* q = k.Qs + t * pooled + row;
        for (int c = 0; c < C; ++c)
          std::memcpy(s.z.data() + static_cast<index_t>(c) * g.W, q + c * g.HWp,
                      sizeof(float) * g.W);
      } else {  // recomputed: softmax(z_t)
        pred_u<B>(k, s.u.data(), mp, s.z.data());
        softmax_row(s.z.data(), C, g.W, g.W, s.mx.data(), s.sum.data());
      }
      unpool_row(k, i, s.dqe.data(), s.dq.data());
      jacobian(g, s.z.data(), s.dq.data(), s.sum.data(), s.gr.data());
    }
    const float* v = weight_terms<B>(k, t, i, s, dw, dmu);
    adjoint_rows(k, i, R, v, s.e.data());
  }
  if (t >= 1 && g.b > 1) adjoint_cols<B>(g, R, s.e.data(), k.P, k.Rb, s.prod.data());
}

}  // namespace

void convcrf_grad_backward(const float* grad, const float* unary, const float* image,
                           const std::uint8_t* mask, const float* weight, const float* compat,
                           const float* saved, float* d_unary, double* d_weight, double* d_sums,
                           double* d_compat, const ConvCrfGradArgs& a) {
  check_args(a);
  const int C = static_cast<int>(a.c);
  std::fill(d_weight, d_weight + C, 0.0);
  std::fill(d_sums, d_sums + kGradSums, 0.0);
  if (compat != nullptr) std::fill(d_compat, d_compat + static_cast<index_t>(C) * C, 0.0);
  if (a.n == 0 || a.h == 0 || a.w == 0) return;
  const Geo g = make_geo(a);
  const crfgrad::Scales sc = scales_of(a);
  const int T = a.num_iter, threads = max_threads();
  const size_t full = static_cast<size_t>(C) * g.HW, pooled = static_cast<size_t>(C) * g.HWp;
  // The working memory: one block of the CPU ConvCRF's workspace pool (convcrf_workspace.h),
  // the one the forward used and released, kept between calls. Rb and Qh (two haloed pooled
  // Q: Qb_{t-1} and Qb_{t-2} at stage t) need zero halos; every other buffer is written
  // before it is read.
  const size_t haloed = static_cast<size_t>(C) * g.plane;
  const size_t p3 = g.b > 1 ? 2 * pooled : 0;
  crfrows::WorkspacePool::Block block =
      crfrows::pool().acquire(2 * g.HW + 3 * haloed + 2 * pooled + p3);
  struct Release {
    crfrows::WorkspacePool::Block& b;
    ~Release() { crfrows::pool().release(std::move(b)); }
  } release{block};
  float* next = block.data.get();
  auto take = [&](size_t n) { float* p = next; next += n; return p; };
  float *lmx = take(g.HW), *lls = take(g.HW), *Rb = take(haloed), *Qh = take(2 * haloed);
  float *dQb = take(pooled), *Mb = take(pooled), *P = take(p3);
  std::fill(Rb, Rb + 3 * haloed, 0.0f);
  std::vector<BwdScratch> scratch(threads, BwdScratch(g));
  const size_t cc = compat ? static_cast<size_t>(C) * C : 0;
  std::vector<double> dw_part(static_cast<size_t>(g.Hp) * C, 0.0), dmu_part(g.Hp * cc, 0.0),
      sum_part(static_cast<size_t>(g.Hp) * kGradSums, 0.0);
  Image im;
  Ctx k;
  k.g = &g, k.a = &a, k.im = &im, k.weight = weight, k.compat = compat, k.T = T;
  k.lmx = lmx, k.lls = lls, k.Mb = Mb;
  k.Rb = Rb, k.dQb = dQb, k.P = P;
  k.dw_part = dw_part.data(), k.dmu_part = dmu_part.data();
  for (index_t n = 0; n < a.n; ++n) {
    k.x = unary + n * full, k.gout = grad + n * full, k.dU = d_unary + n * full;
    k.Qs = saved + n * T * pooled;
    prepare_image(g, image + n * 3 * g.HW, mask == nullptr ? nullptr : mask + n * g.HW, im);
#pragma omp parallel num_threads(threads)
    {
      BwdScratch& s = scratch[thread_id()];
      float *Gp = s.gp.data(), *Gc = s.gc.data(), *Ga = s.ga.data();
      const index_t ks = static_cast<index_t>(s.gp.size() / 2);  // one row's k*k Gaussians
      const DenormalsAreZero daz;
      float* cur = Qh;  // private: every thread swaps its own pair
      float* oth = Qh + haloed;
      // the per-pixel max and log-sum of the unary's softmax; Qb_{T-1} and Qb_{T-2}, haloed
#pragma omp for schedule(static) nowait
      for (int i = 0; i < g.H; ++i)
        dispatch_isa([&](auto isa) SEGKIT_BODY {
          if (a.unary_kind == crf::UNARY_PROBS) return;
          const index_t row = static_cast<index_t>(i) * g.W;
          log_sum_row<decltype(isa)::bytes, false>(k.x + row, g.HW, g.C, g.W, lmx + row,
                                                   lls + row);
        });
#pragma omp for schedule(static)
      for (int r = 0; r < g.Hp; ++r) {
        halo_row(g, k.Qs + (T - 1) * pooled, r, cur);
        if (T >= 2) halo_row(g, k.Qs + (T - 2) * pooled, r, oth);
      }
      // Mb_T = A Qb_{T-1}; the passes take pooled rows in pairs (pass_block2)
      const int pairs = (g.Hp + 1) / 2;
      auto weights = [&](int r, int n) {
        for (int q = 0; q < n; ++q)  // denormal weights flushed to 0
          weights_row(g, im, sc, a, r + q, Gp + q * ks, Gc + q * ks, Ga + q * ks);
      };
#pragma omp for schedule(guided, 1)
      for (int pr = 0; pr < pairs; ++pr) {
        const int r = 2 * pr, n = std::min(2, g.Hp - r);
        weights(r, n);
        message_pass_rows(g, Ga, ks, cur, Mb, r, n);
      }
      for (int t = T; t >= 0; --t) {
        Ctx kt = k;
        if (t < T && t >= 2) kt.load = k.Qs + (t - 2) * pooled, kt.into = oth;
        s.me_next = -1;  // Mb is new at every stage
// guided: contiguous runs of cells (each reuses two message rows) in halving chunks, whose
// tails balance the threads better than fixed runs of 4 (5-6% faster) at the same bits
#pragma omp for schedule(guided, 2)
        for (int R = 0; R < g.Hp; ++R)
          dispatch_isa([&](auto isa) SEGKIT_BODY {
            sweep_cell<decltype(isa)::bytes>(kt, t, R, s);
          });
        if (t == 0) break;
        if (g.b > 1) {
#pragma omp for schedule(static)
          for (int r = 0; r < g.Hp; ++r)
            dispatch_isa([&](auto) SEGKIT_BODY { finish_r(g, P, r, Rb); });
        }
        // dQb_{t-1} = A R_t, the parameter sums against Qb_{t-1}; Mb_{t-1} = A Qb_{t-2}
#pragma omp for schedule(guided, 1)
        for (int pr = 0; pr < pairs; ++pr) {
          const int r = 2 * pr, n = std::min(2, g.Hp - r);
          double sums[2 * kGradSums];
          weights(r, n);
          pass_rows(g, im, Gp, Gc, Ga, ks, Rb, cur, dQb, r, n, sums);
          double* sp = sum_part.data() + static_cast<size_t>(r) * kGradSums;
          for (int q = 0; q < n * kGradSums; ++q) sp[q] += sums[q];
          if (t >= 2) message_pass_rows(g, Ga, ks, oth, Mb, r, n);
        }
        std::swap(cur, oth);  // every thread, after the loop's barrier
      }
    }
  }
  for (int R = 0; R < g.Hp; ++R) {
    for (int c = 0; c < C; ++c) d_weight[c] += dw_part[static_cast<size_t>(R) * C + c];
    for (size_t q = 0; q < cc; ++q) d_compat[q] += dmu_part[R * cc + q];
  }
  for (int r = 0; r < g.Hp; ++r)
    for (int q = 0; q < kGradSums; ++q) d_sums[q] += sum_part[r * kGradSums + q];
}

}  // namespace cpu
}  // namespace segkit
