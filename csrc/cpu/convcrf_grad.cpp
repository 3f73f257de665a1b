// CPU trainable ConvCRF: forward keeping the pooled message of every iteration, and the fused
// backward (GUIDE section 3, "The trainable ConvCRF"). OpenMP over rows; the inner loops run
// along a row (contiguous) so that the compiler vectorises them.
//
// Memory. The forward keeps per iteration only the pooled message Mb_t (C*Hp*Wp floats: C*H*W
// at blur 1, C*H*W/b^2 at blur b). The backward recomputes from the unary and Mb_{t-1} what
// it needs: U, Q_{t-1} = softmax(a U + w M'_{t-1}) (full resolution, for the softmax Jacobian
// and the pooled Qb_{t-1}) and M'_t. Working memory, for one image at a time: U, G, Q_{t-1}
// (3 C*H*W), the column adjoint of the upsampling (C*H*W/b, blur > 1 only), a few pooled
// C*Hp*Wp planes, and the Gaussian planes Gp, Gc of the image (2 k*k Hp*Wp floats, computed
// once per image and shared by every class, iteration and pass). No (C, k*k, ...) tensor.
//
// Determinism: every output element is written by one thread; sums over pixels go into
// per-row (or per-block-of-rows) partials in double, added in a fixed order afterwards.

#pragma GCC optimize("no-trapping-math")

#include "cpu/convcrf_grad.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "common/convcrf.h"
#include "common/convcrf_grad.h"
#include "cpu/runtime.h"
#include "cpu/simd.h"

