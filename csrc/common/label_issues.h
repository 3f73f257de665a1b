// Confident learning for segmentation (cleanlab 2.9's `cleanlab.segmentation` on its defaults),
// the per-pixel pieces shared by the CPU and CUDA kernels.
//
// A pixel has a label l (or the ignore label, or a label outside 0..C-1) and C probabilities
// p_0..p_{C-1} stored as planes (N, C, H, W): p_c of pixel i of image n at n*C*HW + c*HW + i.
//   self-confidence  s = p_l                       (cleanlab's pixel quality score)
//   argmax           a = the first c with the largest p_c (numpy's argmax)
//   candidate        a != l                        (only these can be flagged)
//   counted issue    a != l and p_a >= t_a - 1e-6  (t: per-class thresholds; sums to the
//                                                    estimated number of issues)
// Ordering keys map a float's bits to an unsigned integer in the same order as the floats
// (negative values flipped), so a histogram of key >> 16 finds the k-th smallest score.
#pragma once
#include "common/macros.h"
#include "common/math.h"

namespace segkit {
namespace label_issues {

// float16 storage and its exact conversion, bit casts (common/math.h)
using math::bits_to_float;
using math::float_to_bits;
using math::half_bits;
using math::half_to_float;
using math::load;

constexpr int kHistBits = 16;                 // histogram of the top 16 bits of the key
constexpr int kHistBins = 1 << kHistBits;


// Order-preserving key of a float (total order with -0 < +0; NaN above +inf).
SEGKIT_HD SEGKIT_INLINE unsigned int order_key(float f) {
  const unsigned int u = float_to_bits(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// The label of a pixel as a class index, -1 if ignored, -2 if outside 0..C-1.
template <typename L>
SEGKIT_HD SEGKIT_INLINE int class_of(L label, int num_classes, bool has_ignore,
                                     long long ignore) {
  const long long l = static_cast<long long>(label);
  if (has_ignore && l == ignore) return -1;
  if (l < 0 || l >= num_classes) return -2;
  return static_cast<int>(l);
}

// Argmax (first of equal maxima) of a pixel's probabilities, its value in *best.
template <typename P>
SEGKIT_HD SEGKIT_INLINE int argmax(const P* p, index_t plane, int num_classes, float* best) {
  int a = 0;
  float m = load(p);
  for (int c = 1; c < num_classes; ++c) {
    const float v = load(p + c * plane);
    if (v > m) {
      m = v;
      a = c;
    }
  }
  *best = m;
  return a;
}

// Scores one pixel: writes its self-confidence (NaN when ignored or out of range) and
// whether it is a candidate; returns 1 when it counts towards the number of issues
// (thresholds_adj: the per-class thresholds minus 1e-6, in double as cleanlab compares them).
template <typename P>
SEGKIT_HD SEGKIT_INLINE int score_pixel(const P* p, index_t plane, int num_classes, int cls,
                                        const double* thresholds_adj, float* score,
                                        unsigned char* candidate) {
  if (cls < 0) {
    *score = bits_to_float(0x7fc00000u);
    *candidate = 0;
    return 0;
  }
  float best;
  const int a = argmax(p, plane, num_classes, &best);
  *score = load(p + cls * plane);
  *candidate = a != cls;
  return (a != cls) && static_cast<double>(best) >= thresholds_adj[a];
}

// Flag of one pixel: a candidate whose score lies strictly below the cutoff (ties at the
// cutoff are resolved by the caller, in index order).
SEGKIT_HD SEGKIT_INLINE unsigned char flag_pixel(float score, unsigned char candidate,
                                                 unsigned int cutoff_key) {
  return candidate && order_key(score) < cutoff_key;
}

}  // namespace label_issues
}  // namespace segkit
