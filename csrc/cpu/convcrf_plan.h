// CPU ConvCRF, shared by the driver (convcrf.cpp) and the row kernels (convcrf_rows.cpp,
// convcrf_message.h): the geometry of a call, what a row routine reads and writes, and the row
// routines themselves (each compiled once per instruction set, cpu/simd.h).
#pragma once
#include <vector>

#include "common/convcrf.h"
#include "cpu/convcrf.h"

namespace segkit {
namespace cpu {
namespace crfrows {

constexpr index_t kPad = 16;   // rows are padded to whole vectors of the widest ISA (floats)
constexpr int kMaxBlock = 12;  // classes per message pass (accumulators held in registers)
// The update keeps every class of a vector of pixels in registers up to 16 classes, and up
// to this many in a small per-vector array (L1-resident) instead of row buffers
constexpr int kMaxRegClasses = 32;
constexpr index_t kPrefetch = 64;   // weights prefetched this many pixels ahead

enum Mode { MODE_INIT = 0, MODE_ITER = 1 };

inline index_t round_up(index_t x, index_t m) { return (x + m - 1) / m * m; }

// Geometry of one call (every image of a batch has the same shape) and fixed tables.
struct Plan {
  int C, H, W, b, k, s, Hp, Wp, p0, p1, nh, ncol, nfeat;
  index_t ld;       // row stride of the haloed pooled planes (Q, K)
  index_t plane;    // (Hp + 2s) * ld
  index_t ldw;      // row stride of full-width row buffers and of the upsampled message
  index_t HW;
  index_t fstride;  // Hp * Wp: feature plane stride
  float kc;         // K(p, p) = pos_compat + col_compat
  std::vector<index_t> koff;  // ey * ld + ex of the stored (half) offsets
  std::vector<int> ey, ex;
  std::vector<int> xi0, xi1;  // bilinear taps along a row (blur > 1), ldw entries: past W
  std::vector<float> xl0, xl1;  // they repeat pixel W - 1's
  std::vector<float> pcount;    // pixels per pooled cell along a row (Wp), as float
  // The general update (a per-class weight or a mask): pred_c = ua[c] U + wa[c] (M' * mask),
  // Q pooled over the valid pixels; otherwise the scalar update of ConvCRF's defaults.
  bool general = false, masked = false;
  std::vector<float> ua, wa;
};

Plan make_plan(const ConvCrfArgs& a);

// What the row routines read and write for the current image and iteration.
struct Ctx {
  const Plan* pl;
  const ConvCrfArgs* a;
  float* scores;      // this image's (C, H, W): U during the iterations, the result at the end
  const float* feat;  // (nfeat, Hp, Wp) pooled features
  float* K;           // nh haloed weight planes
  const float* qcur;  // C haloed planes: Q of this iteration
  float* qnext;       // C haloed planes: Q of the next one
  float* Me;          // (C, Hp, ldw) message upsampled along rows (blur > 1)
  const float* unary = nullptr;  // this image's unary when it is not read from `scores`
  // masked: this image's mask as 0/1 floats (H rows of ldw, zero tails), and per pooled cell
  // (Hp * Wp) the validity and float32(1 / number of valid pixels) (0 for an invalid cell)
  float* fm = nullptr;
  float* valid = nullptr;
  float* inv = nullptr;
  float* saved = nullptr;  // this image and iteration's (C, Hp, Wp) of `saved`, or null
};

// Per-thread row buffers: P, M, A hold C rows of ldw floats; mx and sum one row each.
struct Scratch {
  float *P, *M, *A, *mx, *sum;
};

// ---- the row routines (convcrf_rows.cpp), on the active instruction set -------------------
// Weights of pooled row R into the K planes.
void weights_row(const Ctx& cx, int R);
// U in place for full-resolution row i; false when the call checks the unary
// (ConvCrfArgs::unary_bad) and the row holds a refused value.
bool unary_row(const Ctx& cx, int i, const Scratch& sc);
// blur 1, row r: (message,) update, softmax; into the next Q or, last, into the scores.
void rows_blur1(const Ctx& cx, int r, const Scratch& sc, int mode, bool last);
// blur b, pooled row R: the message, upsampled along the row into Me.
void message_blur(const Ctx& cx, int R, const Scratch& sc);
// blur b, pooled row R: its b full-resolution rows updated, then pooled into the next Q (or,
// last, written to the scores).
void update_blur(const Ctx& cx, int R, const Scratch& sc, int mode, bool last);

}  // namespace crfrows
}  // namespace cpu
}  // namespace segkit
