// CPU ConvCRF driver: fused mean-field inference, OpenMP over rows, SIMD over pixels of a row.
//
// Per image: pooled features, then the Gaussian weights of half the k x k offsets (K is
// symmetric: K(p, p-e) is read from the plane of e at p-e), stored once in planes with a zero
// halo so that the message loop needs no bounds checks. Each iteration is one pass over Q:
//   blur 1: per row, the message of every class (weights and Q in vector registers, classes
//           in blocks of up to 12 accumulators) followed at once by the update and softmax,
//           written into the other Q buffer;
//   blur b: per pooled row, the message, upsampled along the row; then per pooled row the b
//           full-resolution rows: vertical interpolation, update, softmax, and the b x b
//           average straight into the next pooled Q (no full-resolution Q is ever stored).
// The scores array holds the unary on entry, U = log_softmax(unary) during the iterations
// and the result at the end. Memory: K (k*k/2 pooled planes), two pooled Q, the pooled
// features and, for blur > 1, the row-upsampled message (C*H*W/b): O(C*H*W + k*k*H*W/b^2).
//
// This file holds the arguments, the plan, the workspace and the loop over phases; the row
// kernels are in convcrf_rows.cpp and convcrf_message.h (compiled per instruction set through
// cpu/simd.h), the per-element definitions in common/convcrf.h.

// Lets GCC if-convert the float selects of exp/log (and so vectorise them) on baseline SSE2;
// segkit never unmasks floating-point exceptions.
#pragma GCC optimize("no-trapping-math")

#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#define SEGKIT_HAVE_MXCSR 1
#endif

#include "common/convcrf.h"
#include "cpu/convcrf.h"
#include "cpu/convcrf_plan.h"
#include "cpu/runtime.h"

