// CPU ConvCRF: sums of b consecutive floats as vectors (b = 2, 4, 8: the pooling cells of
// blur 2, 4, 8), for the forward's pooling (convcrf_update.h) and the trainable backward's
// horizontal adjoint (convcrf_grad_upsample.h). The b vectors of one block of L outputs are
// loaded once and value b l + t of them is dealt to lane l by two-source lane permutations;
// each output adds its b values in order from 0, as the scalar loop does: the same bits.
#pragma once
#include <algorithm>

#include "common/macros.h"
#include "cpu/simd.h"

namespace segkit {
namespace cpu {

// Which lane of a pair of vectors (2k, 2k + 1) lane l of the deal for t takes (idx), and
// whether that pair holds it (sel): lane b l + t of the b vectors of L lanes.
template <int L, int b>
struct DealMasks {
  static constexpr int pairs = (b + 1) / 2;
  int idx[b][pairs][L] = {}, sel[b][pairs][L] = {};
  constexpr DealMasks() {
    for (int t = 0; t < b; ++t)
      for (int k = 0; k < pairs; ++k)
        for (int l = 0; l < L; ++l) {
          const int at = b * l + t, vec = at / L - 2 * k;
          idx[t][k][l] = vec == 0 || vec == 1 ? vec * L + at % L : 0;
          sel[t][k][l] = vec == 0 || vec == 1 ? -1 : 0;
        }
  }
};

// The deal of B-byte vectors for blocks of b: deal(p, t) has value b l + t of p[0 .. b) in
// lane l.
template <int B, int b>
struct Deal {
  typedef vec_t<float, B> V;
  typedef vec_t<int, B> IV;
  static constexpr int L = Vec<float, B>::lanes, pairs = DealMasks<L, b>::pairs;
  IV idx[b][pairs], sel[b][pairs];
  SEGKIT_ALWAYS Deal() {
    static constexpr DealMasks<L, b> m{};
    for (int t = 0; t < b; ++t)
      for (int k = 0; k < pairs; ++k)
        idx[t][k] = loadv<IV>(m.idx[t][k]), sel[t][k] = loadv<IV>(m.sel[t][k]);
    // Opaque to the optimiser: with the masks as constants GCC 12 breaks the two-source
    // permutations into scalar lane extracts (about 4x slower than the permutations).
    __asm__("" : "+m"(idx), "+m"(sel));
  }
  SEGKIT_ALWAYS V operator()(const V* p, int t) const {
    V d = V{};
    for (int k = 0; k < pairs; ++k)
      d = sel[t][k] != 0 ? __builtin_shuffle(p[2 * k], p[2 * k + 1], idx[t][k]) : d;
    return d;
  }
};

// o[X] for X in [X0, X1) (X1 - X0 >= the lanes L), a block of L outputs at a time:
// block(X, deal) returns outputs X .. X + L - 1; the last block overlaps the one before it
// (those outputs computed twice, the same way) instead of a scalar tail.
template <int B, int b, class Block>
SEGKIT_ALWAYS void over_blocks(int X0, int X1, float* __restrict o, const Block& block) {
  const Deal<B, b> deal;
  constexpr int L = Vec<float, B>::lanes;
  for (int X = X0;; X += L) {
    X = std::min(X, X1 - L);
    storev(o + X, block(X, deal));
    if (X + L >= X1) break;
  }
}

// o[X] = a[b X] + ... + a[b X + b - 1] (added in order from 0) for X in [X0, X1), X1 - X0 >= L.
template <int B, int b>
SEGKIT_ALWAYS void block_sums(const float* a, int X0, int X1, float* __restrict o) {
  typedef vec_t<float, B> V;
  over_blocks<B, b>(X0, X1, o, [&](int X, const Deal<B, b>& deal) SEGKIT_BODY {
    V p[b + b % 2];
    const float* block = a + static_cast<index_t>(b) * X;
    for (int q = 0; q < b; ++q) p[q] = loadv<V>(block + q * Deal<B, b>::L);
    V acc = V{} + 0.0f;
    for (int t = 0; t < b; ++t) acc += deal(p, t);
    return acc;
  });
}

}  // namespace cpu
}  // namespace segkit
