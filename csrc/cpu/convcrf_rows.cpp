// CPU ConvCRF row kernels: U, the update (pred, softmax) and the pooling into the next Q, in
// two forms (the row resampling, pool_row and upsample_row, is in convcrf_update.h): every
// class of a vector of pixels at once (C <= kMaxRegClasses, blocks of 4, 8, 12, 16 classes in
// registers, 24 or 32 in a small array that stays in L1: one pass per vector instead of about
// six over rows of C x W) and rows of classes in per-thread buffers (more classes). The bodies are
// written once over the vector width B; the entry points at the end compile them once per
// instruction set through cpu/simd.h's dispatch.

// Lets GCC if-convert the float selects of exp/log (and so vectorise them) on baseline SSE2;
// segkit never unmasks floating-point exceptions.
#pragma GCC optimize("no-trapping-math")

#include <cstring>
#include <limits>

#include "common/convcrf.h"
#include "cpu/convcrf_message.h"
#include "cpu/convcrf_plan.h"
#include "cpu/convcrf_update.h"
#include "cpu/log_sum.h"
#include "cpu/simd.h"

namespace segkit {
namespace cpu {
namespace crfrows {
namespace {

// U in place for full-resolution row i: log_softmax over classes (LOGITS) or log (PROBS).
// Returns false when the call checks the unary (ConvCrfArgs::unary_bad) and the row holds a
// value it refuses: one that is not finite or, for PROBS, not > 0 (log_sum.h checks logits in
// the pass that reads every value anyway).
template <int B>
SEGKIT_ALWAYS bool unary_row_body(const Ctx& cx, int i, const Scratch& sc) {
  const Plan& pl = *cx.pl;
  // the unary: read in place, or from its own array (then v only receives U); every loop
  // reads and writes element by element, so in == v is safe (no __restrict on either)
  float* v = cx.scores + static_cast<index_t>(i) * pl.W;
  const float* in = cx.unary != nullptr ? cx.unary + static_cast<index_t>(i) * pl.W : v;
  const index_t HW = pl.HW;
  const int W = pl.W, C = pl.C;
  const bool check = cx.a->unary_bad != nullptr;
  bool ok = true;
  if (cx.a->unary_kind == crf::UNARY_PROBS) {
    if (check) {
      float* __restrict chk = sc.P;  // W floats, free until the update
      const float big = std::numeric_limits<float>::max();
      const float nan = std::numeric_limits<float>::quiet_NaN();
      for (int x = 0; x < W; ++x) chk[x] = 0.0f;
      for (int c = 0; c < C; ++c)
        for (int x = 0; x < W; ++x) {  // NaN fails both tests
          const float z = in[c * HW + x];
          chk[x] += z > 0.0f && z <= big ? 0.0f : nan;
        }
      for (int x = 0; x < W; ++x) ok = ok && chk[x] == 0.0f;
    }
    for (int c = 0; c < C; ++c)
      for (int x = 0; x < W; ++x) v[c * HW + x] = crf::log_f32(in[c * HW + x]);
    return ok;
  }
  float* __restrict mx = sc.mx;
  float* __restrict sum = sc.sum;
  ok = check ? log_sum_row<B, true>(in, HW, C, W, mx, sum)
             : log_sum_row<B, false>(in, HW, C, W, mx, sum);
  for (int c = 0; c < C; ++c)
    for (int x = 0; x < W; ++x) v[c * HW + x] = (in[c * HW + x] - mx[x]) - sum[x];
  return ok;
}

// P = U (MODE_INIT) or a * U + w * M (MODE_ITER) for full-resolution row i; the general
// path: a_c * U + w_c * (M * mask).
template <bool G>
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
    if (mode == MODE_ITER && G) {
      const float* __restrict m = M + c * ldw;
      const float* __restrict fm = cx.fm + static_cast<index_t>(i) * ldw;
      const float ac = pl.ua[c], wc = pl.wa[c];
      for (int x = 0; x < W; ++x) p[x] = ac * u[x] + wc * (m[x] * fm[x]);
    } else if (mode == MODE_ITER) {
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

template <int B, int CM, bool G>
SEGKIT_ALWAYS void rows_blur1_regs(const Ctx& cx, int r, const Scratch& sc, int mode,
                                   bool last) {
  typedef vec_t<float, B> V;
  const Plan& pl = *cx.pl;
  const bool iterate = mode == MODE_ITER;
  const float* M = sc.M;
  if (iterate) {
    message_row_body<B>(cx, r, sc.M);
    M = message_extras(cx, r, sc.M, sc.A);
  }
  const float a = cx.a->unary_coef, w = cx.a->message_coef;
  float* U = cx.scores + static_cast<index_t>(r) * pl.W;
  const index_t ldw = pl.ldw, HW = pl.HW, plane = pl.plane;
  const float* fm = G ? cx.fm + static_cast<index_t>(r) * ldw : nullptr;
  const bool to_q = !(iterate && last);
  float* dst = to_q ? cx.qnext + (pl.s + r) * pl.ld + pl.s : U;
  const index_t dstride = to_q ? plane : HW;
  auto put = [&](int c, V v, int x0, int n) {
    if (G && to_q) v *= loadv<V>(fm + x0);  // Q of an invalid pixel: 0
    store_lanes(dst + c * dstride + x0, v, n);
  };
  const bool soft = softmax_after(*cx.a, mode, last);
  if (iterate && G)
    update_row_blocks<B, CM>(
        pl, U, soft,
        [&](int c, V u, int x0) {
          return pl.ua[c] * u + pl.wa[c] * (loadv<V>(M + c * ldw + x0) * loadv<V>(fm + x0));
        },
        put);
  else if (iterate)
    update_row_blocks<B, CM>(
        pl, U, soft, [&](int c, V u, int x0) { return a * u + w * loadv<V>(M + c * ldw + x0); },
        put);
  else
    update_row_blocks<B, CM>(pl, U, soft, [&](int, V u, int) { return u; }, put);
}

template <int B, int CM, bool G>
SEGKIT_ALWAYS void update_blur_regs(const Ctx& cx, int R, const Scratch& sc, int mode,
                                    bool last) {
  typedef vec_t<float, B> V;
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
    const float* fm = G ? cx.fm + static_cast<index_t>(i) * ldw : nullptr;
    auto put = [&](int c, V v, int x0, int n) {
      if (pool) {
        float* p = A + c * ldw + x0;  // rows padded to whole vectors
        if (G)
          storev(p, loadv<V>(p) + v * loadv<V>(fm + x0));
        else
          storev(p, loadv<V>(p) + v);
      } else {
        store_lanes(U + c * HW + x0, v, n);
      }
    };
    if (iterate) {
      int r0, r1;
      float h0, h1;
      crf::bilinear_taps(i, pl.p0, pl.b, pl.Hp, &r0, &r1, &h0, &h1);
      const float* e0 = cx.Me + static_cast<index_t>(r0) * ldw;
      const float* e1 = cx.Me + static_cast<index_t>(r1) * ldw;
      const index_t cs = static_cast<index_t>(pl.Hp) * ldw;
      if (G)
        update_row_blocks<B, CM>(
            pl, U, soft,
            [&](int c, V u, int x0) {
              const V m = h0 * loadv<V>(e0 + c * cs + x0) + h1 * loadv<V>(e1 + c * cs + x0);
              return pl.ua[c] * u + pl.wa[c] * (m * loadv<V>(fm + x0));
            },
            put);
      else
        update_row_blocks<B, CM>(
            pl, U, soft,
            [&](int c, V u, int x0) {
              return a * u + w * (h0 * loadv<V>(e0 + c * cs + x0) + h1 * loadv<V>(e1 + c * cs + x0));
            },
            put);
    } else {
      update_row_blocks<B, CM>(pl, U, soft, [&](int, V u, int) { return u; }, put);
    }
  }
  if (pool) pool_row<B, G>(cx, R, y1 - y0, A);
}

// blur 1, row r: (message,) update, softmax; into the next Q or, last, into the scores.
template <int B, bool G>
SEGKIT_ALWAYS void rows_blur1_body(const Ctx& cx, int r, const Scratch& sc, int mode,
                                   bool last) {
  const Plan& pl = *cx.pl;
  const float* M = sc.M;
  if (mode == MODE_ITER) {
    message_row_body<B>(cx, r, sc.M);
    M = message_extras(cx, r, sc.M, sc.A);
  }
  pred_row_body<G>(cx, r, M, sc.P, mode);
  if (softmax_after(*cx.a, mode, last)) softmax_rows_body(pl, sc.P, sc);
  if (mode == MODE_ITER && last) {
    store_scores_row(cx, r, sc.P);
    return;
  }
  for (int c = 0; c < pl.C; ++c) {
    float* __restrict q = cx.qnext + c * pl.plane + (pl.s + r) * pl.ld + pl.s;
    const float* __restrict p = sc.P + c * pl.ldw;
    if (G) {
      const float* __restrict fm = cx.fm + static_cast<index_t>(r) * pl.ldw;
      for (int x = 0; x < pl.W; ++x) q[x] = p[x] * fm[x];
    } else {
      std::memcpy(q, p, sizeof(float) * pl.W);
    }
  }
}

// blur b, pooled row R: the message, then upsampled along the row into Me.
template <int B>
SEGKIT_ALWAYS void message_blur_body(const Ctx& cx, int R, const Scratch& sc) {
  const Plan& pl = *cx.pl;
  message_row_body<B>(cx, R, sc.M);
  const float* M = message_extras(cx, R, sc.M, sc.P);
  for (int c = 0; c < pl.C; ++c)
    upsample_row<B>(pl, M + c * pl.ldw, cx.Me + (static_cast<index_t>(c) * pl.Hp + R) * pl.ldw);
}

// blur b, pooled row R: for each of its full-resolution rows, the vertical interpolation of
// the message, update and softmax; then the b x b means into the next pooled Q (or, last,
// the rows into the scores).
template <int B, bool G>
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
    pred_row_body<G>(cx, i, sc.M, sc.P, mode);
    if (softmax_after(*cx.a, mode, last)) softmax_rows_body(pl, sc.P, sc);
    if (!pool) {
      store_scores_row(cx, i, sc.P);
      continue;
    }
    const float* __restrict fm = G ? cx.fm + static_cast<index_t>(i) * ldw : nullptr;
    for (int c = 0; c < C; ++c) {
      float* __restrict acc = sc.A + c * ldw;
      const float* __restrict p = sc.P + c * ldw;
      if (G)
        for (int x = 0; x < W; ++x) acc[x] += p[x] * fm[x];
      else
        for (int x = 0; x < W; ++x) acc[x] += p[x];
    }
  }
  if (pool) pool_row<B, G>(cx, R, y1 - y0, sc.A);
}

}  // namespace

// ---- entry points: one dispatch each over the instruction set and the class block ----------

void weights_row(const Ctx& cx, int R) {
  dispatch_isa([&](auto) SEGKIT_BODY {
    if (cx.pl->ncol == 3)
      weights_row_body<3>(cx, R);
    else
      weights_row_body<5>(cx, R);
  });
}

bool unary_row(const Ctx& cx, int i, const Scratch& sc) {
  bool ok = true;
  dispatch_isa([&](auto isa) SEGKIT_BODY {
    ok = unary_row_body<decltype(isa)::bytes>(cx, i, sc);
  });
  return ok;
}

void rows_blur1(const Ctx& cx, int r, const Scratch& sc, int mode, bool last) {
  dispatch_isa([&](auto isa) SEGKIT_BODY {
    constexpr int B = decltype(isa)::bytes;
    dispatch_bool(cx.pl->general, [&](auto g) SEGKIT_BODY {
      constexpr bool G = decltype(g)::value;
      if (!dispatch_upto<4, 8, 12, 16, 24, kMaxRegClasses>(cx.pl->C, [&](auto cm) SEGKIT_BODY {
            rows_blur1_regs<B, decltype(cm)::value, G>(cx, r, sc, mode, last);
          }))
        rows_blur1_body<B, G>(cx, r, sc, mode, last);
    });
  });
}

void message_blur(const Ctx& cx, int R, const Scratch& sc) {
  dispatch_isa([&](auto isa) SEGKIT_BODY { message_blur_body<decltype(isa)::bytes>(cx, R, sc); });
}

void update_blur(const Ctx& cx, int R, const Scratch& sc, int mode, bool last) {
  dispatch_isa([&](auto isa) SEGKIT_BODY {
    constexpr int B = decltype(isa)::bytes;
    dispatch_bool(cx.pl->general, [&](auto g) SEGKIT_BODY {
      constexpr bool G = decltype(g)::value;
      if (!dispatch_upto<4, 8, 12, 16, 24, kMaxRegClasses>(cx.pl->C, [&](auto cm) SEGKIT_BODY {
            update_blur_regs<B, decltype(cm)::value, G>(cx, R, sc, mode, last);
          }))
        update_blur_body<B, G>(cx, R, sc, mode, last);
    });
  });
}

}  // namespace crfrows
}  // namespace cpu
}  // namespace segkit
