// CPU trainable ConvCRF: the forward, a thin call of the inference kernel (convcrf.cpp, issue
// 26 part 2), which keeps in `saved` Qb_t, the pooled Q that iteration t + 1's message pass
// reads, for t = 0..T-1 (C*Hp*Wp floats per iteration: C*H*W at blur 1, C*H*W/b^2 at blur b);
// and the pooled grid size. The backward (convcrf_grad_backward.cpp over convcrf_grad_plan.h
// and convcrf_grad_rows.h) recomputes from the unary and Qb what it needs: the message
// Mb_t = A Qb_{t-1} on the pooled grid, M'_t, U and Q_t = softmax(a U + w M'_t).

#pragma GCC optimize("no-trapping-math")

#include "cpu/convcrf_grad.h"

#include "cpu/convcrf.h"
#include "cpu/convcrf_grad_plan.h"

namespace segkit {
namespace cpu {

using gradrows::check_args;

void convcrf_grad_pooled(const ConvCrfGradArgs& a, index_t* hp, index_t* wp) {
  int h, w, p;
  crf::pool_geometry(static_cast<int>(a.h), a.blur, &h, &p);
  crf::pool_geometry(static_cast<int>(a.w), a.blur, &w, &p);
  *hp = h;
  *wp = w;
}

// The forward is the inference kernel (convcrf.cpp) with the trainable forward's inputs: the
// per-class weights (equal weights take ConvCRF's scalar update, bit-identical to
// segkit.convcrf), the compat matrix, the mask and `saved`.
bool convcrf_grad_forward(const float* unary, const float* image, const std::uint8_t* mask,
                          const float* weight, const float* compat, float* out, float* saved,
                          const ConvCrfGradArgs& a) {
  check_args(a);
  if (a.n == 0 || a.h == 0 || a.w == 0) return true;
  ConvCrfArgs f;
  f.filter_size = a.filter_size, f.blur = a.blur, f.num_iter = a.num_iter;
  f.pos_inv = a.pos_inv, f.col_inv = a.col_inv;
  f.col_pos = a.col_pos, f.colpos_inv = a.col_pos ? a.colpos_inv : 0.0f;
  f.pos_compat = a.pos_compat, f.col_compat = a.col_compat;
  f.unary_kind = a.unary_kind, f.init = a.init, f.final_softmax = a.final_softmax;
  f.n = a.n, f.c = a.c, f.h = a.h, f.w = a.w;
  f.im_sn = 3 * a.h * a.w, f.im_sc = a.h * a.w, f.im_sh = a.w, f.im_sw = 1;
  f.unary = unary, f.compat = compat, f.mask = mask, f.saved = saved;
  bool equal = true;
  for (index_t c = 1; c < a.c; ++c) equal = equal && weight[c] == weight[0];
  if (equal) {
    f.message_coef = weight[0];
    f.unary_coef = a.unary_weight - weight[0];
  } else {
    f.weight = weight;
    f.unary_weight = a.unary_weight;
  }
  // the unary checked in the kernel's first pass: always for the trainable forward, and for
  // logits in inference (segkit.convcrf accepts the same); probabilities in inference may be 0
  int bad = 0;
  f.unary_bad = saved != nullptr || a.unary_kind == crf::UNARY_LOGITS ? &bad : nullptr;
  convcrf<float>(out, image, f);
  return bad == 0;
}

}  // namespace cpu
}  // namespace segkit
