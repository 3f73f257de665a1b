// CPU mode filter: OpenMP over rows, a SIMD fast path for the 3x3 window and the shared
// per-pixel definition (common/mode_filter.h) everywhere else.
//
// The 3x3 fast path counts, for each of the 9 window cells, how many other cells hold the
// same label (36 pairwise comparisons), for a whole vector of neighbouring output pixels at
// once. It is written with GCC/Clang vector extensions and compiled once per instruction set
// by cpu/simd.h's dispatch (the module itself stays baseline x86-64). The AVX-512 variant
// uses intrinsics instead: mask registers make each counted pair one compare and two masked
// adds, which the vector-extension form cannot express.

// The intrinsics headers initialise their undefined vectors from themselves.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/mode_filter.h"
#include "cpu/mode_filter.h"
#include "cpu/mode_filter_avx512.h"
#include "cpu/runtime.h"
#include "cpu/simd.h"

namespace segkit {
namespace cpu {
namespace {

using mode::ANCHOR_CENTER;
using mode::TIES_FIRST;
using mode::TIES_KEEP;
using mode::TIES_SMALLEST;

constexpr int kRuntimeOwn = -1;

// out[x] = mode of the window of R rows (starting at `top`, rows `ld` apart) and columns
// x, x+1, x+2, for x in [0, n); n >= lanes. `own` is the row-major window index (0 .. 3R-1)
// of the output pixel's own label; OWN fixes it at compile time for the common cases,
// kRuntimeOwn reads it from `own`.
template <typename T, int B, int R, int TIES, bool IGN, int OWN>
SEGKIT_ALWAYS void window_row_body(const T* __restrict top, index_t ld,
                                                           T* __restrict out, index_t n, int own,
                                                           T ign) {
  typedef vec_t<T, B> V;
  constexpr index_t L = Vec<T, B>::lanes;
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


// One row of windows of R rows on instruction set I: the intrinsics form on AVX-512, the
// vector-extension form on the others.
template <class I, typename T, int R, int TIES, bool IGN, int OWN>
SEGKIT_ALWAYS void window_row(SEGKIT_ROW_ARGS) {
#if SEGKIT_X86
  if constexpr (I::id == Isa::Avx512) {
    mode_avx512::window_row_avx512<T, R, TIES, IGN, OWN>(SEGKIT_ROW_PASS);
    return;
  }
#endif
  window_row_body<T, I::bytes, R, TIES, IGN, OWN>(SEGKIT_ROW_PASS);
}

// The row of windows of `rows` rows whose top row is `top`, on instruction set `isa`. For keep
// ties with the own cell where full windows have it (`main_own`), that cell is fixed at
// compile time; the other tie rules do not read the own cell's count.
template <typename T>
void run_row(Isa isa, int rows, int ties, bool has_ignore, int main_own, SEGKIT_ROW_ARGS) {
  dispatch_exact<2, 3>(rows, [&](auto r_) SEGKIT_BODY {
    constexpr int R = decltype(r_)::value;
    dispatch_bool(has_ignore, [&](auto ign_) SEGKIT_BODY {
      constexpr bool IGN = decltype(ign_)::value;
      dispatch_exact<TIES_KEEP, TIES_SMALLEST, TIES_FIRST>(ties, [&](auto ties_) SEGKIT_BODY {
        constexpr int TIES = decltype(ties_)::value;
        const auto row = [&](auto own_) SEGKIT_BODY {
          dispatch_isa(isa, [&](auto tag) SEGKIT_BODY {
            window_row<decltype(tag), T, R, TIES, IGN, decltype(own_)::value>(SEGKIT_ROW_PASS);
          });
        };
        if constexpr (TIES == TIES_KEEP && R == 3) {
          if (own == main_own) {
            if (main_own == 4) return row(int_c<4>{});
            return row(int_c<0>{});
          }
        }
        row(int_c<kRuntimeOwn>{});
      });
    });
  });
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
  // The SIMD path covers the W - 2 full-width windows of a row and needs a vector of them.
  Isa isa = Isa::Base;
  const int main_own = topleft ? 0 : 4;
  const bool simd = a.size == 3 && H >= 2 &&
                    isa_fitting(static_cast<index_t>(W - 2) * sizeof(T), &isa);
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
      run_row<T>(isa, r1 - r0, a.ties, a.has_ignore, main_own, img + r0 * a.in_sh, a.in_sh,
                 o + col_off, W - 2, own, ign);
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
