// CPU confusion matrix entry point, called by bindings.cpp.
#pragma once
#include <cstdint>

#include "common/macros.h"

namespace segkit {
namespace cpu {

// Adds the confusion counts of n pixels to counts (num_classes^2, row = ground truth) and the
// numbers of out-of-range ground-truth and predicted labels to bad[0] and bad[1].
template <typename T>
void confusion(const T* pred, const T* gt, index_t n, int num_classes, bool has_ignore,
               long long ignore, int64_t* counts, int64_t* bad);

}  // namespace cpu
}  // namespace segkit
