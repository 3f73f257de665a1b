// CPU mode filter: OpenMP over rows, a SIMD fast path for the 3x3 window and the shared
// per-pixel definition (common/mode_filter.h) everywhere else.
//
// The 3x3 fast path counts, for each of the 9 window cells, how many other cells hold the
// same label (36 pairwise comparisons), for a whole vector of neighbouring output pixels at
// once. It is written with GCC/Clang vector extensions and compiled three times (baseline
// 128-bit, AVX2, AVX-512BW) behind `target` attributes; the best one the processor has is
// picked at run time (see runtime.cpp), so the module itself stays baseline x86-64. The
// AVX-512 variant uses intrinsics instead: mask registers make each counted pair one compare
// and two masked adds, which the vector-extension form cannot express.
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/mode_filter.h"
#include "cpu/mode_filter.h"
#include "cpu/runtime.h"

namespace segkit {
namespace cpu {
namespace {

using mode::ANCHOR_CENTER;
using mode::TIES_FIRST;
using mode::TIES_KEEP;
using mode::TIES_SMALLEST;

constexpr int kRuntimeOwn = -1;

template <typename T>
using RowFn = void (*)(const T*, index_t, T*, index_t, int, T);

// out[x] = mode of the window of R rows (starting at `top`, rows `ld` apart) and columns
// x, x+1, x+2, for x in [0, n); n >= lanes. `own` is the row-major window index (0 .. 3R-1)
// of the output pixel's own label; OWN fixes it at compile time for the common cases,
// kRuntimeOwn reads it from `own`.
template <typename T, int B, int R, int TIES, bool IGN, int OWN>
__attribute__((always_inline)) inline void window_row_body(const T* __restrict top, index_t ld,
                                                           T* __restrict out, index_t n, int own,
                                                           T ign) {
  typedef T V __attribute__((vector_size(B)));
  constexpr index_t L = B / sizeof(T);
  constexpr int K = 3 * R;  // cells in the window
  const int own_i = OWN >= 0 ? OWN : own;
  const T* own_ptr = top + (own_i / 3) * ld + own_i % 3;
  const V vmax = V{} + std::numeric_limits<T>::max();
  for (index_t x0 = 0; x0 < n; x0 += L) {
    const index_t x = x0 + L <= n ? x0 : n - L;  // the last block overlaps the one before
    V v[K], c[K];
#pragma GCC unroll 9
    for (int i = 0; i < K; ++i) {
      std::memcpy(&v[i], top + (i / 3) * ld + x + i % 3, sizeof(V));
      c[i] = V{};
    }
    // c[i] = number of other cells equal to cell i (comparisons give -1 for true).
#pragma GCC unroll 9
    for (int i = 0; i < K; ++i) {
#pragma GCC unroll 9
      for (int j = i + 1; j < K; ++j) {
        const V eq = (V)(v[i] == v[j]);
        c[i] -= eq;
        c[j] -= eq;
      }
    }
    if (IGN) {  // voters count themselves (1..K); ignored cells count 0
#pragma GCC unroll 9
      for (int i = 0; i < K; ++i) c[i] = (V)(v[i] != ign) & (V)(c[i] + 1);
    }
    V m = c[0];
#pragma GCC unroll 9
    for (int i = 1; i < K; ++i) m = c[i] > m ? c[i] : m;

    V vo;
    if (OWN >= 0) {
      vo = v[OWN >= 0 ? OWN : 0];
    } else {
      std::memcpy(&vo, own_ptr + x, sizeof(V));
    }
    V res;
    if (TIES == TIES_FIRST) {
      res = v[K - 1];
#pragma GCC unroll 9
      for (int i = K - 2; i >= 0; --i) res = (c[i] == m) ? v[i] : res;
    } else {
      res = vmax;
#pragma GCC unroll 9
      for (int i = 0; i < K; ++i) {
        const V t = (c[i] == m) ? v[i] : vmax;
        res = t < res ? t : res;
      }
      if (TIES == TIES_KEEP) {
        V co;
        if (OWN >= 0) {
          co = c[OWN >= 0 ? OWN : 0];
        } else {
          co = V{};
#pragma GCC unroll 9
          for (int i = 0; i < K; ++i) co -= (V)(vo == v[i]);
          co = IGN ? (V)((V)(vo != ign) & co) : (V)(co - 1);
        }
        res = (co == m) ? vo : res;
      }
    }
    if (IGN) {  // ignored pixels and windows without a voter stay as they are
      // (bitwise select: GCC 12 scalarises the ternary form of this one under AVX-512)
      const V keep = (V)(m == 0) | (V)(vo == ign);
      res = (vo & keep) | (res & ~keep);
    }
    std::memcpy(out + x, &res, sizeof(V));
  }
}

#define SEGKIT_ROW_ARGS const T *top, index_t ld, T *out, index_t n, int own, T ign
#define SEGKIT_ROW_PASS top, ld, out, n, own, ign

struct IsaBase {
  static constexpr int bytes = 16;
  template <typename T, int R, int TIES, bool IGN, int OWN>
  static void row(SEGKIT_ROW_ARGS) {
    window_row_body<T, 16, R, TIES, IGN, OWN>(SEGKIT_ROW_PASS);
  }
};

#if defined(__x86_64__) || defined(__i386__)
struct IsaAvx2 {
  static constexpr int bytes = 32;
  template <typename T, int R, int TIES, bool IGN, int OWN>
  __attribute__((target("avx2"))) static void row(SEGKIT_ROW_ARGS) {
    window_row_body<T, 32, R, TIES, IGN, OWN>(SEGKIT_ROW_PASS);
  }
};

#define SEGKIT_AVX512 __attribute__((target("avx512f,avx512bw"), always_inline)) static inline

// AVX-512BW operations on label vectors of T (counts live in lanes of the same width). With
// mask registers, counting an equal pair is one compare plus two masked adds.
template <typename T>
struct Z;
template <>
struct Z<uint8_t> {
  using M = __mmask64;
  SEGKIT_AVX512 __m512i set1(uint8_t x) { return _mm512_set1_epi8(static_cast<char>(x)); }
  SEGKIT_AVX512 M eq(__m512i a, __m512i b) { return _mm512_cmpeq_epi8_mask(a, b); }
  SEGKIT_AVX512 M ne(__m512i a, __m512i b) { return _mm512_cmpneq_epi8_mask(a, b); }
  SEGKIT_AVX512 __m512i inc(__m512i c, M k, __m512i one) { return _mm512_mask_add_epi8(c, k, c, one); }
  SEGKIT_AVX512 __m512i maskz(M k, __m512i a) { return _mm512_maskz_mov_epi8(k, a); }
  SEGKIT_AVX512 __m512i max(__m512i a, __m512i b) { return _mm512_max_epu8(a, b); }
  SEGKIT_AVX512 __m512i min_if(__m512i a, M k, __m512i b) { return _mm512_mask_min_epu8(a, k, a, b); }
  SEGKIT_AVX512 __m512i blend(M k, __m512i a, __m512i b) { return _mm512_mask_blend_epi8(k, a, b); }
};
template <>
struct Z<uint16_t> {
  using M = __mmask32;
  SEGKIT_AVX512 __m512i set1(uint16_t x) { return _mm512_set1_epi16(static_cast<short>(x)); }
  SEGKIT_AVX512 M eq(__m512i a, __m512i b) { return _mm512_cmpeq_epi16_mask(a, b); }
  SEGKIT_AVX512 M ne(__m512i a, __m512i b) { return _mm512_cmpneq_epi16_mask(a, b); }
  SEGKIT_AVX512 __m512i inc(__m512i c, M k, __m512i one) { return _mm512_mask_add_epi16(c, k, c, one); }
  SEGKIT_AVX512 __m512i maskz(M k, __m512i a) { return _mm512_maskz_mov_epi16(k, a); }
  SEGKIT_AVX512 __m512i max(__m512i a, __m512i b) { return _mm512_max_epu16(a, b); }
  SEGKIT_AVX512 __m512i min_if(__m512i a, M k, __m512i b) { return _mm512_mask_min_epu16(a, k, a, b); }
  SEGKIT_AVX512 __m512i blend(M k, __m512i a, __m512i b) { return _mm512_mask_blend_epi16(k, a, b); }
};
template <>
struct Z<int32_t> {
  using M = __mmask16;
  SEGKIT_AVX512 __m512i set1(int32_t x) { return _mm512_set1_epi32(x); }
  SEGKIT_AVX512 M eq(__m512i a, __m512i b) { return _mm512_cmpeq_epi32_mask(a, b); }
  SEGKIT_AVX512 M ne(__m512i a, __m512i b) { return _mm512_cmpneq_epi32_mask(a, b); }
  SEGKIT_AVX512 __m512i inc(__m512i c, M k, __m512i one) { return _mm512_mask_add_epi32(c, k, c, one); }
  SEGKIT_AVX512 __m512i maskz(M k, __m512i a) { return _mm512_maskz_mov_epi32(k, a); }
  SEGKIT_AVX512 __m512i max(__m512i a, __m512i b) { return _mm512_max_epi32(a, b); }
  SEGKIT_AVX512 __m512i min_if(__m512i a, M k, __m512i b) { return _mm512_mask_min_epi32(a, k, a, b); }
  SEGKIT_AVX512 __m512i blend(M k, __m512i a, __m512i b) { return _mm512_mask_blend_epi32(k, a, b); }
};
template <>
struct Z<int64_t> {
  using M = __mmask8;
  SEGKIT_AVX512 __m512i set1(int64_t x) { return _mm512_set1_epi64(x); }
  SEGKIT_AVX512 M eq(__m512i a, __m512i b) { return _mm512_cmpeq_epi64_mask(a, b); }
  SEGKIT_AVX512 M ne(__m512i a, __m512i b) { return _mm512_cmpneq_epi64_mask(a, b); }
  SEGKIT_AVX512 __m512i inc(__m512i c, M k, __m512i one) { return _mm512_mask_add_epi64(c, k, c, one); }
  SEGKIT_AVX512 __m512i maskz(M k, __m512i a) { return _mm512_maskz_mov_epi64(k, a); }
  SEGKIT_AVX512 __m512i max(__m512i a, __m512i b) { return _mm512_max_epi64(a, b); }
  SEGKIT_AVX512 __m512i min_if(__m512i a, M k, __m512i b) { return _mm512_mask_min_epi64(a, k, a, b); }
  SEGKIT_AVX512 __m512i blend(M k, __m512i a, __m512i b) { return _mm512_mask_blend_epi64(k, a, b); }
};

// The same row as window_row_body, with AVX-512BW intrinsics. Counts include the cell itself
// (1..K for voters, 0 for ignored cells).
template <typename T, int R, int TIES, bool IGN, int OWN>
__attribute__((target("avx512f,avx512bw"))) void window_row_avx512(SEGKIT_ROW_ARGS) {
  using O = Z<T>;
  using M = typename O::M;
  constexpr index_t L = 64 / sizeof(T);
  constexpr int K = 3 * R;
  const int own_i = OWN >= 0 ? OWN : own;
  const T* own_ptr = top + (own_i / 3) * ld + own_i % 3;
  const __m512i one = O::set1(1), zero = _mm512_setzero_si512();
  const __m512i vmax = O::set1(std::numeric_limits<T>::max()), vign = O::set1(ign);
  for (index_t x0 = 0; x0 < n; x0 += L) {
    const index_t x = x0 + L <= n ? x0 : n - L;  // the last block overlaps the one before
    __m512i v[K], c[K];
#pragma GCC unroll 9
    for (int i = 0; i < K; ++i) {
      v[i] = _mm512_loadu_si512(top + (i / 3) * ld + x + i % 3);
      c[i] = one;
    }
#pragma GCC unroll 9
    for (int i = 0; i < K; ++i) {
#pragma GCC unroll 9
      for (int j = i + 1; j < K; ++j) {
        const M k = O::eq(v[i], v[j]);
        c[i] = O::inc(c[i], k, one);
        c[j] = O::inc(c[j], k, one);
      }
    }
    if (IGN) {
#pragma GCC unroll 9
      for (int i = 0; i < K; ++i) c[i] = O::maskz(O::ne(v[i], vign), c[i]);
    }
    __m512i m = c[0];
#pragma GCC unroll 9
    for (int i = 1; i < K; ++i) m = O::max(m, c[i]);
    const __m512i vo = OWN >= 0 ? v[OWN >= 0 ? OWN : 0] : _mm512_loadu_si512(own_ptr + x);
    __m512i res;
    if (TIES == TIES_FIRST) {
      res = v[K - 1];
#pragma GCC unroll 9
      for (int i = K - 2; i >= 0; --i) res = O::blend(O::eq(c[i], m), res, v[i]);
    } else {
      res = vmax;
#pragma GCC unroll 9
      for (int i = 0; i < K; ++i) res = O::min_if(res, O::eq(c[i], m), v[i]);
      if (TIES == TIES_KEEP) {
        __m512i co;
        if (OWN >= 0) {
          co = c[OWN >= 0 ? OWN : 0];
        } else {
          co = zero;
#pragma GCC unroll 9
          for (int i = 0; i < K; ++i) co = O::inc(co, O::eq(vo, v[i]), one);
          if (IGN) co = O::maskz(O::ne(vo, vign), co);
        }
        res = O::blend(O::eq(co, m), res, vo);
      }
    }
    if (IGN) res = O::blend(O::eq(m, zero) | O::eq(vo, vign), res, vo);
    _mm512_storeu_si512(out + x, res);
  }
}

struct IsaAvx512 {
  static constexpr int bytes = 64;
  template <typename T, int R, int TIES, bool IGN, int OWN>
  static void row(SEGKIT_ROW_ARGS) {
    window_row_avx512<T, R, TIES, IGN, OWN>(SEGKIT_ROW_PASS);
  }
};
#else
using IsaAvx2 = IsaBase;
using IsaAvx512 = IsaBase;
#endif

// The row routine for windows of R rows; `own` >= 0 asks for the compile-time variant
// (keep ties only: the others do not read the own cell's count).
template <typename Isa, typename T, int R, bool IGN>
RowFn<T> pick_row(int ties, int own) {
  if (ties == TIES_FIRST) return &Isa::template row<T, R, TIES_FIRST, IGN, kRuntimeOwn>;
  if (ties == TIES_SMALLEST) return &Isa::template row<T, R, TIES_SMALLEST, IGN, kRuntimeOwn>;
  if (R == 3 && own == 4) return &Isa::template row<T, R, TIES_KEEP, IGN, 4>;
  if (R == 3 && own == 0) return &Isa::template row<T, R, TIES_KEEP, IGN, 0>;
  return &Isa::template row<T, R, TIES_KEEP, IGN, kRuntimeOwn>;
}

template <typename Isa, typename T>
RowFn<T> pick_row(int rows, int ties, bool ign, int own) {
  if (rows == 3) return ign ? pick_row<Isa, T, 3, true>(ties, own)
                            : pick_row<Isa, T, 3, false>(ties, own);
  return ign ? pick_row<Isa, T, 2, true>(ties, own) : pick_row<Isa, T, 2, false>(ties, own);
}

// The row routine for the widest active ISA whose vector fits in a row of `width` windows,
// and its vector width in elements (0 and nullptr when even the narrowest does not fit).
template <typename T>
RowFn<T> pick_row(int rows, int ties, bool ign, int own, index_t width, index_t* lanes) {
  const Isa isa = active_isa();
  if (isa == Isa::Avx512 && width >= IsaAvx512::bytes / static_cast<index_t>(sizeof(T))) {
    *lanes = IsaAvx512::bytes / sizeof(T);
    return pick_row<IsaAvx512, T>(rows, ties, ign, own);
  }
  if (isa != Isa::Base && width >= IsaAvx2::bytes / static_cast<index_t>(sizeof(T))) {
    *lanes = IsaAvx2::bytes / sizeof(T);
    return pick_row<IsaAvx2, T>(rows, ties, ign, own);
  }
  if (width >= IsaBase::bytes / static_cast<index_t>(sizeof(T))) {
    *lanes = IsaBase::bytes / sizeof(T);
    return pick_row<IsaBase, T>(rows, ties, ign, own);
  }
  *lanes = 0;
  return nullptr;
}

// One pixel of a window of at most 3x3, gathered first; the usual clipped sizes (2x2, 2x3,
// 3x3) get fully unrolled counting loops.
template <typename T>
T mode_small(const T* img, index_t ld, int H, int W, int r, int c, int anchor, int ties,
             bool has_ignore, T ignore) {
  const mode::Window w = mode::window_at(r, c, H, W, 3, anchor);
  T vals[9];
  int n = 0;
  for (int i = w.r0; i < w.r1; ++i)
    for (int j = w.c0; j < w.c1; ++j) vals[n++] = img[i * ld + j];
  const mode::ArrayWindow<T> get = {vals};
  const T own = img[r * ld + c];
  switch (n) {
    case 4: return mode::mode_select<T, 4>(get, n, own, ties, has_ignore, ignore);
    case 6: return mode::mode_select<T, 6>(get, n, own, ties, has_ignore, ignore);
    case 9: return mode::mode_select<T, 9>(get, n, own, ties, has_ignore, ignore);
    default: return mode::mode_select<T, 0>(get, n, own, ties, has_ignore, ignore);
  }
}

// Windows larger than 3x3: gather the voters, sort a copy, and read the counts off the runs.
// O(n log n) per pixel for n window pixels; `buf` and `sorted` hold n values each.
template <typename T>
T mode_sorted(const T* img, index_t ld, int H, int W, int r, int c, int size, int anchor, int ties,
              bool has_ignore, T ignore, T* buf, T* sorted) {
  const T own = img[r * ld + c];
  if (has_ignore && own == ignore) return own;
  const mode::Window w = mode::window_at(r, c, H, W, size, anchor);
  int n = 0;
  for (int i = w.r0; i < w.r1; ++i)
    for (int j = w.c0; j < w.c1; ++j) {
      const T v = img[i * ld + j];
      if (!(has_ignore && v == ignore)) buf[n++] = v;
    }
  if (n == 0) return own;
  std::copy(buf, buf + n, sorted);
  std::sort(sorted, sorted + n);
  int best_count = 0, own_count = 0;
  T smallest = own;
  for (int i = 0; i < n;) {
    int j = i + 1;
    while (j < n && sorted[j] == sorted[i]) ++j;
    if (j - i > best_count) {  // ascending scan: the first maximum is the smallest label
      best_count = j - i;
      smallest = sorted[i];
    }
    if (sorted[i] == own) own_count = j - i;
    i = j;
  }
  if (ties == TIES_KEEP) return own_count == best_count ? own : smallest;
  if (ties == TIES_SMALLEST) return smallest;
  for (int k = 0; k < n; ++k) {  // FIRST: the earliest voter (row-major) with the top count
    const auto range = std::equal_range(sorted, sorted + n, buf[k]);
    if (range.second - range.first == best_count) return buf[k];
  }
  return smallest;  // unreachable
}

template <typename T>
void check_args(const ModeFilterArgs& a) {
  if (a.n < 0 || a.h < 0 || a.w < 0)
    throw std::invalid_argument("mode_filter: negative shape");
  if (a.size < 1 || a.size % 2 == 0)
    throw std::invalid_argument("mode_filter: size must be a positive odd integer, got " +
                                std::to_string(a.size));
  if (a.anchor != mode::ANCHOR_CENTER && a.anchor != mode::ANCHOR_TOPLEFT)
    throw std::invalid_argument("mode_filter: bad anchor code " + std::to_string(a.anchor));
  if (a.ties != TIES_KEEP && a.ties != TIES_SMALLEST && a.ties != TIES_FIRST)
    throw std::invalid_argument("mode_filter: bad ties code " + std::to_string(a.ties));
  if (a.has_ignore && (a.ignore < static_cast<long long>(std::numeric_limits<T>::min()) ||
                       a.ignore > static_cast<long long>(std::numeric_limits<T>::max())))
    throw std::invalid_argument("mode_filter: ignore_index " + std::to_string(a.ignore) +
                                " is out of the label dtype's range");
  if (a.h > std::numeric_limits<int>::max() || a.w > std::numeric_limits<int>::max())
    throw std::invalid_argument("mode_filter: image side larger than 2^31-1");
}

}  // namespace

template <typename T>
void mode_filter(const T* in, T* out, const ModeFilterArgs& a) {
  check_args<T>(a);
  const int H = static_cast<int>(a.h), W = static_cast<int>(a.w);
  const index_t rows = a.n * a.h;
  if (rows == 0 || W == 0) return;
  const T ign = static_cast<T>(a.ignore);
  const bool topleft = a.anchor == mode::ANCHOR_TOPLEFT;
  // Row routines: full 3-row windows with the usual own cell fixed, any own cell, 2-row windows.
  // The SIMD path covers the W - 2 full-width windows of a row and needs a vector of them.
  index_t lanes = 0;
  const int main_own = topleft ? 0 : 4;
  const RowFn<T> row3_main = pick_row<T>(3, a.ties, a.has_ignore, main_own, W - 2, &lanes);
  const RowFn<T> row3_any = pick_row<T>(3, a.ties, a.has_ignore, kRuntimeOwn, W - 2, &lanes);
  const RowFn<T> row2_any = pick_row<T>(2, a.ties, a.has_ignore, kRuntimeOwn, W - 2, &lanes);
  const bool simd = a.size == 3 && H >= 2 && lanes > 0;
  const int window = a.size * a.size;

#pragma omp parallel num_threads(max_threads())
  {
    std::vector<T> buf(a.size >= 5 ? 2 * static_cast<size_t>(window) : 0);
    auto scalar = [&](const T* img, T* o, int r, int c) {
      if (a.size == 3)
        o[c] = mode_small<T>(img, a.in_sh, H, W, r, c, a.anchor, a.ties, a.has_ignore, ign);
      else if (a.size >= 5)
        o[c] = mode_sorted<T>(img, a.in_sh, H, W, r, c, a.size, a.anchor, a.ties, a.has_ignore,
                              ign, buf.data(), buf.data() + window);
      else
        o[c] = mode::mode_pixel<T>(img, a.in_sh, H, W, r, c, a.size, a.anchor, a.ties,
                                   a.has_ignore, ign);
    };
#pragma omp for schedule(static)
    for (index_t rr = 0; rr < rows; ++rr) {
      const int r = static_cast<int>(rr % a.h);
      const T* img = in + (rr / a.h) * a.in_sn;
      T* o = out + rr * a.w;
      if (!simd) {
        for (int c = 0; c < W; ++c) scalar(img, o, r, c);
        continue;
      }
      int r0, r1;
      mode::window_span(r, H, 3, a.anchor, &r0, &r1);
      // The window of output column x + col_off starts at column x (col_off 1 when centred).
      const int col_off = topleft ? 0 : 1;
      const int own = 3 * (r - r0) + col_off;
      const RowFn<T> fn = r1 - r0 == 2 ? row2_any : own == main_own ? row3_main : row3_any;
      fn(img + r0 * a.in_sh, a.in_sh, o + col_off, W - 2, own, ign);
      if (topleft) {
        scalar(img, o, r, W - 2);
        scalar(img, o, r, W - 1);
      } else {
        scalar(img, o, r, 0);
        scalar(img, o, r, W - 1);
      }
    }
  }
}

template void mode_filter<uint8_t>(const uint8_t*, uint8_t*, const ModeFilterArgs&);
template void mode_filter<uint16_t>(const uint16_t*, uint16_t*, const ModeFilterArgs&);
template void mode_filter<int32_t>(const int32_t*, int32_t*, const ModeFilterArgs&);
template void mode_filter<int64_t>(const int64_t*, int64_t*, const ModeFilterArgs&);

}  // namespace cpu
}  // namespace segkit
