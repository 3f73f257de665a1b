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

// One call: the parameters, the arrays' shapes and strides, and what a fitted or trainable
// ConvCRF adds (every pointer optional, C-contiguous).
struct ConvCrfArgs : ConvCrfParams {
  index_t n = 0, c = 0, h = 0, w = 0;            // batch, classes, height, width
  index_t im_sn = 0, im_sc = 0, im_sh = 0, im_sw = 0;  // image strides (elements), NCHW order
  // (n, c, h, w): the unary, read instead of `scores` (which then only receives the result)
  const float* unary = nullptr;
  // (c): per-class message weight w_c; the update is (unary_weight - w_c) U + w_c M
  // (float32), replacing unary_coef and message_coef
  const float* weight = nullptr;
  float unary_weight = 1.0f;
  const float* compat = nullptr;      // (c, c): M' = M + compat M
  const std::uint8_t* mask = nullptr;  // (n, h, w): 0 = invalid pixel (sends and receives none)
  // (n, num_iter, c, Hp, Wp): receives, for every iteration t, the pooled Q its message pass
  // reads (Qb_t: Qb_0 pools the start), what the trainable backward reads
  float* saved = nullptr;
  // receives 1 when the unary holds a value the trainable op refuses (not finite; for
  // probabilities, not > 0), checked in the unary's own pass; null: not checked
  int* unary_bad = nullptr;
};

// `scores` is C-contiguous (n, c, h, w) float32 holding the unary on entry (unless args.unary
// is given) and the CRF scores on return. `image` is read through the strides (any layout) as
// uint8 or float32.
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
