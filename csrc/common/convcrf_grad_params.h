// The trainable ConvCRF's scalar parameters, by name, and the chain rule of each: the one
// place where the op's named values (torch.ops.segkit.conv_crf: pos_compat, col_compat,
// pos_sdims, col_schan, col_sdims) become the kernels' constants, and where the kernels' five
// sums (common/convcrf_grad.h) become the gradient w.r.t. each named value. The CPU binding
// (bindings/convcrf_grad.cpp) and the CUDA backward (cuda/convcrf_grad.cu, on the device,
// reading the values through pointers) both call it; nothing else applies a factor.
//
// With s = 1/sdims (float32, as ConvCRF's float32 reciprocals), Gp = exp(-s_pos^2 dP / 2) and
// A = pos_compat Gp + col_compat Gc (common/convcrf_grad.h), for L = <R, A Qb>:
//   dL/d pos_compat = sum Gp S                    dL/d col_compat = sum Gc S
//   dL/d pos_sdims  = pos_compat s_pos^3 sum dP Gp S   (d Gp / d sdims = Gp dP / sdims^3)
//   dL/d col_schan  = col_compat s_col^3 sum dI Gc S
//   dL/d col_sdims  = col_compat s_cp^3  sum dP Gc S   (0 when the colour kernel has no
//                                                        position term)
#pragma once
#include "common/convcrf_grad.h"
#include "common/macros.h"

namespace segkit {
namespace crfgrad {

// The order of ParamGrads::d (and of the op's parameter gradients).
enum Param { P_POS_COMPAT = 0, P_COL_COMPAT, P_POS_SDIMS, P_COL_SCHAN, P_COL_SDIMS, kParams };

// The named scalar values of one call (col_sdims 0: no position term in the colour kernel).
struct ParamValues {
  float pos_compat, col_compat, pos_sdims, col_schan, col_sdims;
};

// The values as the CUDA kernels read them: through device pointers (col_sdims null: none).
SEGKIT_HD SEGKIT_INLINE ParamValues values_at(const float* pos_compat, const float* col_compat,
                                              const float* pos_sdims, const float* col_schan,
                                              const float* col_sdims) {
  ParamValues v;
  v.pos_compat = *pos_compat, v.col_compat = *col_compat;
  v.pos_sdims = *pos_sdims, v.col_schan = *col_schan;
  v.col_sdims = col_sdims != nullptr ? *col_sdims : 0.0f;
  return v;
}

// The reciprocal bandwidth the Gaussians use, in float32 (0 for an absent bandwidth).
SEGKIT_HD SEGKIT_INLINE float inverse(float sdims) { return sdims > 0.0f ? 1.0f / sdims : 0.0f; }

// The squared reciprocal bandwidths of common/convcrf_grad.h from the named values.
SEGKIT_HD SEGKIT_INLINE Scales scales_from(const ParamValues& v) {
  const float sp = inverse(v.pos_sdims), sc = inverse(v.col_schan), scp = inverse(v.col_sdims);
  Scales s;
  s.pos2 = sp * sp, s.col2 = sc * sc, s.colpos2 = scp * scp;
  return s;
}

// d[k] = dL / d(named value k) from the kernels' five sums (kGradSums, in their order).
SEGKIT_HD SEGKIT_INLINE void parameter_gradients(const double* sums, const ParamValues& v,
                                                 double* d) {
  const double sp = inverse(v.pos_sdims), sc = inverse(v.col_schan), scp = inverse(v.col_sdims);
  d[P_POS_COMPAT] = sums[0];
  d[P_COL_COMPAT] = sums[1];
  d[P_POS_SDIMS] = static_cast<double>(v.pos_compat) * sp * sp * sp * sums[2];
  d[P_COL_SCHAN] = static_cast<double>(v.col_compat) * sc * sc * sc * sums[3];
  d[P_COL_SDIMS] = static_cast<double>(v.col_compat) * scp * scp * scp * sums[4];
}

}  // namespace crfgrad
}  // namespace segkit