namespace segkit {
namespace cpu {
namespace crfrows {

Plan make_plan(const ConvCrfArgs& a) {
  Plan p;
  p.C = static_cast<int>(a.c);
  p.H = static_cast<int>(a.h);
  p.W = static_cast<int>(a.w);
  p.b = a.blur;
  p.k = a.filter_size;
  p.s = a.filter_size / 2;
  crf::pool_geometry(p.H, p.b, &p.Hp, &p.p0);
  crf::pool_geometry(p.W, p.b, &p.Wp, &p.p1);
  p.ld = round_up(round_up(p.Wp, kPad) + 2 * p.s, kPad);
  p.plane = (p.Hp + 2 * static_cast<index_t>(p.s)) * p.ld;
  p.ldw = round_up(p.W, kPad);
  p.HW = static_cast<index_t>(p.H) * p.W;
  p.fstride = static_cast<index_t>(p.Hp) * p.Wp;
  p.ncol = a.col_pos ? 5 : 3;
  p.nfeat = 2 + p.ncol;
  p.kc = a.pos_compat * 1.0f + a.col_compat * 1.0f;
  for (int ey = 0; ey <= p.s; ++ey)
    for (int ex = ey == 0 ? 1 : -p.s; ex <= p.s; ++ex) {
      p.ey.push_back(ey);
      p.ex.push_back(ex);
      p.koff.push_back(ey * p.ld + ex);
    }
  p.nh = static_cast<int>(p.koff.size());
  if (p.b > 1) {
    p.xi0.resize(p.W);
    p.xi1.resize(p.W);
    p.xl0.resize(p.W);
    p.xl1.resize(p.W);
    for (int x = 0; x < p.W; ++x)
      crf::bilinear_taps(x, p.p1, p.b, p.Wp, &p.xi0[x], &p.xi1[x], &p.xl0[x], &p.xl1[x]);
  }
  return p;
}


}  // namespace crfrows

namespace {

using namespace crfrows;

// ---- features (scalar, once per image) ------------------------------------------------------

template <typename TImg>
void features_row(const Plan& pl, const ConvCrfArgs& a, const TImg* img, float* feat, int R) {
  if (pl.b == 1) {  // no pooling: the products themselves
    float* f = feat + static_cast<index_t>(R) * pl.Wp;
    const float fy = static_cast<float>(R) * a.pos_inv;
    const float cy = static_cast<float>(R) * a.colpos_inv;
    const TImg* row = img + R * a.im_sh;
    const int c0 = a.col_pos ? 4 : 2;
    for (int x = 0; x < pl.Wp; ++x) {
      f[x] = fy;
      f[pl.fstride + x] = static_cast<float>(x) * a.pos_inv;
      if (a.col_pos) {
        f[2 * pl.fstride + x] = cy;
        f[3 * pl.fstride + x] = static_cast<float>(x) * a.colpos_inv;
      }
      const TImg* px = row + x * a.im_sw;
      for (int ch = 0; ch < 3; ++ch)
        f[(c0 + ch) * pl.fstride + x] = static_cast<float>(px[ch * a.im_sc]) * a.col_inv;
    }
    return;
  }
  int y0, y1;
  crf::pool_span(R, pl.p0, pl.b, pl.H, &y0, &y1);
  for (int X = 0; X < pl.Wp; ++X) {
    int x0, x1;
    crf::pool_span(X, pl.p1, pl.b, pl.W, &x0, &x1);
    double sy = 0, sx = 0, cy = 0, cx = 0, rgb[3] = {0, 0, 0};
    for (int i = y0; i < y1; ++i)
      for (int j = x0; j < x1; ++j) {
        // float32 products, as ConvCRF's float32 tensors; the mean in double
        sy += static_cast<float>(i) * a.pos_inv;
        sx += static_cast<float>(j) * a.pos_inv;
        cy += static_cast<float>(i) * a.colpos_inv;
        cx += static_cast<float>(j) * a.colpos_inv;
        const TImg* px = img + i * a.im_sh + j * a.im_sw;
        for (int ch = 0; ch < 3; ++ch)
          rgb[ch] += static_cast<float>(px[ch * a.im_sc]) * a.col_inv;
      }
    const double n = static_cast<double>(y1 - y0) * (x1 - x0);
    float* f = feat + static_cast<index_t>(R) * pl.Wp + X;
    int ch = 0;
    f[pl.fstride * ch++] = static_cast<float>(sy / n);
    f[pl.fstride * ch++] = static_cast<float>(sx / n);
    if (a.col_pos) {
      f[pl.fstride * ch++] = static_cast<float>(cy / n);
      f[pl.fstride * ch++] = static_cast<float>(cx / n);
    }
    for (int c = 0; c < 3; ++c) f[pl.fstride * ch++] = static_cast<float>(rgb[c] / n);
  }
}

void check_args(const ConvCrfArgs& a) {
  if (a.n < 0 || a.c < 1 || a.h < 0 || a.w < 0)
    throw std::invalid_argument("convcrf: bad shape (n, c, h, w) = (" + std::to_string(a.n) +
                                ", " + std::to_string(a.c) + ", " + std::to_string(a.h) + ", " +
                                std::to_string(a.w) + ")");
  if (a.h > (1 << 30) || a.w > (1 << 30))
    throw std::invalid_argument("convcrf: image side larger than 2^30");
  if (a.filter_size < 1 || a.filter_size % 2 == 0)
    throw std::invalid_argument("convcrf: filter_size must be a positive odd integer, got " +
                                std::to_string(a.filter_size));
  if (a.blur < 1 || (a.blur > 1 && a.blur % 2 == 1))
    throw std::invalid_argument("convcrf: blur must be 1 or even, got " +
                                std::to_string(a.blur));
  if (a.num_iter < 1)
    throw std::invalid_argument("convcrf: num_iter must be >= 1, got " +
                                std::to_string(a.num_iter));
  if (a.unary_kind != crf::UNARY_LOGITS && a.unary_kind != crf::UNARY_PROBS)
    throw std::invalid_argument("convcrf: bad unary_kind code " + std::to_string(a.unary_kind));
  if (a.init != crf::INIT_CONVCRF && a.init != crf::INIT_SOFTMAX)
    throw std::invalid_argument("convcrf: bad init code " + std::to_string(a.init));
}

// Sets to zero every element of the K and Q planes that no image of this call writes: the halo
// rows and columns, the row tails, and the weights whose neighbour p+e is outside the grid.
// The message loop reads them (times a zero weight) without bounds checks.
void clear_borders(const Plan& pl, float* K, float* Q0, float* Q1, int plane_index) {
  const int nplanes = pl.nh + 2 * pl.C;
  const int j = plane_index;
  if (j >= nplanes) return;
  float* p;
  int ey = 0, ex = 0;
  bool weights = j < pl.nh;
  if (weights) {
    p = K + j * pl.plane;
    ey = pl.ey[j];
    ex = pl.ex[j];
  } else {
    const int q = j - pl.nh;
    p = (q < pl.C ? Q0 : Q1) + (q % pl.C) * pl.plane;
  }
  const int rows = pl.Hp + 2 * pl.s;
  for (int y = 0; y < rows; ++y) {
    float* row = p + y * pl.ld;
    const int R = y - pl.s;
    // valid (written) columns of this row, relative to the row start
    int lo = 0, hi = 0;
    if (R >= 0 && R < pl.Hp) {
      if (!weights) {
        lo = pl.s;
        hi = pl.s + pl.Wp;
      } else if (R + ey < pl.Hp) {
        lo = pl.s + std::max(0, -ex);
        hi = pl.s + std::min(pl.Wp, pl.Wp - ex);
      }
    }
    if (hi <= lo) {
      std::memset(row, 0, sizeof(float) * pl.ld);
    } else {
      std::memset(row, 0, sizeof(float) * lo);
      std::memset(row + hi, 0, sizeof(float) * (pl.ld - hi));
    }
  }
}

// Working memory kept between calls (a dataset job calls once per image): allocating and
// first touching the tens of MB that blur 1 needs costs more than its iterations. At most two
// blocks are kept (concurrent calls each take their own); convcrf_release_workspace() frees
// them.
class WorkspacePool {
 public:
  struct Block {
    std::unique_ptr<float[]> data;
    size_t size = 0;
  };

