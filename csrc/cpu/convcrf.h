// CPU ConvCRF entry point, called by bindings.cpp. Plain pointers and sizes only: no Python
// object reaches below this line.
#pragma once
#include <cstdint>

#include "common/macros.h"

namespace segkit {
namespace cpu {

// The parameter record of one ConvCRF setting: the float32 constants ConvCRF uses. Defined
// here once; bindings.cpp binds it as segkit._C.ConvCrfParams, which segkit/ops/convcrf.py
// builds once per setting (ConvCrfParams.kernel_params).
struct ConvCrfParams {
  int filter_size = 11;
  int blur = 4;
  int num_iter = 5;
  float pos_inv = 1.0f / 3;    // float32(1 / pos_sdims)
  float col_inv = 1.0f / 13;   // float32(1 / col_schan)
  bool col_pos = false;        // colour kernel has a position term
  float colpos_inv = 0.0f;     // float32(1 / col_sdims)
  float pos_compat = 3.0f;
  float col_compat = 10.0f;
  float unary_coef = 0.8f;     // float32(unary_weight) - float32(weight_init)
  float message_coef = 0.2f;   // float32(weight_init)
  int unary_kind = 0;          // segkit::crf::UnaryKind
  int init = 0;                // segkit::crf::Init
  bool final_softmax = false;
};

// One call: the parameters and the arrays' shapes and strides.
struct ConvCrfArgs : ConvCrfParams {
  index_t n = 0, c = 0, h = 0, w = 0;            // batch, classes, height, width
  index_t im_sn = 0, im_sc = 0, im_sh = 0, im_sw = 0;  // image strides (elements), NCHW order
};

// `scores` is C-contiguous (n, c, h, w) float32 holding the unary on entry and the CRF scores
// on return. `image` is read through the strides (any layout) as uint8 or float32.
template <typename TImg>
void convcrf(float* scores, const TImg* image, const ConvCrfArgs& args);

// Bytes of working memory convcrf() allocates for these arguments (besides `scores`).
std::int64_t convcrf_workspace_bytes(const ConvCrfArgs& args);

// convcrf() keeps its working memory for the next call (at most two blocks). These free it /
// report it, in bytes.
std::int64_t convcrf_release_workspace();
std::int64_t convcrf_cached_workspace();

}  // namespace cpu
}  // namespace segkit
