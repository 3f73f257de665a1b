// Confusion matrix of label maps: counts[gt * C + pred], shared by the CPU and CUDA kernels.
#pragma once
#include "macros.h"

namespace segkit {
namespace confusion {

// Where pixel (pred, gt) goes: a bin in [0, C*C), or -1 for an ignored ground-truth pixel,
// -2 for a ground-truth label out of range, -3 for a prediction out of range.
template <typename T>
SEGKIT_HD SEGKIT_INLINE long long bin_of(T pred, T gt, int num_classes, bool has_ignore,
                                         long long ignore) {
  const long long g = static_cast<long long>(gt), p = static_cast<long long>(pred);
  if (has_ignore && g == ignore) return -1;
  if (g < 0 || g >= num_classes) return -2;
  if (p < 0 || p >= num_classes) return -3;
  return g * num_classes + p;
}

}  // namespace confusion
}  // namespace segkit
