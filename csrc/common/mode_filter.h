// Mode (majority) filter: the per-pixel definition shared by the CPU and CUDA backends.
//
// The contract (GUIDE section 3) in one place:
//   * anchor CENTER: the size x size window centred on the pixel, clipped at the border.
//   * anchor TOPLEFT: the window whose top-left corner is (min(r, H-size), min(c, W-size)),
//     clipped to the image when the image is smaller than the window.
//   * ties KEEP: the pixel's own label if it is among the most frequent, else the smallest;
//     SMALLEST: the smallest most frequent label; FIRST: the first most frequent label in
//     row-major order inside the window.
//   * ignore: pixels with the ignore label neither vote nor change; no voter -> unchanged.
#pragma once
#include "macros.h"

namespace segkit {
namespace mode {

enum Anchor { ANCHOR_CENTER = 0, ANCHOR_TOPLEFT = 1 };
enum Ties { TIES_KEEP = 0, TIES_SMALLEST = 1, TIES_FIRST = 2 };

// Half-open window [r0, r1) x [c0, c1) that votes for output pixel (r, c).
struct Window {
  int r0, r1, c0, c1;
};

SEGKIT_HD SEGKIT_INLINE void window_span(int p, int n, int size, int anchor, int* lo, int* hi) {
  if (anchor == ANCHOR_CENTER) {
    *lo = max_of(p - size / 2, 0);
    *hi = min_of(p + size / 2 + 1, n);
  } else {
    *lo = max_of(min_of(p, n - size), 0);
    *hi = min_of(*lo + size, n);
  }
}

SEGKIT_HD SEGKIT_INLINE Window window_at(int r, int c, int H, int W, int size, int anchor) {
  Window w;
  window_span(r, H, size, anchor, &w.r0, &w.r1);
  window_span(c, W, size, anchor, &w.c0, &w.c1);
  return w;
}

// Window values in row-major order, read from the image (any window size).
template <typename T>
struct ImageWindow {
  const T* img;
  index_t ld;
  int r0, c0, cols;
  SEGKIT_HD SEGKIT_INLINE T operator()(int i) const {
    return img[static_cast<index_t>(r0 + i / cols) * ld + c0 + i % cols];
  }
};

// Window values already gathered into a small array (registers on a GPU when N is fixed).
template <typename T>
struct ArrayWindow {
  const T* vals;
  SEGKIT_HD SEGKIT_INLINE T operator()(int i) const { return vals[i]; }
};

// The tie rules applied to n window values, by pairwise counting: O(n^2), no scratch memory,
// so it runs unchanged on a GPU thread. N > 0 fixes n at compile time (loops unroll).
template <typename T, int N, typename Get>
SEGKIT_HD T mode_select(const Get& get, int n, T own, int ties, bool has_ignore, T ignore) {
  if (has_ignore && own == ignore) return own;
  if (N > 0) n = N;
  int best_count = 0, own_count = 0;
  T best = own;
  // Branch-free body (selects, no early exits): unrolls cleanly for a fixed N.
SEGKIT_UNROLL
  for (int i = 0; i < (N > 0 ? N : n); ++i) {
    const T v = get(i);
    int count = 0;
SEGKIT_UNROLL
    for (int j = 0; j < (N > 0 ? N : n); ++j) count += get(j) == v;
    count = (has_ignore && v == ignore) ? 0 : count;  // ignored cells do not vote
    own_count = v == own ? count : own_count;
    // FIRST keeps the earliest maximum (strict >); SMALLEST and KEEP prefer smaller labels.
    const bool better = count > best_count ||
                        (ties != TIES_FIRST && count > 0 && count == best_count && v < best);
    best_count = better ? count : best_count;
    best = better ? v : best;
  }
  if (best_count == 0) return own;  // no voter in the window
  if (ties == TIES_KEEP && own_count == best_count) return own;
  return best;
}

// Windows of up to this many pixels are gathered into a local array before counting (no
// index arithmetic in the O(n^2) loop); larger ones are read from the image.
constexpr int kGatherMax = 49;

// Output pixel (r, c) of one image whose rows are `ld` elements apart.
template <typename T>
SEGKIT_HD T mode_pixel(const T* img, index_t ld, int H, int W, int r, int c, int size, int anchor,
                       int ties, bool has_ignore, T ignore) {
  const Window w = window_at(r, c, H, W, size, anchor);
  const int cols = w.c1 - w.c0, n = (w.r1 - w.r0) * cols;
  const T own = img[r * ld + c];
  if (n <= kGatherMax) {
    T vals[kGatherMax];
    int k = 0;
    for (int i = w.r0; i < w.r1; ++i)
      for (int j = w.c0; j < w.c1; ++j) vals[k++] = img[i * ld + j];
    const ArrayWindow<T> get = {vals};
    return mode_select<T, 0>(get, n, own, ties, has_ignore, ignore);
  }
  const ImageWindow<T> get = {img, ld, w.r0, w.c0, cols};
  return mode_select<T, 0>(get, n, own, ties, has_ignore, ignore);
}

}  // namespace mode
}  // namespace segkit
