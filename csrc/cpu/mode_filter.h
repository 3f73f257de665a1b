// CPU mode filter entry point, called by bindings.cpp. Plain pointers and sizes only: no
// Python object reaches below this line.
#pragma once
#include <cstdint>

#include "common/macros.h"

namespace segkit {
namespace cpu {

struct ModeFilterArgs {
  index_t n = 0, h = 0, w = 0;   // batch, height, width
  index_t in_sn = 0, in_sh = 0;  // input strides (elements) of images and rows; columns are 1
  int size = 3;
  int anchor = 0;                // segkit::mode::Anchor
  int ties = 0;                  // segkit::mode::Ties
  bool has_ignore = false;
  long long ignore = 0;
};

// `out` is C-contiguous (n, h, w).
template <typename T>
void mode_filter(const T* in, T* out, const ModeFilterArgs& args);

}  // namespace cpu
}  // namespace segkit