  Block acquire(size_t n) {
    Block b;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!free_.empty()) {
        b = std::move(free_.back());
        free_.pop_back();
      }
    }
    if (b.size < n) {
      b.data.reset();
      b.data.reset(new float[n]);  // uninitialised: every element read is written first
      b.size = n;
    }
    return b;
  }

  void release(Block b) {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.size() < 2) free_.push_back(std::move(b));
  }

  std::int64_t clear() {
    std::lock_guard<std::mutex> lock(mu_);
    std::int64_t bytes = 0;
    for (const Block& b : free_) bytes += static_cast<std::int64_t>(b.size * sizeof(float));
    free_.clear();
    return bytes;
  }

  std::int64_t held() {
    std::lock_guard<std::mutex> lock(mu_);
    std::int64_t bytes = 0;
    for (const Block& b : free_) bytes += static_cast<std::int64_t>(b.size * sizeof(float));
    return bytes;
  }

 private:
  std::mutex mu_;
  std::vector<Block> free_;
};

WorkspacePool& pool() {
  static WorkspacePool* p = new WorkspacePool();  // never destroyed: safe at exit
  return *p;
}

struct Sizes {
  index_t k, q, feat, me, scratch_per_thread;
};

Sizes sizes_of(const Plan& pl) {
  Sizes s;
  s.k = pl.nh * pl.plane;
  s.q = static_cast<index_t>(pl.C) * pl.plane;
  s.feat = pl.nfeat * pl.fstride;
  s.me = pl.b > 1 ? static_cast<index_t>(pl.C) * pl.Hp * pl.ldw : 0;
  s.scratch_per_thread = 3 * static_cast<index_t>(pl.C) * pl.ldw + 2 * pl.ldw;
  return s;
}

}  // namespace

std::int64_t convcrf_workspace_bytes(const ConvCrfArgs& a) {
  check_args(a);
  if (a.n == 0 || a.h == 0 || a.w == 0) return 0;
  const Plan pl = make_plan(a);
  const Sizes s = sizes_of(pl);
  return static_cast<std::int64_t>(sizeof(float)) *
         (s.k + 2 * s.q + s.feat + s.me + max_threads() * s.scratch_per_thread);
}

