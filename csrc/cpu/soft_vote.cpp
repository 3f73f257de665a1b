// CPU soft vote: one pass over the M inputs, OpenMP over tiles of pixels, SIMD over pixels.
//
// Work is cut into tiles of up to kTile pixels of one row (or of one whole (H, W) plane when
// every model's rows are contiguous). For each tile and class c, a vector of pixels sums its M
// weighted probabilities in registers (models in order, one rounding per product and per sum,
// exactly as common/soft_vote.h defines), then updates the running best score and label of
// those pixels (a tile's worth lives in L1). Each input byte is read once; nothing is copied
// to float32 or stacked.
//
// float16 is read directly: the AVX-512 and AVX2 paths convert with vcvtph2ps, the baseline
// path with an exact integer bit conversion (cpu/simd.h load_half). The span routine is
// compiled once per instruction set by cpu/simd.h's dispatch (the module itself stays
// baseline x86-64; never -march=native).

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/soft_vote.h"
#include "cpu/runtime.h"
#include "cpu/simd.h"
#include "cpu/soft_vote.h"

namespace segkit {
namespace cpu {
namespace {

using vote::half_bits;

//: Pixels per task. Two float32/int32 arrays of this length stay in L1 while a tile is voted.
constexpr index_t kTile = 2048;

#if SEGKIT_X86
#define SEGKIT_VEC_BARRIER(x) __asm__("" : "+v"(x))
#else
#define SEGKIT_VEC_BARRIER(x) SEGKIT_FP_BARRIER(x)
#endif

// B bytes of float32 lanes from float32 or float16 inputs.
template <class I>
SEGKIT_ALWAYS vec_t<float, I::bytes> load_f32(I, const float* p) {
  return loadv<vec_t<float, I::bytes>>(p);
}
template <class I>
SEGKIT_ALWAYS vec_t<float, I::bytes> load_f32(I isa, const half_bits* p) {
  return load_half(isa, p);
}

// One tile: `src[m]` points at model m's class-0 value of the tile's first pixel, `cs[m]` is
// its class stride; `len` pixels. Leaves labels in `lab`, writes sums to `probs` (class stride
// probs_cs) when not null. `best` is scratch of `len` floats.
struct Span {
  int M, C;
  const float* w;
  const index_t* cs;
  index_t len;
  int32_t* lab;
  float* best;
  float* probs;
  index_t probs_cs;
};

template <typename T>
inline void vote_span_scalar(const T* const* src, const Span& s, bool& nan) {
  for (index_t x = 0; x < s.len; ++x) {
    const auto value = [&](int m, int c) { return vote::load(src[m] + c * s.cs[m] + x); };
    s.lab[x] = vote::vote_pixel(s.M, s.C, s.w, value, s.probs ? s.probs + x : nullptr,
                                s.probs_cs, nan);
  }
}

template <typename Isa, typename T>
inline void vote_span(const T* const* src, const Span& s, bool& nan) {
  using F = vec_t<float, Isa::bytes>;
  using I = vec_t<int32_t, Isa::bytes>;
  constexpr index_t L = Vec<float, Isa::bytes>::lanes;
  if (s.len < L) return vote_span_scalar(src, s, nan);
  I bad = I{};
  for (int c = 0; c < s.C; ++c) {
    const I cv = I{} + c;
    for (index_t x0 = 0; x0 < s.len; x0 += L) {
      // The last vector overlaps the one before it; recomputing a pixel is idempotent.
      const index_t x = x0 + L <= s.len ? x0 : s.len - L;
      F acc = F{};
      for (int m = 0; m < s.M; ++m) {
        F p = s.w[m] * load_f32(Isa{}, src[m] + c * s.cs[m] + x);
        SEGKIT_VEC_BARRIER(p);  // fl(w * p), then fl(acc + .): no FMA
        acc = acc + p;
      }
      if (s.probs) std::memcpy(s.probs + c * s.probs_cs + x, &acc, sizeof acc);
      bad |= (I)(acc != acc);
      if (c == 0) {
        std::memcpy(s.best + x, &acc, sizeof acc);
        const I zero = I{};
        std::memcpy(s.lab + x, &zero, sizeof zero);
      } else {
        F b;
        I l;
        std::memcpy(&b, s.best + x, sizeof b);
        std::memcpy(&l, s.lab + x, sizeof l);
        const I gt = (I)(acc > b);
        b = (F)(((I)acc & gt) | ((I)b & ~gt));
        l = (cv & gt) | (l & ~gt);
        std::memcpy(s.best + x, &b, sizeof b);
        std::memcpy(s.lab + x, &l, sizeof l);
      }
    }
  }
  for (index_t i = 0; i < L; ++i) nan = nan || bad[i] != 0;
}

template <typename L>
void store_labels(const int32_t* lab, L* out, index_t len) {
  for (index_t i = 0; i < len; ++i) out[i] = static_cast<L>(lab[i]);
}

void check_args(const SoftVoteArgs& a) {
  if (a.n < 0 || a.c < 1 || a.h < 0 || a.w < 0 || a.m < 1)
    throw std::invalid_argument("soft_vote: bad shape (n=" + std::to_string(a.n) + ", c=" +
                                std::to_string(a.c) + ", h=" + std::to_string(a.h) + ", w=" +
                                std::to_string(a.w) + ", models=" + std::to_string(a.m) + ")");
  if (a.label_bytes != 1 && a.label_bytes != 2)
    throw std::invalid_argument("soft_vote: labels must be uint8 or uint16");
  if (a.c > (a.label_bytes == 1 ? 256 : 65536))
    throw std::invalid_argument("soft_vote: " + std::to_string(a.c) +
                                " classes do not fit the label dtype");
  if (!a.inputs || !a.strides || !a.weights || !a.labels)
    throw std::invalid_argument("soft_vote: null pointer");
}

template <typename T>
bool run(const SoftVoteArgs& a) {
  const int M = a.m, C = static_cast<int>(a.c);
  // Rows of every model contiguous with each other: vote whole planes as one long row.
  bool planar = true;
  for (int m = 0; m < M; ++m)
    if (a.h > 1 && a.strides[3 * m + 2] != a.w) planar = false;
  const index_t rows = planar ? 1 : a.h, width = planar ? a.h * a.w : a.w;
  const index_t plane = a.h * a.w;
  if (a.n == 0 || plane == 0) return false;
  const index_t tiles = (width + kTile - 1) / kTile;
  const index_t tasks = a.n * rows * tiles;
  std::vector<index_t> cs(M);
  for (int m = 0; m < M; ++m) cs[m] = a.strides[3 * m + 1];
  bool nan = false;

#pragma omp parallel num_threads(max_threads()) reduction(|| : nan)
  {
    std::vector<const T*> src(M);
    std::vector<int32_t> lab(kTile);
    std::vector<float> best(kTile);
#pragma omp for schedule(static)
    for (index_t t = 0; t < tasks; ++t) {
      const index_t tile = t % tiles, row = t / tiles;
      const index_t i = row / rows, r = row % rows;  // image, row (0 when planar)
      const index_t x0 = tile * kTile;
      const index_t len = std::min(kTile, width - x0);
      for (int m = 0; m < M; ++m) {
        const index_t* st = a.strides + 3 * m;
        src[m] = static_cast<const T*>(a.inputs[m]) + i * st[0] + r * st[2] + x0;
      }
      const index_t pix = i * plane + r * a.w + x0;  // offset in the (n, h, w) outputs
      Span s{M, C, a.weights, cs.data(), len, lab.data(), best.data(),
             a.probs ? a.probs + i * C * plane + r * a.w + x0 : nullptr, plane};
      bool local_nan = false;
      dispatch_isa([&](auto isa) SEGKIT_BODY { vote_span<decltype(isa), T>(src.data(), s, local_nan); });
      nan = nan || local_nan;
      if (a.label_bytes == 1)
        store_labels(lab.data(), static_cast<uint8_t*>(a.labels) + pix, len);
      else
        store_labels(lab.data(), static_cast<uint16_t*>(a.labels) + pix, len);
    }
  }
  return nan;
}

}  // namespace

bool soft_vote(const SoftVoteArgs& a) {
  check_args(a);
  return a.half ? run<half_bits>(a) : run<float>(a);
}

}  // namespace cpu
}  // namespace segkit
