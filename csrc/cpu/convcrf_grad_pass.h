// CPU trainable ConvCRF backward (convcrf_grad_backward.cpp): the pooled passes, A applied to
// the haloed pooled planes one or two pooled rows at a time, and the five parameter sums of a
// pooled row. Include it after the translation unit's `#pragma GCC optimize("no-trapping-math")`.
#pragma once
#include "cpu/convcrf_grad_rows.h"

namespace segkit {
namespace cpu {
namespace gradrows {

// out(p) = sum_d A(p, p+d) in(p+d) for pooled row r and CB classes from c0 (`in` haloed, `out`
// C planes of HWp), with the CB accumulators of a vector of pixels in registers.
template <int B, int CB>
SEGKIT_ALWAYS void pass_block(const Geo& g, const float* Ga, const float* in, float* out, int r,
                              int c0) {
  typedef vec_t<float, B> V;
  constexpr int L = Vec<float, B>::lanes;
  const int k = 2 * g.s + 1;
  const float* q = in + static_cast<index_t>(c0) * g.plane;
  for (int x0 = 0; x0 < g.Wp; x0 += L) {
    V acc[CB];
    for (int c = 0; c < CB; ++c) acc[c] = V{};
    for (int dy = -g.s; dy <= g.s; ++dy) {
      if (r + dy < 0 || r + dy >= g.Hp) continue;
      for (int dx = -g.s; dx <= g.s; ++dx) {
        const index_t o = (dy + g.s) * k + dx + g.s;
        const index_t wofs = o * g.ldg + x0;
        const V w = loadv<V>(Ga + wofs);
        const float* src = q + g.at(r + dy, x0 + dx);
        for (int c = 0; c < CB; ++c) acc[c] += w * loadv<V>(src + c * g.plane);
      }
    }
    const int nv = std::min(L, g.Wp - x0);
    for (int c = 0; c < CB; ++c)
      store_lanes(out + (c0 + c) * g.HWp + static_cast<index_t>(r) * g.Wp + x0, acc[c], nv);
  }
}

// pass_block for pooled rows r and r + 1 at once (Ga0, Ga1 their kernels): each vector of `in`
// loaded once feeds both rows' accumulators where both reach it (pooled rows r - s + 1 to
// r + s), so the pass loads about half as much. Each output adds its terms in pass_block's
// order (dy, then dx, ascending): the same bits.
template <int B, int CB>
SEGKIT_ALWAYS void pass_block2(const Geo& g, const float* Ga0, const float* Ga1, const float* in,
                               float* out, int r, int c0) {
  typedef vec_t<float, B> V;
  constexpr int L = Vec<float, B>::lanes;
  const int k = 2 * g.s + 1;
  const float* q = in + static_cast<index_t>(c0) * g.plane;
  for (int x0 = 0; x0 < g.Wp; x0 += L) {
    V acc0[CB], acc1[CB];
    for (int c = 0; c < CB; ++c) acc0[c] = V{}, acc1[c] = V{};
    for (int dy = -g.s; dy <= g.s + 1; ++dy) {  // the row of `in`: r + dy
      if (r + dy < 0 || r + dy >= g.Hp) continue;
      const bool on0 = dy <= g.s, on1 = dy - 1 >= -g.s;  // row r's offset dy, row r + 1's dy - 1
      for (int dx = -g.s; dx <= g.s; ++dx) {
        const float* src = q + g.at(r + dy, x0 + dx);
        const index_t col = dx + g.s;
        if (on0 && on1) {
          const V w0 = loadv<V>(Ga0 + ((dy + g.s) * k + col) * g.ldg + x0);
          const V w1 = loadv<V>(Ga1 + ((dy - 1 + g.s) * k + col) * g.ldg + x0);
          for (int c = 0; c < CB; ++c) {
            const V v = loadv<V>(src + c * g.plane);
            acc0[c] += w0 * v;
            acc1[c] += w1 * v;
          }
        } else if (on0) {
          const V w0 = loadv<V>(Ga0 + ((dy + g.s) * k + col) * g.ldg + x0);
          for (int c = 0; c < CB; ++c) acc0[c] += w0 * loadv<V>(src + c * g.plane);
        } else {
          const V w1 = loadv<V>(Ga1 + ((dy - 1 + g.s) * k + col) * g.ldg + x0);
          for (int c = 0; c < CB; ++c) acc1[c] += w1 * loadv<V>(src + c * g.plane);
        }
      }
    }
    const int nv = std::min(L, g.Wp - x0);
    for (int c = 0; c < CB; ++c) {
      float* o = out + (c0 + c) * g.HWp + static_cast<index_t>(r) * g.Wp + x0;
      store_lanes(o, acc0[c], nv);
      store_lanes(o + g.Wp, acc1[c], nv);
    }
  }
}

// The five parameter sums of pooled row r: S(p, d) = sum_c R_c(p) Qb_c(p+d) (both haloed).
// One vector of pixels at a time over every offset, so that R_c(p) and the rows of Qb around
// it stay in L1 (offsets outside would stream every class plane once per offset); the row's
// partials go to double once per vector of pixels.
template <int B>
SEGKIT_ALWAYS void sums_row(const Geo& g, const Image& im, const float* Gp, const float* Gc,
                            const float* R, const float* qb, int r, double* sums) {
  typedef vec_t<float, B> V;
  constexpr int L = Vec<float, B>::lanes;
  const int k = 2 * g.s + 1;
  const float* f = im.featH.data();
  const int dy0 = std::max(-g.s, -r), dy1 = std::min(g.s, g.Hp - 1 - r);
  double t[kGradSums] = {0, 0, 0, 0, 0};
  for (int x0 = 0; x0 < g.Wp; x0 += L) {
    const index_t hp = g.at(r, x0);
    V fp[kFeatures];
    for (int ff = 0; ff < kFeatures; ++ff) fp[ff] = loadv<V>(f + ff * g.plane + hp);
    V v0{}, v1{}, v2{}, v3{}, v4{};
    for (int dy = dy0; dy <= dy1; ++dy) {
      for (int dx = -g.s; dx <= g.s; ++dx) {
        const index_t o = (dy + g.s) * k + dx + g.s;
        const index_t hq = g.at(r + dy, x0 + dx);
        // four partial sums over the classes (one accumulator would chain C dependent FMAs)
        V S0{}, S1{}, S2{}, S3{};
        int c = 0;
        for (; c + 4 <= g.C; c += 4) {
          const float* rc = R + c * g.plane + hp;
          const float* qc = qb + c * g.plane + hq;
          S0 += loadv<V>(rc) * loadv<V>(qc);
          S1 += loadv<V>(rc + g.plane) * loadv<V>(qc + g.plane);
          S2 += loadv<V>(rc + 2 * g.plane) * loadv<V>(qc + 2 * g.plane);
          S3 += loadv<V>(rc + 3 * g.plane) * loadv<V>(qc + 3 * g.plane);
        }
        for (; c < g.C; ++c)
          S0 += loadv<V>(R + c * g.plane + hp) * loadv<V>(qb + c * g.plane + hq);
        const V S = (S0 + S1) + (S2 + S3);
        V dpos{}, dcol{};
        for (int ff = 0; ff < kFeatures; ++ff) {
          const V d = loadv<V>(f + ff * g.plane + hq) - fp[ff];
          if (ff < 2)
            dpos += d * d;
          else
            dcol += d * d;
        }
        const index_t wofs = o * g.ldg + x0;
        const V ps = loadv<V>(Gp + wofs) * S, cs = loadv<V>(Gc + wofs) * S;
        v0 += ps;
        v1 += cs;
        v2 += dpos * ps;
        v3 += dcol * cs;
        v4 += dpos * cs;
      }
    }
    float l[5][L];
    std::memcpy(l[0], &v0, sizeof v0), std::memcpy(l[1], &v1, sizeof v1);
    std::memcpy(l[2], &v2, sizeof v2), std::memcpy(l[3], &v3, sizeof v3);
    std::memcpy(l[4], &v4, sizeof v4);
    for (int j = 0; j < kGradSums; ++j)
      for (int i = 0; i < L; ++i) t[j] += l[j][i];
  }
  for (int j = 0; j < kGradSums; ++j) sums[j] = t[j];
}

// out = A in for pooled rows r .. r + n - 1 (n = 1 or 2; Ga: n kernels, kernel_size floats
// apart), every class, in balanced blocks of classes (up to 8, or 4 for two rows below
// AVX-512: their accumulators must fit the registers). `in` haloed, `out` C planes of HWp.
// The backward's pass; the forward has its own (convcrf_message.h).
template <int B>
SEGKIT_ALWAYS void pass_classes(const Geo& g, const float* Ga, index_t kernel_size,
                                const float* in, float* out, int r, int n) {
  const int most = n == 2 && B < 64 ? 4 : 8;
  const int chunks = (g.C + most - 1) / most, base = g.C / chunks, extra = g.C % chunks;
  int c0 = 0;
  for (int ch = 0; ch < chunks; ++ch) {
    const int cb = base + (ch < extra ? 1 : 0);
    dispatch_exact<1, 2, 3, 4, 5, 6, 7, 8>(cb, [&](auto m) SEGKIT_BODY {
      if (n == 2)
        pass_block2<B, decltype(m)::value>(g, Ga, Ga + kernel_size, in, out, r, c0);
      else
        pass_block<B, decltype(m)::value>(g, Ga, in, out, r, c0);
    });
    c0 += cb;
  }
}

// out = A in for pooled rows r .. r + n - 1 (pass_classes), and each row's five parameter sums
// against `qb` (sums: n x kGradSums). Gp, Gc, Ga: n rows' Gaussians and kernels each,
// kernel_size floats apart.
inline void pass_rows(const Geo& g, const Image& im, const float* Gp, const float* Gc,
                      const float* Ga, index_t kernel_size, const float* in, const float* qb,
                      float* out, int r, int n, double* sums) {
  dispatch_isa([&](auto isa) SEGKIT_BODY {
    constexpr int B = decltype(isa)::bytes;
    pass_classes<B>(g, Ga, kernel_size, in, out, r, n);
    for (int q = 0; q < n; ++q)
      sums_row<B>(g, im, Gp + q * kernel_size, Gc + q * kernel_size, in, qb, r + q,
                  sums + q * kGradSums);
  });
}

// The pooled message of rows r .. r + n - 1, Mb = A qb (qb haloed), into Mb (C planes of HWp).
inline void message_pass_rows(const Geo& g, const float* Ga, index_t kernel_size, const float* qb,
                              float* Mb, int r, int n) {
  dispatch_isa([&](auto isa) SEGKIT_BODY {
    pass_classes<decltype(isa)::bytes>(g, Ga, kernel_size, qb, Mb, r, n);
  });
}

}  // namespace gradrows
}  // namespace cpu
}  // namespace segkit