template <typename TImg>
void convcrf(float* scores, const TImg* image, const ConvCrfArgs& a) {
  check_args(a);
  if (a.n == 0 || a.h == 0 || a.w == 0) return;
  const Plan pl = make_plan(a);
  const Sizes sz = sizes_of(pl);
    const int threads = max_threads();

  const size_t total = static_cast<size_t>(sz.k + 2 * sz.q + sz.feat + sz.me) +
                       static_cast<size_t>(threads) * sz.scratch_per_thread;
  WorkspacePool::Block block = pool().acquire(total);
  float* const K = block.data.get();
  float* Q[2] = {K + sz.k, K + sz.k + sz.q};
  float* const feat = Q[1] + sz.q;
  float* const Me = feat + sz.feat;
  float* const scratch = Me + sz.me;

#pragma omp parallel num_threads(threads)
  {
#ifdef _OPENMP
    const int tid = omp_get_thread_num();
#else
    const int tid = 0;
#endif
#ifdef SEGKIT_HAVE_MXCSR
    // Flush subnormal results to zero while this call runs (restored below): weights and
    // probabilities near 1e-38 multiply into subnormal products, which x86 processors
    // compute through microcode assists many times slower. Such terms are below 1e-30 of
    // any score, far under the tolerance to ConvCRF's own float32 results.
    const unsigned int saved_csr = _mm_getcsr();
    _mm_setcsr(saved_csr | 0x8000);  // FTZ (inputs are read as they are)
#endif
    float* mine = scratch + tid * sz.scratch_per_thread;
    const index_t rows = static_cast<index_t>(pl.C) * pl.ldw;
    const Scratch sc = {mine, mine + rows, mine + 2 * rows, mine + 3 * rows,
                        mine + 3 * rows + pl.ldw};
    Ctx cx;
    cx.pl = &pl;
    cx.a = &a;
    cx.feat = feat;
    cx.K = K;
    cx.Me = Me;
    // clear_borders writes only what no later phase writes; the barriers after the weights
    // and the first Q order it before every read.
#pragma omp for schedule(dynamic, 1) nowait
    for (int j = 0; j < pl.nh + 2 * pl.C; ++j) clear_borders(pl, K, Q[0], Q[1], j);
    for (index_t n = 0; n < a.n; ++n) {
      cx.scores = scores + n * pl.C * pl.HW;
      const TImg* img = image + n * a.im_sn;
      // Rows are handed out dynamically, four at a time: on a shared machine a thread that is
      // descheduled for a while then delays only its current rows, not a fixed half.
      // U (no barrier: the next barriers order it before Q_0), features, weights, Q_0.
#pragma omp for schedule(dynamic, 4) nowait
      for (int i = 0; i < pl.H; ++i) unary_row(cx, i, sc);
#pragma omp for schedule(dynamic, 4)
      for (int R = 0; R < pl.Hp; ++R) features_row(pl, a, img, feat, R);
#pragma omp for schedule(dynamic, 4)
      for (int R = 0; R < pl.Hp; ++R) weights_row(cx, R);
      cx.qcur = nullptr;
      cx.qnext = Q[0];
      if (pl.b == 1) {
#pragma omp for schedule(dynamic, 4)
        for (int r = 0; r < pl.H; ++r) rows_blur1(cx, r, sc, MODE_INIT, false);
      } else {
#pragma omp for schedule(dynamic, 4)
        for (int R = 0; R < pl.Hp; ++R) update_blur(cx, R, sc, MODE_INIT, false);
      }
      for (int it = 0; it < a.num_iter; ++it) {
        const bool last = it == a.num_iter - 1;
        cx.qcur = Q[it % 2];
        cx.qnext = Q[(it + 1) % 2];
        if (pl.b == 1) {
#pragma omp for schedule(dynamic, 4)
          for (int r = 0; r < pl.H; ++r) rows_blur1(cx, r, sc, MODE_ITER, last);
        } else {
#pragma omp for schedule(dynamic, 4)
          for (int R = 0; R < pl.Hp; ++R) message_blur(cx, R, sc);
#pragma omp for schedule(dynamic, 4)
          for (int R = 0; R < pl.Hp; ++R) update_blur(cx, R, sc, MODE_ITER, last);
        }
      }
    }
#ifdef SEGKIT_HAVE_MXCSR
    _mm_setcsr(saved_csr);
#endif
  }
  pool().release(std::move(block));
}

std::int64_t convcrf_release_workspace() { return pool().clear(); }
std::int64_t convcrf_cached_workspace() { return pool().held(); }

template void convcrf<std::uint8_t>(float*, const std::uint8_t*, const ConvCrfArgs&);
template void convcrf<float>(float*, const float*, const ConvCrfArgs&);

}  // namespace cpu
}  // namespace segkit
