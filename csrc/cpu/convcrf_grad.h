// CPU trainable ConvCRF: the forward that keeps what the backward needs, and the fused
// backward (common/convcrf_grad.h has the pair definitions). Plain pointers only.
#pragma once
#include <cstdint>

#include "common/macros.h"

namespace segkit {
namespace cpu {

struct ConvCrfGradArgs {
  index_t n = 0, c = 0, h = 0, w = 0;
  int filter_size = 11, blur = 4, num_iter = 5;
  int unary_kind = 0;  // crf::UnaryKind
  int init = 0;        // crf::Init
  bool final_softmax = false;
  bool col_pos = false;  // the colour kernel has a position term (colpos_inv)
  float unary_weight = 1.0f;
  float pos_compat = 3.0f, col_compat = 10.0f;
  float pos_inv = 1.0f / 3, col_inv = 1.0f / 13, colpos_inv = 0.0f;
};

// Pooled grid size of one side.
void convcrf_grad_pooled(const ConvCrfGradArgs& a, index_t* hp, index_t* wp);

// unary (n, c, h, w), image (n, 3, h, w) float32 0-255, mask (n, h, w) uint8 or null, weight
// (c), compat (c, c) or null; all C-contiguous. Writes out (n, c, h, w) and saved
// (n, num_iter, c, hp, wp), all the backward keeps: saved[:, t] is Qb_t, the pooled Q that
// iteration t + 1's message pass reads (Qb_0 pools the start Q_0; at blur 1 the masked Q).
// saved == nullptr: inference (segkit.convcrf of a fitted setting), nothing kept. Returns
// false when the unary holds a value the op refuses (not finite; for probabilities, not > 0;
// inference on probabilities is not checked): then `out` and `saved` hold no result.
bool convcrf_grad_forward(const float* unary, const float* image, const std::uint8_t* mask,
                          const float* weight, const float* compat, float* out, float* saved,
                          const ConvCrfGradArgs& a);

// grad (n, c, h, w) = dL/d out; the inputs and `saved` of the forward. Writes d_unary
// (n, c, h, w), d_weight (c), d_sums (5, the sums of common/convcrf_grad.h) and d_compat
// (c, c, when compat is given). Deterministic: every sum runs in a fixed order.
void convcrf_grad_backward(const float* grad, const float* unary, const float* image,
                           const std::uint8_t* mask, const float* weight, const float* compat,
                           const float* saved, float* d_unary, double* d_weight, double* d_sums,
                           double* d_compat, const ConvCrfGradArgs& a);

}  // namespace cpu
}  // namespace segkit
