// CPU ConvCRF: the per-pixel max and log-sum of the unary's softmax over classes, for the
// forward's U (convcrf_rows.cpp: U = (x - mx) - ls) and the trainable backward's (which keeps
// mx and ls only). One vector of pixels at a time: its C values are read from memory once (for
// the max) and again from L1 (for the exps), the max and the sum stay in registers. The max,
// the exps and their sum (classes in order from 0) are the scalar tail's operations lane by
// lane: the same bits. Include it after the translation unit's
// `#pragma GCC optimize("no-trapping-math")`.
#pragma once
#include <limits>

#include "common/convcrf.h"
#include "cpu/simd.h"

namespace segkit {
namespace cpu {

// mx[j] = max_c x[c HW + j] and ls[j] = log sum_c exp(x[c HW + j] - mx[j]) for j < W. CHECK:
// returns false when a value is not finite (the sum is NaN or inf exactly where a value is NaN
// or +inf; -inf is a minimum, kept beside the exps); otherwise true.
template <int B, bool CHECK>
SEGKIT_ALWAYS bool log_sum_row(const float* x, index_t HW, int C, int W, float* __restrict mx,
                               float* __restrict ls) {
  typedef vec_t<float, B> V;
  typedef vec_t<int, B> IV;
  constexpr int L = Vec<float, B>::lanes;
  const float big = std::numeric_limits<float>::max();
  IV bad = IV{};
  int j0 = 0;
  for (; j0 + L <= W; j0 += L) {
    const float* p = x + j0;
    V m = loadv<V>(p);
    for (int c = 1; c < C; ++c) {
      const V v = loadv<V>(p + c * HW);
      m = v > m ? v : m;
    }
    V s = V{}, lo = m;
    for (int c = 0; c < C; ++c) {
      const V v = loadv<V>(p + c * HW);
      s += crf::exp_poly(v - m);
      if (CHECK) lo = v < lo ? v : lo;
    }
    storev(mx + j0, m);
    storev(ls + j0, s);
    if (CHECK) bad |= ~((s <= big) & (lo >= -big));
  }
  bool ok = true;
  for (int l = 0; l < L; ++l) ok = ok && bad[l] == 0;
  for (int j = j0; j < W; ++j) {  // the tail, lane by lane
    float m = x[j], lo = x[j], s = 0.0f;
    for (int c = 1; c < C; ++c) m = x[c * HW + j] > m ? x[c * HW + j] : m;
    for (int c = 0; c < C; ++c) {
      s += crf::exp_f32(x[c * HW + j] - m);
      lo = x[c * HW + j] < lo ? x[c * HW + j] : lo;
    }
    mx[j] = m, ls[j] = s;
    ok = ok && (!CHECK || (s <= big && lo >= -big));
  }
  for (int j = 0; j < W; ++j) ls[j] = crf::log_f32(ls[j]);
  return ok;
}

}  // namespace cpu
}  // namespace segkit
