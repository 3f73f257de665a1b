// CPU ConvCRF row kernels of the message: the Gaussian weights of a pooled row and the
// message of every class along it, written once over the vector width B (cpu/simd.h compiles
// them per instruction set). Included by convcrf_rows.cpp only.
#pragma once
#include <algorithm>
#include <cstring>

#include "cpu/convcrf_plan.h"
#include "cpu/simd.h"

namespace segkit {
namespace cpu {
namespace crfrows {

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
    if (!pl.general) continue;
    // zero unless both cells are valid (an invalid cell also has Q = 0, so K(p, p) needs none)
    const float* vp = cx.valid + static_cast<index_t>(R) * pl.Wp;
    const float* vq = cx.valid + static_cast<index_t>(R + ey) * pl.Wp + ex;
    for (int x = xs; x < xe; ++x) kp[x] *= vp[x] * vq[x];
  }
}

// Message of CB classes along one pooled row: out[cb][x] = sum_d K(p, p+d) Q_cb(p+d) for x in
// [0, nx) rounded up to whole vectors. `q` points at the first class's plane, `base` at the
// row's first pixel inside the halo; `pf_row` >= 0: Q is prefetched that far below p.
template <int B, int CB>
SEGKIT_ALWAYS void message_block(const float* __restrict q, index_t plane,
                                 const float* __restrict K, const index_t* __restrict koff,
                                 int nh, index_t base, int nx, float kc,
                                 float* __restrict out, index_t out_ld, index_t pf_row) {
  typedef vec_t<float, B> V;
  constexpr int L = Vec<float, B>::lanes;
  const V vkc = V{} + kc;
  for (int x0 = 0; x0 < nx; x0 += L) {
    const index_t p = base + x0;
    V acc[CB];
#pragma GCC unroll 12
    for (int c = 0; c < CB; ++c) acc[c] = vkc * loadv<V>(q + c * plane + p);
    // pf_row >= 0 (blur 1, Q from the last-level cache): the Q row that enters the window with
    // this row (the others came with the rows above), one stream per class, which with the
    // weights' are too many for the hardware prefetcher
    if (pf_row >= 0)
#pragma GCC unroll 12
      for (int c = 0; c < CB; ++c) __builtin_prefetch(q + c * plane + p + pf_row + kPrefetch);
    for (int j = 0; j < nh; ++j) {
      const index_t o = koff[j];
      const float* kj = K + j * plane + p;
      // the weights stream from nh planes at once, too many for the hardware prefetcher
      __builtin_prefetch(kj + kPrefetch);
      __builtin_prefetch(kj - o + kPrefetch);
      const V w1 = loadv<V>(kj);      // K(p, p+e)
      const V w2 = loadv<V>(kj - o);  // K(p-e, p) = K(p, p-e)
#pragma GCC unroll 12
      for (int c = 0; c < CB; ++c) {
        const float* qc = q + c * plane + p;
        acc[c] += w1 * loadv<V>(qc + o);
        acc[c] += w2 * loadv<V>(qc - o);
      }
    }
#pragma GCC unroll 12
    for (int c = 0; c < CB; ++c) storev(out + c * out_ld + x0, acc[c]);
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
    static_assert(kMaxBlock == 12, "the class blocks below go up to kMaxBlock");
    dispatch_exact<1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12>(cb, [&](auto n) SEGKIT_BODY {
      message_block<B, decltype(n)::value>(q, pl.plane, cx.K, pl.koff.data(), pl.nh, base, pl.Wp,
                                           pl.kc, o, pl.ldw, pl.b == 1 ? pl.s * pl.ld : -1);
    });
    c0 += cb;
  }
}

// After the message of pooled row r (C rows of `M`, stride ldw): the copy of row r of the
// pooled Q it was computed from into `saved` (the trainable backward's input: Qb_t, from which
// the backward recomputes the message) and, with a compatibility matrix, M' = M + compat M into
// `tmp` (C rows of ldw, zero past Wp). Returns the message the update reads.
SEGKIT_ALWAYS const float* message_extras(const Ctx& cx, int r, const float* M, float* tmp) {
  const Plan& pl = *cx.pl;
  if (cx.saved != nullptr) {
    const index_t row = (pl.s + r) * pl.ld + pl.s;
    for (int c = 0; c < pl.C; ++c)
      std::memcpy(cx.saved + c * pl.fstride + static_cast<index_t>(r) * pl.Wp,
                  cx.qcur + c * pl.plane + row, sizeof(float) * pl.Wp);
  }
  const float* mu = cx.a->compat;
  if (mu == nullptr) return M;
  for (int c = 0; c < pl.C; ++c) {
    float* __restrict o = tmp + c * pl.ldw;
    std::memcpy(o, M + c * pl.ldw, sizeof(float) * pl.Wp);
    for (int d = 0; d < pl.C; ++d) {
      const float k = mu[c * pl.C + d];
      const float* __restrict md = M + d * pl.ldw;
      for (int x = 0; x < pl.Wp; ++x) o[x] += k * md[x];
    }
    for (index_t x = pl.Wp; x < pl.ldw; ++x) o[x] = 0.0f;
  }
  return tmp;
}

}  // namespace crfrows
}  // namespace cpu
}  // namespace segkit
