// CPU trainable ConvCRF: forward keeping the pooled message of every iteration, and the fused
// backward (GUIDE section 3, "The trainable ConvCRF"). OpenMP over rows; the inner loops run
// along a row (contiguous) so that the compiler vectorises them.
//
// Memory. The forward keeps per iteration only the pooled message Mb_t (C*Hp*Wp floats: C*H*W
// at blur 1, C*H*W/b^2 at blur b). The backward recomputes from the unary and Mb_{t-1} what
// it needs: U, Q_{t-1} = softmax(a U + w M'_{t-1}) (full resolution, for the softmax Jacobian
// and the pooled Qb_{t-1}) and M'_t. Working memory, for one image at a time: U, G, Q_{t-1}
// (3 C*H*W), the column adjoint of the upsampling (C*H*W/b, blur > 1 only), a few pooled
// C*Hp*Wp planes, and the Gaussian planes Gp, Gc of the image (2 k*k Hp*Wp floats, computed
// once per image and shared by every class, iteration and pass). No (C, k*k, ...) tensor.
//
// Determinism: every output element is written by one thread; sums over pixels go into
// per-row (or per-block-of-rows) partials in double, added in a fixed order afterwards.
//
// This file: the forward and the pooled grid size; the backward is convcrf_grad_backward.cpp,
// the geometry and the row kernels both share are convcrf_grad_plan.h and convcrf_grad_rows.h.

#pragma GCC optimize("no-trapping-math")

#include "cpu/convcrf_grad.h"

#include "cpu/convcrf_grad_rows.h"

namespace segkit {
namespace cpu {

using namespace gradrows;  // NOLINT: the kernels of this op

void convcrf_grad_pooled(const ConvCrfGradArgs& a, index_t* hp, index_t* wp) {
  int h, w, p;
  crf::pool_geometry(static_cast<int>(a.h), a.blur, &h, &p);
  crf::pool_geometry(static_cast<int>(a.w), a.blur, &w, &p);
  *hp = h;
  *wp = w;
}

void convcrf_grad_forward(const float* unary, const float* image, const std::uint8_t* mask,
                          const float* weight, const float* compat, float* out, float* saved,
                          const ConvCrfGradArgs& a) {
  check_args(a);
  if (a.n == 0 || a.h == 0 || a.w == 0) return;
  const Geo g = make_geo(a);
  const crfgrad::Scales sc = scales_of(a);
  const int T = a.num_iter, threads = max_threads();
  std::vector<float> U(static_cast<size_t>(g.C) * g.HW), Qb(static_cast<size_t>(g.C) * g.plane);
  std::vector<RowScratch> rs(threads, RowScratch(g));
  const size_t kk = static_cast<size_t>(a.filter_size) * a.filter_size * g.Hp * g.ldg;
  std::vector<float> Gp(kk), Gc(kk);
  std::vector<float> Me(g.b > 1 ? static_cast<size_t>(g.C) * g.Hp * g.W : 0);
  // saved == nullptr (inference): one pooled message, reused by every iteration and image
  std::vector<float> Mscratch(saved == nullptr ? static_cast<size_t>(g.C) * g.HWp : 0);
  Image im;
  for (index_t n = 0; n < a.n; ++n) {
    const float* x = unary + n * g.C * g.HW;
    float* o = out + n * g.C * g.HW;
    prepare_image(g, image + n * 3 * g.HW, mask == nullptr ? nullptr : mask + n * g.HW, im);
    weights_image(g, im, sc, Gp.data(), Gc.data());
    // U, and Q_0 (in z) pooled into Qb
#pragma omp parallel for schedule(dynamic, 2) num_threads(max_threads())
    for (int R = 0; R < g.Hp; ++R) {
      dispatch_isa([&](auto) SEGKIT_BODY {
        RowScratch& s = rs[thread_id()];
        int y0, y1;
        crf::pool_span(R, g.p0, g.b, g.H, &y0, &y1);
        for (int i = y0; i < y1; ++i) {
          const index_t row = static_cast<index_t>(i) * g.W;
          unary_row(g, a.unary_kind, x + row, U.data() + row, s.mx.data(), s.sum.data());
          if (start_softmax(a)) {
            for (int c = 0; c < g.C; ++c)
              std::memcpy(o + c * g.HW + row, U.data() + c * g.HW + row, sizeof(float) * g.W);
            softmax_row(o + row, g.C, g.HW, g.W, s.mx.data(), s.sum.data());
          }
        }
        pool_rows(g, im, start_softmax(a) ? o : U.data(), R, Qb.data());
      });
    }
    for (int t = 0; t < T; ++t) {
      const bool last = t == T - 1;
      float* Mb = saved != nullptr ? saved + (n * T + t) * g.C * g.HWp : Mscratch.data();
#pragma omp parallel for schedule(dynamic, 2) num_threads(max_threads())
      for (int r = 0; r < g.Hp; ++r) {
        pass_row(g, im, a, Gp.data(), Gc.data(), Qb.data(), nullptr, Mb, r, nullptr);
        if (g.b > 1) dispatch_isa([&](auto) SEGKIT_BODY { upsample_row(g, Mb, r, Me.data()); });
      }
      const float* Mup = g.b > 1 ? Me.data() : Mb;
      // full resolution: z, softmax, pooled into Qb (or the output); `o` is scratch until last
#pragma omp parallel for schedule(dynamic, 2) num_threads(max_threads())
      for (int R = 0; R < g.Hp; ++R) {
        dispatch_isa([&](auto) SEGKIT_BODY {
          RowScratch& s = rs[thread_id()];
          int y0, y1;
          crf::pool_span(R, g.p0, g.b, g.H, &y0, &y1);
          for (int i = y0; i < y1; ++i) {
            message_row(g, im, Mup, compat, i, s.m.data(), s.mp.data());
            pred_row(g, a, weight, U.data(), i, compat ? s.mp.data() : s.m.data(), s.z.data());
            if (!last || a.final_softmax) softmax_row(s.z.data(), g.C, g.W, g.W, s.mx.data(),
                                                      s.sum.data());
            for (int c = 0; c < g.C; ++c)
              std::memcpy(o + c * g.HW + static_cast<index_t>(i) * g.W,
                          s.z.data() + static_cast<index_t>(c) * g.W, sizeof(float) * g.W);
          }
          if (!last) pool_rows(g, im, o, R, Qb.data());
        });
      }
    }
  }
}

}  // namespace cpu
}  // namespace segkit
