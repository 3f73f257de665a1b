// The trainable ConvCRF: the per-pair pieces shared by the CPU and CUDA backward/forward.
//
// Features are kept UNSCALED on the pooled grid (planar, `fs` apart): the pooled pixel
// position (y, x), then the pooled RGB (r, g, b). With s_pos = 1/pos_sdims, s_col = 1/col_schan,
// s_cp = 1/col_sdims (ConvCRF's trainable reciprocals), for the pair (p, q = p + d):
//   dP = |P(q) - P(p)|^2, dI = |I(q) - I(p)|^2,
//   Gp = exp(-s_pos^2 dP / 2), Gc = exp(-(s_col^2 dI + s_cp^2 dP) / 2) (s_cp = 0: no term),
//   A(p, q) = (pos_compat Gp + col_compat Gc) * v(p) v(q), v the pooled validity (0 or 1).
// A is symmetric, so message passing is its own adjoint. The gradient of <R, A Qb> w.r.t. the
// parameters, with S(p, q) = sum_c R_c(p) Qb_c(q) v(p) v(q):
//   d pos_compat = sum Gp S, d col_compat = sum Gc S,
//   d s_pos = -pos_compat s_pos sum dP Gp S, d s_col = -col_compat s_col sum dI Gc S,
//   d s_cp = -col_compat s_cp sum dP Gc S.
// The kernels accumulate the five sums (kGradSums) and the Python side applies the factors.
#pragma once
#include "common/convcrf.h"
#include "common/macros.h"

namespace segkit {
namespace crfgrad {

constexpr int kFeatures = 5;  // y, x, r, g, b (unscaled, pooled)
constexpr int kGradSums = 5;  // sum Gp S, sum Gc S, sum dP Gp S, sum dI Gc S, sum dP Gc S

// Squared reciprocal bandwidths (float32, as ConvCRF's float32 parameters square them).
struct Scales {
  float pos2, col2, colpos2;
};

// The squared distances of the pair (fp, fq) of unscaled pooled features.
SEGKIT_HD SEGKIT_INLINE void pair_distances(const float* fp, const float* fq, index_t fs,
                                            float* dpos, float* dcol) {
  const float dy = fq[0] - fp[0], dx = fq[fs] - fp[fs];
  const float dr = fq[2 * fs] - fp[2 * fs], dg = fq[3 * fs] - fp[3 * fs],
              db = fq[4 * fs] - fp[4 * fs];
  *dpos = dy * dy + dx * dx;
  *dcol = (dr * dr + dg * dg) + db * db;
}

// The two Gaussians of a pair from its squared distances.
SEGKIT_HD SEGKIT_INLINE void pair_gaussians(float dpos, float dcol, const Scales& sc, float* gp,
                                            float* gc) {
  *gp = crf::exp_f32(-0.5f * (sc.pos2 * dpos));
  *gc = crf::exp_f32(-0.5f * (sc.col2 * dcol + sc.colpos2 * dpos));
}

}  // namespace crfgrad
}  // namespace segkit
