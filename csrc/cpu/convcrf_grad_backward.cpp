// CPU trainable ConvCRF: the fused backward (GUIDE section 3, "The trainable ConvCRF"; the
// memory plan and the determinism rules are in convcrf_grad.cpp's header comment). It
// recomputes from the unary and the saved pooled messages what it needs, one image at a time,
// OpenMP over rows, sums over pixels in per-row(-block) partials added in a fixed order.

#pragma GCC optimize("no-trapping-math")

#include "cpu/convcrf_grad.h"

#include "cpu/convcrf_grad_rows.h"

namespace segkit {
namespace cpu {

using namespace gradrows;  // NOLINT: the kernels of this op

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
  std::vector<float> U(full), G(full), Qp(full), Tcol(g.b > 1 ? static_cast<size_t>(C) * g.H * g.Wp : 0),
      Rb(static_cast<size_t>(C) * g.plane), Qb(Rb.size()), dQb(pooled);
  std::vector<RowScratch> rs(threads, RowScratch(g));
  const int nblocks = (g.H + kRowBlock - 1) / kRowBlock;
  const size_t cc = compat ? static_cast<size_t>(C) * C : 0;
  std::vector<double> dw_part(static_cast<size_t>(nblocks) * C), dmu_part(nblocks * cc),
      sum_part(static_cast<size_t>(g.Hp) * kGradSums);
  const size_t kk = static_cast<size_t>(a.filter_size) * a.filter_size * g.Hp * g.ldg;
  std::vector<float> Gp(kk), Gc(kk);
  const size_t me = g.b > 1 ? static_cast<size_t>(C) * g.Hp * g.W : 0;
  std::vector<float> MeA(me), MeB(me);
  Image im;
  for (index_t n = 0; n < a.n; ++n) {
    const float* x = unary + n * full;
    const float* gout = grad + n * full;
    float* dU = d_unary + n * full;
    const float* Ms = saved + n * T * pooled;
    prepare_image(g, image + n * 3 * g.HW, mask == nullptr ? nullptr : mask + n * g.HW, im);
    weights_image(g, im, sc, Gp.data(), Gc.data());
#pragma omp parallel for schedule(dynamic, 4) num_threads(max_threads())
    for (int i = 0; i < g.H; ++i) {
      dispatch_isa([&](auto) SEGKIT_BODY {
        RowScratch& s = rs[thread_id()];
        const index_t row = static_cast<index_t>(i) * g.W;
        unary_row(g, a.unary_kind, x + row, U.data() + row, s.mx.data(), s.sum.data());
      });
    }
    float* me_cur = MeA.data();
    float* me_prev = MeB.data();
    for (int t = T; t >= 1; --t) {
      const float* Mb = Ms + (t - 1) * pooled;
      const float* Mprev = t >= 2 ? Ms + (t - 2) * pooled : nullptr;
      if (g.b > 1) {  // row-upsampled messages of t (first time only) and t - 1
#pragma omp parallel for schedule(dynamic, 4) num_threads(max_threads())
        for (int r = 0; r < g.Hp; ++r)
          dispatch_isa([&](auto) SEGKIT_BODY {
            if (t == T) upsample_row(g, Mb, r, me_cur);
            if (Mprev != nullptr) upsample_row(g, Mprev, r, me_prev);
          });
        Mb = me_cur;
        if (Mprev != nullptr) Mprev = me_prev;
      }
      // A: per block of full-resolution rows: G_t, dw, dU, dcompat, the column adjoint of the
      // upsampling (into Tcol), and Q_{t-1} (into Qp)
#pragma omp parallel for schedule(dynamic, 1) num_threads(max_threads())
      for (int blk = 0; blk < nblocks; ++blk) {
        dispatch_isa([&](auto) SEGKIT_BODY {
          RowScratch& s = rs[thread_id()];
          double* dw = dw_part.data() + static_cast<size_t>(blk) * C;
          double* dmu = dmu_part.data() + blk * cc;
          std::fill(dw, dw + C, 0.0);
          std::fill(dmu, dmu + cc, 0.0);
          for (int i = blk * kRowBlock; i < std::min(g.H, (blk + 1) * kRowBlock); ++i) {
            const index_t row = static_cast<index_t>(i) * g.W;
            message_row(g, im, Mb, compat, i, s.m.data(), s.mp.data());
            const float* mp = compat ? s.mp.data() : s.m.data();
            float* Gi = G.data() + row;  // C rows HW apart
            if (t == T) {
              for (int c = 0; c < C; ++c)
                std::memcpy(Gi + c * g.HW, gout + c * g.HW + row, sizeof(float) * g.W);
              if (a.final_softmax) {  // G = Q (g - sum_c Q g), Q = softmax(z_T)
                pred_row(g, a, weight, U.data(), i, mp, s.z.data());
                softmax_row(s.z.data(), C, g.W, g.W, s.mx.data(), s.sum.data());
                float* dot = s.sum.data();
                for (int j = 0; j < g.W; ++j) dot[j] = 0.0f;
                for (int c = 0; c < C; ++c)
                  for (int j = 0; j < g.W; ++j) dot[j] += s.z[c * g.W + j] * Gi[c * g.HW + j];
                for (int c = 0; c < C; ++c)
                  for (int j = 0; j < g.W; ++j)
                    Gi[c * g.HW + j] = s.z[c * g.W + j] * (Gi[c * g.HW + j] - dot[j]);
              }
            }
            for (int c = 0; c < C; ++c) {
              const float w = weight[c], au = a.unary_weight - w;
              const float* gc = Gi + c * g.HW;
              const float* uc = U.data() + c * g.HW + row;
              const float* mc = mp + static_cast<index_t>(c) * g.W;
              float* du = dU + c * g.HW + row;
              float* hc = s.h.data() + static_cast<index_t>(c) * g.W;
              float acc = 0.0f;
              for (int j = 0; j < g.W; ++j) {
                acc += gc[j] * (mc[j] - uc[j]);
                du[j] = (t == T ? 0.0f : du[j]) + au * gc[j];
                hc[j] = w * gc[j];
              }
              dw[c] += acc;
            }
            // dM = (H + compat^T H) * mask, into s.mp (the message itself stays in s.m)
            float* dm = s.mp.data();
            if (compat != nullptr) {
              for (int c = 0; c < C; ++c)
                for (int d = 0; d < C; ++d) {
                  const float* hc = s.h.data() + static_cast<index_t>(c) * g.W;
                  const float* md = s.m.data() + static_cast<index_t>(d) * g.W;
                  float acc = 0.0f;
                  for (int j = 0; j < g.W; ++j) acc += hc[j] * md[j];
                  dmu[static_cast<size_t>(c) * C + d] += acc;
                }
              for (int d = 0; d < C; ++d) {
                float* o = dm + static_cast<index_t>(d) * g.W;
                std::memcpy(o, s.h.data() + static_cast<index_t>(d) * g.W, sizeof(float) * g.W);
                for (int c = 0; c < C; ++c) {
                  const float k = compat[c * C + d];
                  const float* hc = s.h.data() + static_cast<index_t>(c) * g.W;
                  for (int j = 0; j < g.W; ++j) o[j] += k * hc[j];
                }
              }
            } else {
              std::memcpy(dm, s.h.data(), sizeof(float) * C * g.W);
            }
            const float* fm = im.fmask.data() + row;
            for (int c = 0; c < C; ++c) {
              const float* d = dm + static_cast<index_t>(c) * g.W;
              if (g.b == 1) {  // no taps: straight into R (pooled row i)
                float* rr = Rb.data() + c * g.plane + g.at(i, 0);
                for (int j = 0; j < g.W; ++j) rr[j] = d[j] * fm[j];
                continue;
              }
              // the column adjoint, gathered per pooled column (no store-to-load chain)
              float* __restrict v = s.z.data();
              for (int j = 0; j < g.W; ++j) v[j] = d[j] * fm[j];
              float* tc = Tcol.data() + (static_cast<index_t>(c) * g.H + i) * g.Wp;
              const int* cj = g.col_j.data();
              const float* cw = g.col_w.data();
              for (int X = 0; X < g.Wp; ++X) {
                float acc = 0.0f;
                for (int k = g.col_at[X]; k < g.col_at[X + 1]; ++k) acc += cw[k] * v[cj[k]];
                tc[X] = acc;
              }
            }
            // Q_{t-1}
            float* q = Qp.data() + row;
            if (Mprev != nullptr) {
              message_row(g, im, Mprev, compat, i, s.m.data(), s.mp.data());
              pred_row(g, a, weight, U.data(), i, compat ? s.mp.data() : s.m.data(), s.z.data());
              for (int c = 0; c < C; ++c)
                std::memcpy(q + c * g.HW, s.z.data() + static_cast<index_t>(c) * g.W,
                            sizeof(float) * g.W);
            } else {
              for (int c = 0; c < C; ++c)
                std::memcpy(q + c * g.HW, U.data() + c * g.HW + row, sizeof(float) * g.W);
            }
            if (Mprev != nullptr || start_softmax(a))
              softmax_row(q, C, g.HW, g.W, s.mx.data(), s.sum.data());
          }
        });
      }
      for (int blk = 0; blk < nblocks; ++blk) {
        for (int c = 0; c < C; ++c) d_weight[c] += dw_part[static_cast<size_t>(blk) * C + c];
        for (size_t k = 0; k < cc; ++k) d_compat[k] += dmu_part[blk * cc + k];
      }
      // B: the row adjoint of the upsampling (R) and Qb_{t-1}, per pooled row
#pragma omp parallel for schedule(dynamic, 4) num_threads(max_threads())
      for (int r = 0; r < g.Hp; ++r) {
        dispatch_isa([&](auto) SEGKIT_BODY {
          for (int c = 0; c < C && g.b > 1; ++c) {  // (blur 1: phase A wrote R)
            float* o = Rb.data() + c * g.plane + g.at(r, 0);
            for (int X = 0; X < g.Wp; ++X) o[X] = 0.0f;
            for (const auto& e : g.rows_of[r]) {
              const float* tc = Tcol.data() + (static_cast<index_t>(c) * g.H + e.first) * g.Wp;
              for (int X = 0; X < g.Wp; ++X) o[X] += e.second * tc[X];
            }
          }
          pool_rows(g, im, Qp.data(), r, Qb.data());
        });
      }
      // C: dQb = A R and the parameter sums
#pragma omp parallel for schedule(dynamic, 2) num_threads(max_threads())
      for (int r = 0; r < g.Hp; ++r)
        pass_row(g, im, a, Gp.data(), Gc.data(), Rb.data(), Qb.data(), dQb.data(), r,
                 sum_part.data() + static_cast<size_t>(r) * kGradSums);
      for (int r = 0; r < g.Hp; ++r)
        for (int k = 0; k < kGradSums; ++k) d_sums[k] += sum_part[r * kGradSums + k];
      // D: dQ = pool^T dQb, then G_{t-1} (softmax Jacobian) or the start's term into dU
      const bool start_is_u = !start_softmax(a);
#pragma omp parallel for schedule(dynamic, 4) num_threads(max_threads())
      for (int i = 0; i < g.H; ++i) {
        dispatch_isa([&](auto) SEGKIT_BODY {
          RowScratch& s = rs[thread_id()];
          const index_t row = static_cast<index_t>(i) * g.W;
          const int R = (i + g.p0) / g.b;
          const float* fm = im.fmask.data() + row;
          const float* ic = im.inv_count.data() + static_cast<index_t>(R) * g.Wp;
          float* __restrict dq = s.h.data();
          for (int c = 0; c < C; ++c) {
            const float* src = dQb.data() + c * g.HWp + static_cast<index_t>(R) * g.Wp;
            float* __restrict o = dq + static_cast<index_t>(c) * g.W;
            if (g.b == 1) {
              for (int j = 0; j < g.W; ++j) o[j] = src[j] * ic[j] * fm[j];
              continue;
            }
            for (int X = 0; X < g.Wp; ++X) {  // the cell's value, spread over its columns
              const float e = src[X] * ic[X];
              for (int j = g.cx0[X]; j < g.cx1[X]; ++j) o[j] = e * fm[j];
            }
          }
          if (t == 1 && start_is_u) {
            for (int c = 0; c < C; ++c) {
              float* __restrict du = dU + c * g.HW + row;
              const float* __restrict o = dq + static_cast<index_t>(c) * g.W;
              for (int j = 0; j < g.W; ++j) du[j] += o[j];
            }
            return;
          }
          const float* __restrict q = Qp.data() + row;
          float* __restrict dot = s.sum.data();
          for (int j = 0; j < g.W; ++j) dot[j] = 0.0f;
          for (int c = 0; c < C; ++c) {
            const float* __restrict qc = q + c * g.HW;
            const float* __restrict dc = dq + static_cast<index_t>(c) * g.W;
            for (int j = 0; j < g.W; ++j) dot[j] += qc[j] * dc[j];
          }
          for (int c = 0; c < C; ++c) {
            const float* __restrict qc = q + c * g.HW;
            const float* __restrict dc = dq + static_cast<index_t>(c) * g.W;
            float* __restrict dst = (t == 1 ? dU : G.data()) + c * g.HW + row;
            if (t == 1)
              for (int j = 0; j < g.W; ++j) dst[j] += qc[j] * (dc[j] - dot[j]);
            else
              for (int j = 0; j < g.W; ++j) dst[j] = qc[j] * (dc[j] - dot[j]);
          }
        });
      }
      std::swap(me_cur, me_prev);
    }
    // through U = log_softmax(x) (dx = dU - softmax(x) sum_c dU) or log(x) (dx = dU / x)
#pragma omp parallel for schedule(dynamic, 4) num_threads(max_threads())
    for (int i = 0; i < g.H; ++i) {
      dispatch_isa([&](auto) SEGKIT_BODY {
        RowScratch& s = rs[thread_id()];
        const index_t row = static_cast<index_t>(i) * g.W;
        float* du = dU + row;
        if (a.unary_kind == crf::UNARY_PROBS) {
          for (int c = 0; c < C; ++c)
            for (int j = 0; j < g.W; ++j) du[c * g.HW + j] /= x[c * g.HW + row + j];
          return;
        }
        float* tot = s.sum.data();
        for (int j = 0; j < g.W; ++j) tot[j] = 0.0f;
        for (int c = 0; c < C; ++c)
          for (int j = 0; j < g.W; ++j) tot[j] += du[c * g.HW + j];
        for (int c = 0; c < C; ++c)
          for (int j = 0; j < g.W; ++j)
            du[c * g.HW + j] -= crf::exp_f32(U[c * g.HW + row + j]) * tot[j];
      });
    }
  }
}

}  // namespace cpu
}  // namespace segkit