namespace segkit {
namespace cpu {
namespace {

using crfgrad::kFeatures;
using crfgrad::kGradSums;

int thread_id() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

constexpr int kRowBlock = 8;  // rows per partial sum of dw / dcompat (fixed: deterministic)

constexpr index_t kPad = 16;  // rows padded to whole vectors of the widest ISA (floats)

inline index_t round_up(index_t x, index_t m) { return (x + m - 1) / m * m; }

struct Geo {
  int C, H, W, b, s, Hp, Wp, p0, p1;
  index_t HW, HWp;
  // haloed pooled planes (Qb, R and the features the passes read): s zero rows and columns
  // around the grid, rows `ld` apart, planes `plane` apart; element (r, x) at `at(r, x)`
  index_t ld, plane, ldg;  // ldg: row stride of the Gaussian planes (Hp rows, zero tails)
  index_t at(int r, int x) const { return (s + r) * ld + s + x; }
  std::vector<int> xi0, xi1, yi0, yi1, cellx;
  std::vector<float> xl0, xl1, yl0, yl1;
  // adjoint of the vertical interpolation: for pooled row r, the (full row, coefficient) pairs
  std::vector<std::vector<std::pair<int, float>>> rows_of;
};

Geo make_geo(const ConvCrfGradArgs& a) {
  Geo g;
  g.C = static_cast<int>(a.c);
  g.H = static_cast<int>(a.h);
  g.W = static_cast<int>(a.w);
  g.b = a.blur;
  g.s = a.filter_size / 2;
  crf::pool_geometry(g.H, g.b, &g.Hp, &g.p0);
  crf::pool_geometry(g.W, g.b, &g.Wp, &g.p1);
  g.HW = static_cast<index_t>(g.H) * g.W;
  g.HWp = static_cast<index_t>(g.Hp) * g.Wp;
  g.ld = round_up(round_up(g.Wp, kPad) + 2 * g.s, kPad);
  g.plane = (g.Hp + 2 * static_cast<index_t>(g.s)) * g.ld;
  g.ldg = round_up(g.Wp, kPad);
  g.xi0.resize(g.W), g.xi1.resize(g.W), g.xl0.resize(g.W), g.xl1.resize(g.W);
  g.cellx.resize(g.W);
  for (int x = 0; x < g.W; ++x) {
    crf::bilinear_taps(x, g.p1, g.b, g.Wp, &g.xi0[x], &g.xi1[x], &g.xl0[x], &g.xl1[x]);
    g.cellx[x] = (x + g.p1) / g.b;
  }
  g.yi0.resize(g.H), g.yi1.resize(g.H), g.yl0.resize(g.H), g.yl1.resize(g.H);
  g.rows_of.resize(g.Hp);
  for (int i = 0; i < g.H; ++i) {
    crf::bilinear_taps(i, g.p0, g.b, g.Hp, &g.yi0[i], &g.yi1[i], &g.yl0[i], &g.yl1[i]);
    g.rows_of[g.yi0[i]].push_back({i, g.yl0[i]});
    g.rows_of[g.yi1[i]].push_back({i, g.yl1[i]});
  }
  return g;
}

void check_args(const ConvCrfGradArgs& a) {
  if (a.n < 0 || a.c < 1 || a.h < 0 || a.w < 0 || a.h > (1 << 30) || a.w > (1 << 30))
    throw std::invalid_argument("convcrf_grad: bad shape (n, c, h, w) = (" +
                                std::to_string(a.n) + ", " + std::to_string(a.c) + ", " +
                                std::to_string(a.h) + ", " + std::to_string(a.w) + ")");
  if (a.filter_size < 1 || a.filter_size % 2 == 0)
    throw std::invalid_argument("convcrf_grad: filter_size must be a positive odd integer, got " +
                                std::to_string(a.filter_size));
  if (a.blur < 1 || (a.blur > 1 && a.blur % 2 == 1))
    throw std::invalid_argument("convcrf_grad: blur must be 1 or even, got " +
                                std::to_string(a.blur));
  if (a.num_iter < 1)
    throw std::invalid_argument("convcrf_grad: num_iter must be >= 1, got " +
                                std::to_string(a.num_iter));
  if (a.unary_kind != crf::UNARY_LOGITS && a.unary_kind != crf::UNARY_PROBS)
    throw std::invalid_argument("convcrf_grad: bad unary_kind code " +
                                std::to_string(a.unary_kind));
  if (a.init != crf::INIT_CONVCRF && a.init != crf::INIT_SOFTMAX)
    throw std::invalid_argument("convcrf_grad: bad init code " + std::to_string(a.init));
}

// Per-image pooled features (unscaled), validity and inverse counts, full-resolution mask.
struct Image {
  std::vector<float> feat, valid, inv_count, fmask;
  std::vector<float> featH;  // the features in the haloed layout (kFeatures planes)
};

void prepare_image(const Geo& g, const float* img, const std::uint8_t* mask, Image& im) {
  im.feat.assign(kFeatures * g.HWp, 0.0f);
  im.valid.assign(g.HWp, 0.0f);
  im.inv_count.assign(g.HWp, 0.0f);
  im.fmask.resize(g.HW);
  for (index_t p = 0; p < g.HW; ++p) im.fmask[p] = mask == nullptr || mask[p] ? 1.0f : 0.0f;
#pragma omp parallel for schedule(dynamic, 4) num_threads(max_threads())
  for (int R = 0; R < g.Hp; ++R) {
    int y0, y1;
    crf::pool_span(R, g.p0, g.b, g.H, &y0, &y1);
    for (int X = 0; X < g.Wp; ++X) {
      int x0, x1;
      crf::pool_span(X, g.p1, g.b, g.W, &x0, &x1);
      double sum[kFeatures] = {0, 0, 0, 0, 0}, n = 0;
      for (int i = y0; i < y1; ++i)
        for (int j = x0; j < x1; ++j) {
          const index_t p = static_cast<index_t>(i) * g.W + j;
          if (im.fmask[p] == 0.0f) continue;
          n += 1;
          sum[0] += i;
          sum[1] += j;
          for (int ch = 0; ch < 3; ++ch) sum[2 + ch] += img[ch * g.HW + p];
        }
      const index_t q = static_cast<index_t>(R) * g.Wp + X;
      if (n == 0) continue;
      for (int f = 0; f < kFeatures; ++f) im.feat[f * g.HWp + q] = static_cast<float>(sum[f] / n);
      im.valid[q] = 1.0f;
      im.inv_count[q] = static_cast<float>(1.0 / n);
    }
  }
  im.featH.assign(kFeatures * g.plane, 0.0f);
  for (int f = 0; f < kFeatures; ++f)
    for (int R = 0; R < g.Hp; ++R)
      std::memcpy(im.featH.data() + f * g.plane + g.at(R, 0),
                  im.feat.data() + f * g.HWp + static_cast<index_t>(R) * g.Wp,
                  sizeof(float) * g.Wp);
}

// U of full-resolution row i (C rows `HW` apart) from the unary.
void unary_row(const Geo& g, int kind, const float* x, float* u, float* mx, float* sum) {
  const int W = g.W;
  if (kind == crf::UNARY_PROBS) {
    for (int c = 0; c < g.C; ++c)
      for (int j = 0; j < W; ++j) u[c * g.HW + j] = crf::log_f32(x[c * g.HW + j]);
    return;
  }
  for (int j = 0; j < W; ++j) mx[j] = x[j];
  for (int c = 1; c < g.C; ++c)
    for (int j = 0; j < W; ++j) mx[j] = std::max(mx[j], x[c * g.HW + j]);
  for (int j = 0; j < W; ++j) sum[j] = 0.0f;
  for (int c = 0; c < g.C; ++c)
    for (int j = 0; j < W; ++j) sum[j] += crf::exp_f32(x[c * g.HW + j] - mx[j]);
  for (int j = 0; j < W; ++j) sum[j] = crf::log_f32(sum[j]);
  for (int c = 0; c < g.C; ++c)
    for (int j = 0; j < W; ++j) u[c * g.HW + j] = (x[c * g.HW + j] - mx[j]) - sum[j];
}

// In-place softmax over C rows of W values, `cs` apart.
void softmax_row(float* p, int C, index_t cs, int W, float* mx, float* sum) {
  for (int j = 0; j < W; ++j) mx[j] = p[j];
  for (int c = 1; c < C; ++c)
    for (int j = 0; j < W; ++j) mx[j] = std::max(mx[j], p[c * cs + j]);
  for (int j = 0; j < W; ++j) sum[j] = 0.0f;
  for (int c = 0; c < C; ++c)
    for (int j = 0; j < W; ++j) {
      const float e = crf::exp_f32(p[c * cs + j] - mx[j]);
      p[c * cs + j] = e;
      sum[j] += e;
    }
  for (int j = 0; j < W; ++j) sum[j] = 1.0f / sum[j];
  for (int c = 0; c < C; ++c)
    for (int j = 0; j < W; ++j) p[c * cs + j] *= sum[j];
}

// The masked, upsampled message of full-resolution row i from the pooled Mb (C, Hp, Wp) into
// m (C rows of W), then M' = M + compat M into mp (mp = m without compat).
// The message upsampled along the rows of pooled row R: Me[c][R][j] = l0 Mb[c][R][i0] + l1
// Mb[c][R][i1] (blur > 1), C planes of Hp * W.
void upsample_row(const Geo& g, const float* Mb, int R, float* Me) {
  for (int c = 0; c < g.C; ++c) {
    const float* m = Mb + c * g.HWp + static_cast<index_t>(R) * g.Wp;
    float* e = Me + (static_cast<index_t>(c) * g.Hp + R) * g.W;
    for (int j = 0; j < g.W; ++j) e[j] = g.xl0[j] * m[g.xi0[j]] + g.xl1[j] * m[g.xi1[j]];
  }
}

// The masked, upsampled message of full-resolution row i from the pooled Mb (C, Hp, Wp) at
// blur 1, or from its row-upsampled Me (C, Hp, W, upsample_row) otherwise, into m (C rows of
// W), then M' = M + compat M into mp (mp = m without compat).
void message_row(const Geo& g, const Image& im, const float* Mb, const float* compat, int i,
                 float* m, float* mp) {
  const int W = g.W;
  const float h0 = g.yl0[i], h1 = g.yl1[i];
  const float* fm = im.fmask.data() + static_cast<index_t>(i) * W;
  for (int c = 0; c < g.C; ++c) {
    float* o = m + static_cast<index_t>(c) * W;
    if (g.b == 1) {
      const float* r0 = Mb + c * g.HWp + static_cast<index_t>(i) * g.Wp;
      for (int j = 0; j < W; ++j) o[j] = r0[j] * fm[j];
      continue;
    }
    const float* e0 = Mb + (static_cast<index_t>(c) * g.Hp + g.yi0[i]) * W;
    const float* e1 = Mb + (static_cast<index_t>(c) * g.Hp + g.yi1[i]) * W;
    for (int j = 0; j < W; ++j) o[j] = (h0 * e0[j] + h1 * e1[j]) * fm[j];
  }
  if (compat == nullptr) return;
  for (int c = 0; c < g.C; ++c) {
    float* o = mp + static_cast<index_t>(c) * W;
    std::memcpy(o, m + static_cast<index_t>(c) * W, sizeof(float) * W);
    for (int d = 0; d < g.C; ++d) {
      const float k = compat[c * g.C + d];
      const float* md = m + static_cast<index_t>(d) * W;
      for (int j = 0; j < W; ++j) o[j] += k * md[j];
    }
  }
}

// The masked b x b means of the full-resolution rows y0..y1 of q (C planes HW apart) into
// pooled row R of qb (C haloed planes).
void pool_rows(const Geo& g, const Image& im, const float* q, int R, float* qb) {
  int y0, y1;
  crf::pool_span(R, g.p0, g.b, g.H, &y0, &y1);
  for (int c = 0; c < g.C; ++c) {
    float* o = qb + c * g.plane + g.at(R, 0);
    if (g.b == 1) {
      const float* qi = q + c * g.HW + static_cast<index_t>(R) * g.W;
      const float* fm = im.fmask.data() + static_cast<index_t>(R) * g.W;
      const float* ic = im.inv_count.data() + static_cast<index_t>(R) * g.Wp;
      for (int X = 0; X < g.Wp; ++X) o[X] = (0.0f + qi[X] * fm[X]) * ic[X];
      continue;
    }
    for (int X = 0; X < g.Wp; ++X) o[X] = 0.0f;
    for (int i = y0; i < y1; ++i) {
      const float* qi = q + c * g.HW + static_cast<index_t>(i) * g.W;
      const float* fm = im.fmask.data() + static_cast<index_t>(i) * g.W;
      for (int j = 0; j < g.W; ++j) o[g.cellx[j]] += qi[j] * fm[j];
    }
    const float* ic = im.inv_count.data() + static_cast<index_t>(R) * g.Wp;
    for (int X = 0; X < g.Wp; ++X) o[X] *= ic[X];
  }
}

// The Gaussians of pooled row r at offset (dy, dx) for columns [xs, xe), validity included.
SEGKIT_ALWAYS void weight_row(const Geo& g, const Image& im, const crfgrad::Scales& sc, int r,
                              int dy, int dx, int xs, int xe, float* gp, float* gc) {
  const index_t fs = g.HWp;
  const float* fp = im.feat.data() + static_cast<index_t>(r) * g.Wp;
  const float* fq = im.feat.data() + static_cast<index_t>(r + dy) * g.Wp + dx;
  const float* vp = im.valid.data() + static_cast<index_t>(r) * g.Wp;
  const float* vq = vp + static_cast<index_t>(dy) * g.Wp + dx;
  for (int x = xs; x < xe; ++x) {
    float dpos, dcol, a, b;
    crfgrad::pair_distances(fp + x, fq + x, fs, &dpos, &dcol);
    crfgrad::pair_gaussians(dpos, dcol, sc, &a, &b);
    const float v = vp[x] * vq[x];
    gp[x] = a * v;
    gc[x] = b * v;
  }
}

// The k*k Gaussian planes of one image (Gp and Gc, each k*k planes of Hp*Wp; zero where p+d
// leaves the grid), computed once per image and shared by every class and iteration.
void weights_image(const Geo& g, const Image& im, const crfgrad::Scales& sc, float* Gp,
                   float* Gc) {
  const int k = 2 * g.s + 1;
#pragma omp parallel for schedule(dynamic, 4) num_threads(max_threads())
  for (int r = 0; r < g.Hp; ++r)
    dispatch_isa([&](auto) SEGKIT_BODY {
      for (int o = 0; o < k * k; ++o) {
        const int dy = o / k - g.s, dx = o % k - g.s;
        float* gp = Gp + (static_cast<index_t>(o) * g.Hp + r) * g.ldg;
        float* gc = Gc + (static_cast<index_t>(o) * g.Hp + r) * g.ldg;
        std::fill(gp, gp + g.ldg, 0.0f);
        std::fill(gc, gc + g.ldg, 0.0f);
        const int xs = std::max(0, -dx), xe = std::min(g.Wp, g.Wp - dx);
        if (r + dy < 0 || r + dy >= g.Hp || xe <= xs) continue;
        weight_row(g, im, sc, r, dy, dx, xs, xe, gp, gc);
      }
    });
}

// out(p) = sum_d A(p, p+d) in(p+d) for pooled row r and CB classes from c0 (`in` haloed, `out`
// C planes of HWp), with the CB accumulators of a vector of pixels in registers.
template <int B, int CB>
SEGKIT_ALWAYS void pass_block(const Geo& g, const ConvCrfGradArgs& a, const float* Gp,
                              const float* Gc, const float* in, float* out, int r, int c0) {
  typedef vec_t<float, B> V;
  constexpr int L = Vec<float, B>::lanes;
  const int k = 2 * g.s + 1;
  const index_t gstride = static_cast<index_t>(g.Hp) * g.ldg;
  const float* q = in + static_cast<index_t>(c0) * g.plane;
  for (int x0 = 0; x0 < g.Wp; x0 += L) {
    V acc[CB];
    for (int c = 0; c < CB; ++c) acc[c] = V{};
    for (int dy = -g.s; dy <= g.s; ++dy) {
      if (r + dy < 0 || r + dy >= g.Hp) continue;
      for (int dx = -g.s; dx <= g.s; ++dx) {
        const index_t o = (dy + g.s) * k + dx + g.s;
        const index_t wofs = o * gstride + static_cast<index_t>(r) * g.ldg + x0;
        const V w = a.pos_compat * loadv<V>(Gp + wofs) + a.col_compat * loadv<V>(Gc + wofs);
        const float* src = q + g.at(r + dy, x0 + dx);
        for (int c = 0; c < CB; ++c) acc[c] += w * loadv<V>(src + c * g.plane);
      }
    }
    const int nv = std::min(L, g.Wp - x0);
    for (int c = 0; c < CB; ++c)
      store_lanes(out + (c0 + c) * g.HWp + static_cast<index_t>(r) * g.Wp + x0, acc[c], nv);
  }
}

// The five parameter sums of pooled row r: S(p, d) = sum_c R_c(p) Qb_c(p+d) (both haloed).
template <int B>
SEGKIT_ALWAYS void sums_row(const Geo& g, const Image& im, const float* Gp, const float* Gc,
                            const float* R, const float* qb, int r, double* sums) {
  typedef vec_t<float, B> V;
  constexpr int L = Vec<float, B>::lanes;
  const int k = 2 * g.s + 1;
  const index_t gstride = static_cast<index_t>(g.Hp) * g.ldg;
  const float* f = im.featH.data();
  double t[kGradSums] = {0, 0, 0, 0, 0};
  for (int dy = -g.s; dy <= g.s; ++dy) {
    if (r + dy < 0 || r + dy >= g.Hp) continue;
    for (int dx = -g.s; dx <= g.s; ++dx) {
      const index_t o = (dy + g.s) * k + dx + g.s;
      V v0{}, v1{}, v2{}, v3{}, v4{};
      for (int x0 = 0; x0 < g.Wp; x0 += L) {
        const index_t hp = g.at(r, x0), hq = g.at(r + dy, x0 + dx);
        V S{};
        for (int c = 0; c < g.C; ++c)
          S += loadv<V>(R + c * g.plane + hp) * loadv<V>(qb + c * g.plane + hq);
        V dpos{}, dcol{};
        for (int ff = 0; ff < kFeatures; ++ff) {
          const V d = loadv<V>(f + ff * g.plane + hq) - loadv<V>(f + ff * g.plane + hp);
          if (ff < 2)
            dpos += d * d;
          else
            dcol += d * d;
        }
        const index_t wofs = o * gstride + static_cast<index_t>(r) * g.ldg + x0;
        const V ps = loadv<V>(Gp + wofs) * S, cs = loadv<V>(Gc + wofs) * S;
        v0 += ps;
        v1 += cs;
        v2 += dpos * ps;
        v3 += dcol * cs;
        v4 += dpos * cs;
      }
      float l[5][L];
      std::memcpy(l[0], &v0, sizeof v0), std::memcpy(l[1], &v1, sizeof v1);
      std::memcpy(l[2], &v2, sizeof v2), std::memcpy(l[3], &v3, sizeof v3);
      std::memcpy(l[4], &v4, sizeof v4);
      for (int j = 0; j < kGradSums; ++j)
        for (int i = 0; i < L; ++i) t[j] += l[j][i];
    }
  }
  for (int j = 0; j < kGradSums; ++j) sums[j] = t[j];
}

// out = A in for pooled row r, every class (classes in blocks of up to 8); with `sums`, also
// the row's five parameter sums against `qb`.
void pass_row(const Geo& g, const Image& im, const ConvCrfGradArgs& a, const float* Gp,
              const float* Gc, const float* in, const float* qb, float* out, int r,
              double* sums) {
  dispatch_isa([&](auto isa) SEGKIT_BODY {
    constexpr int B = decltype(isa)::bytes;
    const int chunks = (g.C + 7) / 8, base = g.C / chunks, extra = g.C % chunks;
    int c0 = 0;
    for (int ch = 0; ch < chunks; ++ch) {
      const int cb = base + (ch < extra ? 1 : 0);
      dispatch_exact<1, 2, 3, 4, 5, 6, 7, 8>(cb, [&](auto n) SEGKIT_BODY {
        pass_block<B, decltype(n)::value>(g, a, Gp, Gc, in, out, r, c0);
      });
      c0 += cb;
    }
    if (sums != nullptr) sums_row<B>(g, im, Gp, Gc, in, qb, r, sums);
  });
}

crfgrad::Scales scales_of(const ConvCrfGradArgs& a) {
  crfgrad::Scales sc;
  sc.pos2 = a.pos_inv * a.pos_inv;
  sc.col2 = a.col_inv * a.col_inv;
  sc.colpos2 = a.col_pos ? a.colpos_inv * a.colpos_inv : 0.0f;
  return sc;
}

// Per-thread full-resolution row buffers (C rows of W) and two single rows.
struct RowScratch {
  std::vector<float> m, mp, z, h, mx, sum;
  explicit RowScratch(const Geo& g)
      : m(static_cast<size_t>(g.C) * g.W), mp(m.size()), z(m.size()), h(m.size()), mx(g.W),
        sum(g.W) {}
};

bool start_softmax(const ConvCrfGradArgs& a) {
  return a.unary_kind == crf::UNARY_PROBS || a.init == crf::INIT_SOFTMAX;
}

// z (C rows of W) = (unary_weight - w_c) U + w_c M' for row i.
void pred_row(const Geo& g, const ConvCrfGradArgs& a, const float* weight, const float* U,
              int i, const float* mp, float* z) {
  for (int c = 0; c < g.C; ++c) {
    const float w = weight[c], au = a.unary_weight - w;
    const float* u = U + c * g.HW + static_cast<index_t>(i) * g.W;
    const float* m = mp + static_cast<index_t>(c) * g.W;
    float* o = z + static_cast<index_t>(c) * g.W;
    for (int j = 0; j < g.W; ++j) o[j] = au * u[j] + w * m[j];
  }
}

}  // namespace

void convcrf_grad_pooled(const ConvCrfGradArgs& a, index_t* hp, index_t* wp) {
  int h, w, p;
  crf::pool_geometry(static_cast<int>(a.h), a.blur, &h, &p);
  crf::pool_geometry(static_cast<int>(a.w), a.blur, &w, &p);
  *hp = h;
  *wp = w;
}

void convcrf_grad_forward(const float* unary, const float* image, const std::uint8_t* mask,
                          const float* weight, const float* compat, float* out, float* saved,
                          const ConvCrfGradArgs& a) {
  check_args(a);
  if (a.n == 0 || a.h == 0 || a.w == 0) return;
  const Geo g = make_geo(a);
  const crfgrad::Scales sc = scales_of(a);
  const int T = a.num_iter, threads = max_threads();
  std::vector<float> U(static_cast<size_t>(g.C) * g.HW), Qb(static_cast<size_t>(g.C) * g.plane);
  std::vector<RowScratch> rs(threads, RowScratch(g));
  const size_t kk = static_cast<size_t>(a.filter_size) * a.filter_size * g.Hp * g.ldg;
  std::vector<float> Gp(kk), Gc(kk);
  std::vector<float> Me(g.b > 1 ? static_cast<size_t>(g.C) * g.Hp * g.W : 0);
  Image im;
  for (index_t n = 0; n < a.n; ++n) {
    const float* x = unary + n * g.C * g.HW;
    float* o = out + n * g.C * g.HW;
    prepare_image(g, image + n * 3 * g.HW, mask == nullptr ? nullptr : mask + n * g.HW, im);
    weights_image(g, im, sc, Gp.data(), Gc.data());
    // U, and Q_0 (in z) pooled into Qb
#pragma omp parallel for schedule(dynamic, 2) num_threads(max_threads())
    for (int R = 0; R < g.Hp; ++R) {
      dispatch_isa([&](auto) SEGKIT_BODY {
        RowScratch& s = rs[thread_id()];
        int y0, y1;
        crf::pool_span(R, g.p0, g.b, g.H, &y0, &y1);
        for (int i = y0; i < y1; ++i) {
          const index_t row = static_cast<index_t>(i) * g.W;
          unary_row(g, a.unary_kind, x + row, U.data() + row, s.mx.data(), s.sum.data());
          if (start_softmax(a)) {
            for (int c = 0; c < g.C; ++c)
              std::memcpy(o + c * g.HW + row, U.data() + c * g.HW + row, sizeof(float) * g.W);
            softmax_row(o + row, g.C, g.HW, g.W, s.mx.data(), s.sum.data());
          }
        }
        pool_rows(g, im, start_softmax(a) ? o : U.data(), R, Qb.data());
      });
    }
    for (int t = 0; t < T; ++t) {
      const bool last = t == T - 1;
      float* Mb = saved + (n * T + t) * g.C * g.HWp;
#pragma omp parallel for schedule(dynamic, 2) num_threads(max_threads())
      for (int r = 0; r < g.Hp; ++r) {
        pass_row(g, im, a, Gp.data(), Gc.data(), Qb.data(), nullptr, Mb, r, nullptr);
        if (g.b > 1) dispatch_isa([&](auto) SEGKIT_BODY { upsample_row(g, Mb, r, Me.data()); });
      }
      const float* Mup = g.b > 1 ? Me.data() : Mb;
      // full resolution: z, softmax, pooled into Qb (or the output); `o` is scratch until last
#pragma omp parallel for schedule(dynamic, 2) num_threads(max_threads())
      for (int R = 0; R < g.Hp; ++R) {
        dispatch_isa([&](auto) SEGKIT_BODY {
          RowScratch& s = rs[thread_id()];
          int y0, y1;
          crf::pool_span(R, g.p0, g.b, g.H, &y0, &y1);
          for (int i = y0; i < y1; ++i) {
            message_row(g, im, Mup, compat, i, s.m.data(), s.mp.data());
            pred_row(g, a, weight, U.data(), i, compat ? s.mp.data() : s.m.data(), s.z.data());
            if (!last || a.final_softmax) softmax_row(s.z.data(), g.C, g.W, g.W, s.mx.data(),
                                                      s.sum.data());
            for (int c = 0; c < g.C; ++c)
              std::memcpy(o + c * g.HW + static_cast<index_t>(i) * g.W,
                          s.z.data() + static_cast<index_t>(c) * g.W, sizeof(float) * g.W);
          }
          if (!last) pool_rows(g, im, o, R, Qb.data());
        });
      }
    }
  }
}

void convcrf_grad_backward(const float* grad, const float* unary, const float* image,
                           const std::uint8_t* mask, const float* weight, const float* compat,
                           const float* saved, float* d_unary, double* d_weight, double* d_sums,
                           double* d_compat, const ConvCrfGradArgs& a) {
  check_args(a);
  const int C = static_cast<int>(a.c);
  std::fill(d_weight, d_weight + C, 0.0);
  std::fill(d_sums, d_sums + kGradSums, 0.0);
  if (compat != nullptr) std::fill(d_compat, d_compat + static_cast<index_t>(C) * C, 0.0);
  if (a.n == 0 || a.h == 0 || a.w == 0) return;
  const Geo g = make_geo(a);
  const crfgrad::Scales sc = scales_of(a);
  const int T = a.num_iter, threads = max_threads();
  const size_t full = static_cast<size_t>(C) * g.HW, pooled = static_cast<size_t>(C) * g.HWp;
  std::vector<float> U(full), G(full), Qp(full), Tcol(g.b > 1 ? static_cast<size_t>(C) * g.H * g.Wp : 0),
      Rb(static_cast<size_t>(C) * g.plane), Qb(Rb.size()), dQb(pooled);
  std::vector<RowScratch> rs(threads, RowScratch(g));
  const int nblocks = (g.H + kRowBlock - 1) / kRowBlock;
  const size_t cc = compat ? static_cast<size_t>(C) * C : 0;
  std::vector<double> dw_part(static_cast<size_t>(nblocks) * C), dmu_part(nblocks * cc),
      sum_part(static_cast<size_t>(g.Hp) * kGradSums);
  const size_t kk = static_cast<size_t>(a.filter_size) * a.filter_size * g.Hp * g.ldg;
  std::vector<float> Gp(kk), Gc(kk);
  const size_t me = g.b > 1 ? static_cast<size_t>(C) * g.Hp * g.W : 0;
  std::vector<float> MeA(me), MeB(me);
  Image im;
  for (index_t n = 0; n < a.n; ++n) {
    const float* x = unary + n * full;
    const float* gout = grad + n * full;
    float* dU = d_unary + n * full;
    const float* Ms = saved + n * T * pooled;
    prepare_image(g, image + n * 3 * g.HW, mask == nullptr ? nullptr : mask + n * g.HW, im);
    weights_image(g, im, sc, Gp.data(), Gc.data());
#pragma omp parallel for schedule(dynamic, 4) num_threads(max_threads())
    for (int i = 0; i < g.H; ++i) {
      dispatch_isa([&](auto) SEGKIT_BODY {
        RowScratch& s = rs[thread_id()];
        const index_t row = static_cast<index_t>(i) * g.W;
        unary_row(g, a.unary_kind, x + row, U.data() + row, s.mx.data(), s.sum.data());
      });
    }
    float* me_cur = MeA.data();
    float* me_prev = MeB.data();
    for (int t = T; t >= 1; --t) {
      const float* Mb = Ms + (t - 1) * pooled;
      const float* Mprev = t >= 2 ? Ms + (t - 2) * pooled : nullptr;
      if (g.b > 1) {  // row-upsampled messages of t (first time only) and t - 1
#pragma omp parallel for schedule(dynamic, 4) num_threads(max_threads())
        for (int r = 0; r < g.Hp; ++r)
          dispatch_isa([&](auto) SEGKIT_BODY {
            if (t == T) upsample_row(g, Mb, r, me_cur);
            if (Mprev != nullptr) upsample_row(g, Mprev, r, me_prev);
          });
        Mb = me_cur;
        if (Mprev != nullptr) Mprev = me_prev;
      }
      // A: per block of full-resolution rows: G_t, dw, dU, dcompat, the column adjoint of the
      // upsampling (into Tcol), and Q_{t-1} (into Qp)
#pragma omp parallel for schedule(dynamic, 1) num_threads(max_threads())
      for (int blk = 0; blk < nblocks; ++blk) {
        dispatch_isa([&](auto) SEGKIT_BODY {
          RowScratch& s = rs[thread_id()];
          double* dw = dw_part.data() + static_cast<size_t>(blk) * C;
          double* dmu = dmu_part.data() + blk * cc;
          std::fill(dw, dw + C, 0.0);
          std::fill(dmu, dmu + cc, 0.0);
          for (int i = blk * kRowBlock; i < std::min(g.H, (blk + 1) * kRowBlock); ++i) {
            const index_t row = static_cast<index_t>(i) * g.W;
            message_row(g, im, Mb, compat, i, s.m.data(), s.mp.data());
            const float* mp = compat ? s.mp.data() : s.m.data();
            float* Gi = G.data() + row;  // C rows HW apart
            if (t == T) {
              for (int c = 0; c < C; ++c)
                std::memcpy(Gi + c * g.HW, gout + c * g.HW + row, sizeof(float) * g.W);
              if (a.final_softmax) {  // G = Q (g - sum_c Q g), Q = softmax(z_T)
                pred_row(g, a, weight, U.data(), i, mp, s.z.data());
                softmax_row(s.z.data(), C, g.W, g.W, s.mx.data(), s.sum.data());
                float* dot = s.sum.data();
                for (int j = 0; j < g.W; ++j) dot[j] = 0.0f;
                for (int c = 0; c < C; ++c)
                  for (int j = 0; j < g.W; ++j) dot[j] += s.z[c * g.W + j] * Gi[c * g.HW + j];
                for (int c = 0; c < C; ++c)
                  for (int j = 0; j < g.W; ++j)
                    Gi[c * g.HW + j] = s.z[c * g.W + j] * (Gi[c * g.HW + j] - dot[j]);
              }
            }
            for (int c = 0; c < C; ++c) {
              const float w = weight[c], au = a.unary_weight - w;
              const float* gc = Gi + c * g.HW;
              const float* uc = U.data() + c * g.HW + row;
              const float* mc = mp + static_cast<index_t>(c) * g.W;
              float* du = dU + c * g.HW + row;
              float* hc = s.h.data() + static_cast<index_t>(c) * g.W;
              float acc = 0.0f;
              for (int j = 0; j < g.W; ++j) {
                acc += gc[j] * (mc[j] - uc[j]);
                du[j] = (t == T ? 0.0f : du[j]) + au * gc[j];
                hc[j] = w * gc[j];
              }
              dw[c] += acc;
            }
            // dM = (H + compat^T H) * mask, into s.mp (the message itself stays in s.m)
            float* dm = s.mp.data();
            if (compat != nullptr) {
              for (int c = 0; c < C; ++c)
                for (int d = 0; d < C; ++d) {
                  const float* hc = s.h.data() + static_cast<index_t>(c) * g.W;
                  const float* md = s.m.data() + static_cast<index_t>(d) * g.W;
                  float acc = 0.0f;
                  for (int j = 0; j < g.W; ++j) acc += hc[j] * md[j];
                  dmu[static_cast<size_t>(c) * C + d] += acc;
                }
              for (int d = 0; d < C; ++d) {
                float* o = dm + static_cast<index_t>(d) * g.W;
                std::memcpy(o, s.h.data() + static_cast<index_t>(d) * g.W, sizeof(float) * g.W);
                for (int c = 0; c < C; ++c) {
                  const float k = compat[c * C + d];
                  const float* hc = s.h.data() + static_cast<index_t>(c) * g.W;
                  for (int j = 0; j < g.W; ++j) o[j] += k * hc[j];
                }
              }
            } else {
              std::memcpy(dm, s.h.data(), sizeof(float) * C * g.W);
            }
            const float* fm = im.fmask.data() + row;
            for (int c = 0; c < C; ++c) {
              const float* d = dm + static_cast<index_t>(c) * g.W;
              if (g.b == 1) {  // no taps: straight into R (pooled row i)
                float* rr = Rb.data() + c * g.plane + g.at(i, 0);
                for (int j = 0; j < g.W; ++j) rr[j] = d[j] * fm[j];
                continue;
              }
              float* tc = Tcol.data() + (static_cast<index_t>(c) * g.H + i) * g.Wp;
              for (int X = 0; X < g.Wp; ++X) tc[X] = 0.0f;
              for (int j = 0; j < g.W; ++j) {
                const float v = d[j] * fm[j];
                tc[g.xi0[j]] += g.xl0[j] * v;
                tc[g.xi1[j]] += g.xl1[j] * v;
              }
            }
            // Q_{t-1}
            float* q = Qp.data() + row;
            if (Mprev != nullptr) {
              message_row(g, im, Mprev, compat, i, s.m.data(), s.mp.data());
              pred_row(g, a, weight, U.data(), i, compat ? s.mp.data() : s.m.data(), s.z.data());
              for (int c = 0; c < C; ++c)
                std::memcpy(q + c * g.HW, s.z.data() + static_cast<index_t>(c) * g.W,
                            sizeof(float) * g.W);
            } else {
              for (int c = 0; c < C; ++c)
                std::memcpy(q + c * g.HW, U.data() + c * g.HW + row, sizeof(float) * g.W);
            }
            if (Mprev != nullptr || start_softmax(a))
              softmax_row(q, C, g.HW, g.W, s.mx.data(), s.sum.data());
          }
        });
      }
      for (int blk = 0; blk < nblocks; ++blk) {
        for (int c = 0; c < C; ++c) d_weight[c] += dw_part[static_cast<size_t>(blk) * C + c];
        for (size_t k = 0; k < cc; ++k) d_compat[k] += dmu_part[blk * cc + k];
      }
      // B: the row adjoint of the upsampling (R) and Qb_{t-1}, per pooled row
#pragma omp parallel for schedule(dynamic, 4) num_threads(max_threads())
      for (int r = 0; r < g.Hp; ++r) {
        dispatch_isa([&](auto) SEGKIT_BODY {
          for (int c = 0; c < C && g.b > 1; ++c) {  // (blur 1: phase A wrote R)
            float* o = Rb.data() + c * g.plane + g.at(r, 0);
            for (int X = 0; X < g.Wp; ++X) o[X] = 0.0f;
            for (const auto& e : g.rows_of[r]) {
              const float* tc = Tcol.data() + (static_cast<index_t>(c) * g.H + e.first) * g.Wp;
              for (int X = 0; X < g.Wp; ++X) o[X] += e.second * tc[X];
            }
          }
          pool_rows(g, im, Qp.data(), r, Qb.data());
        });
      }
      // C: dQb = A R and the parameter sums
#pragma omp parallel for schedule(dynamic, 2) num_threads(max_threads())
      for (int r = 0; r < g.Hp; ++r)
        pass_row(g, im, a, Gp.data(), Gc.data(), Rb.data(), Qb.data(), dQb.data(), r,
                 sum_part.data() + static_cast<size_t>(r) * kGradSums);
      for (int r = 0; r < g.Hp; ++r)
        for (int k = 0; k < kGradSums; ++k) d_sums[k] += sum_part[r * kGradSums + k];
      // D: dQ = pool^T dQb, then G_{t-1} (softmax Jacobian) or the start's term into dU
      const bool start_is_u = !start_softmax(a);
#pragma omp parallel for schedule(dynamic, 4) num_threads(max_threads())
      for (int i = 0; i < g.H; ++i) {
        dispatch_isa([&](auto) SEGKIT_BODY {
          RowScratch& s = rs[thread_id()];
          const index_t row = static_cast<index_t>(i) * g.W;
          const int R = (i + g.p0) / g.b;
          const float* fm = im.fmask.data() + row;
          const float* ic = im.inv_count.data() + static_cast<index_t>(R) * g.Wp;
          float* dq = s.h.data();
          for (int c = 0; c < C; ++c) {
            const float* src = dQb.data() + c * g.HWp + static_cast<index_t>(R) * g.Wp;
            float* o = dq + static_cast<index_t>(c) * g.W;
            if (g.b == 1)
              for (int j = 0; j < g.W; ++j) o[j] = src[j] * ic[j] * fm[j];
            else
              for (int j = 0; j < g.W; ++j) o[j] = src[g.cellx[j]] * ic[g.cellx[j]] * fm[j];
          }
          if (t == 1 && start_is_u) {
            for (int c = 0; c < C; ++c) {
              float* du = dU + c * g.HW + row;
              const float* o = dq + static_cast<index_t>(c) * g.W;
              for (int j = 0; j < g.W; ++j) du[j] += o[j];
            }
            return;
          }
          const float* q = Qp.data() + row;
          float* dot = s.sum.data();
          for (int j = 0; j < g.W; ++j) dot[j] = 0.0f;
          for (int c = 0; c < C; ++c)
            for (int j = 0; j < g.W; ++j) dot[j] += q[c * g.HW + j] * dq[c * g.W + j];
          float* dst = t == 1 ? dU + row : G.data() + row;
          for (int c = 0; c < C; ++c)
            for (int j = 0; j < g.W; ++j) {
              const float v = q[c * g.HW + j] * (dq[c * g.W + j] - dot[j]);
              dst[c * g.HW + j] = t == 1 ? dst[c * g.HW + j] + v : v;
            }
        });
      }
      std::swap(me_cur, me_prev);
    }
    // through U = log_softmax(x) (dx = dU - softmax(x) sum_c dU) or log(x) (dx = dU / x)
#pragma omp parallel for schedule(dynamic, 4) num_threads(max_threads())
    for (int i = 0; i < g.H; ++i) {
      dispatch_isa([&](auto) SEGKIT_BODY {
        RowScratch& s = rs[thread_id()];
        const index_t row = static_cast<index_t>(i) * g.W;
        float* du = dU + row;
        if (a.unary_kind == crf::UNARY_PROBS) {
          for (int c = 0; c < C; ++c)
            for (int j = 0; j < g.W; ++j) du[c * g.HW + j] /= x[c * g.HW + row + j];
          return;
        }
        float* tot = s.sum.data();
        for (int j = 0; j < g.W; ++j) tot[j] = 0.0f;
        for (int c = 0; c < C; ++c)
          for (int j = 0; j < g.W; ++j) tot[j] += du[c * g.HW + j];
        for (int c = 0; c < C; ++c)
          for (int j = 0; j < g.W; ++j)
            du[c * g.HW + j] -= crf::exp_f32(U[c * g.HW + row + j]) * tot[j];
      });
    }
  }
}

}  // namespace cpu
}  // namespace segkit
