// CPU soft vote entry point, called by bindings.cpp. Plain pointers and sizes only: no Python
// object reaches below this line.
#pragma once

#include "common/macros.h"

namespace segkit {
namespace cpu {

struct SoftVoteArgs {
  index_t n = 0, c = 0, h = 0, w = 0;  // batch, classes, height, width (shared by every model)
  int m = 0;                           // models
  const void* const* inputs = nullptr; // m pointers to (n, c, h, w) arrays
  const index_t* strides = nullptr;    // m * 3 element strides of n, c and h; w's stride is 1
  const float* weights = nullptr;      // m float32 factors (already divided by their sum)
  bool half = false;                   // inputs are IEEE float16 (else float32)
  void* labels = nullptr;              // C-contiguous (n, h, w) labels
  int label_bytes = 1;                 // 1: uint8, 2: uint16
  float* probs = nullptr;              // C-contiguous (n, c, h, w) weighted mean, or null
};

// Fused weighted sum + argmax over classes (common/soft_vote.h defines the arithmetic).
// Returns true if any weighted sum was NaN (the caller reports which model holds the NaN).
bool soft_vote(const SoftVoteArgs& args);

}  // namespace cpu
}  // namespace segkit
