// How this forward and the trainable forward (convcrf_grad.cpp over convcrf_grad_rows.h, as
// of issue 26 part 1) differed; written down before merging them (issue 26 part 2), kept as the
// record of what the merge had to reconcile (the trainable side describes the old code):
//   Inputs. Here: `scores` holds the unary and is overwritten in place; the image is uint8 or
//     float32 read through any strides; one scalar pair (unary_coef, message_coef) for every
//     class; no compatibility matrix; no mask. Trainable: separate unary and out; the image
//     float32 C-contiguous (N, 3, H, W); a per-class weight w_c (a_c = unary_weight - w_c, in
//     float32); an optional C x C compat (M' = M + compat M, applied per full-resolution pixel
//     after the upsampling and the mask); an optional validity mask (N, H, W) uint8: a pooled
//     cell averages its valid pixels only (none: the cell is invalid), a weight is zero unless
//     both cells are valid, the upsampled message is zero at invalid pixels.
//   Features. Here: the float32 products i * pos_inv, j * pos_inv, rgb * col_inv (and i, j *
//     colpos_inv) averaged in double over the cell (divided by the pixel count), and K =
//     pos_compat * exp_f32(sum_f -0.5 (df)^2) + col_compat * exp_f32(...) from the scaled
//     differences. Trainable: the UNSCALED pooled features (mean of i, j, rgb in double over the
//     valid pixels), squared distances dP, dI first, then Gp = exp_f32(-0.5 (s_pos^2 dP)),
//     Gc = exp_f32(-0.5 (s_col^2 dI + s_cp^2 dP)), A = (pos_compat Gp + col_compat Gc) v(p) v(q).
//     Same math, other roundings.
//   Weights and message. Here: half of the k x k offsets stored (K is symmetric), haloed planes;
//     M(p) = kc Q(p) + sum over the stored offsets e of K(p, p+e) Q(p+e) + K(p-e, p) Q(p-e)
//     (kc = pos_compat + col_compat), classes in blocks of up to 12 register accumulators.
//     Trainable: all k*k offsets of Gp and Gc stored (2 k*k planes), the weight pos_compat Gp +
//     col_compat Gc formed per load, the sum from zero in raster order of (dy, dx), classes in
//     blocks of up to 8.
//   Upsampling: the same taps and order in both (horizontal per pooled row, then vertical).
//   Update and softmax. Here: pred = unary_coef U + message_coef M; softmax with exp_poly (the
//     register path, C <= 16) or exp_f32 (the row path, C > 16). Trainable: pred = a_c U + w_c M'
//     with M' masked (times 0 or 1), softmax always with exp_f32.
//   Pooling of Q. Here: the rows of a cell summed first (per column), then the columns, divided
//     by (rows * columns). Trainable: per cell rows then columns of Q * mask, one accumulator,
//     times float32(1 / valid count).
//   Kept. Here: nothing (two pooled Q buffers). Trainable: `saved` (N, T, C, Hp, Wp) float32,
//     C-contiguous: saved[n, t] is Qb_t, the pooled Q that iteration t + 1's message pass
//     reads (Qb_0 pools the start Q_0; at blur 1 the masked Q); the backward recomputes the
//     message Mb_t = A Qb_{t-1} from it on the pooled grid, and U, M'_t and Q_t. With saved == nullptr the trainable forward is how a fitted setting is applied.
//   Memory. Here: K on k*k/2 pooled planes, two pooled Q, the features, the row-upsampled
//     message (C*H*W/b), kept between calls. Trainable: U (C*H*W), 2 k*k Gaussian planes, the
//     row-upsampled message, allocated per call, plus `saved`.
//
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
// Since issue 26 part 2 this is the one CPU forward: the trainable forward
// (convcrf_grad_forward) calls it with what a fitted or trainable setting adds. A compat matrix
// is applied to the pooled message row (M' = M + compat M commutes with the upsampling and the
// mask, so it costs C^2 per pooled pixel, not per pixel); `saved` receives each row of the pooled Q
// as its message row is computed. A mask or per-class weights take the general update (Plan::general):
// pred_c = a_c U + w_c (M' * mask), Q pooled over the valid pixels (times float32(1 / count)),
// features over the valid pixels, weights times v(p) v(q); exp_poly in the register path as
// here. ConvCRF's own settings (no mask, equal weights, with or without compat) keep the
// scalar update, bit for bit as before.
//
// This file holds the arguments, the plan and the loop over phases; the features are in
// convcrf_features.h, the workspace in convcrf_workspace.h, the row kernels in
// convcrf_rows.cpp, convcrf_update.h and convcrf_message.h (compiled per instruction set
// through cpu/simd.h), the per-element definitions in common/convcrf.h.

// Lets GCC if-convert the float selects of exp/log (and so vectorise them) on baseline SSE2;
// segkit never unmasks floating-point exceptions.
#pragma GCC optimize("no-trapping-math")

#include <algorithm>
#include <cstring>
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
#include "cpu/convcrf_features.h"
#include "cpu/convcrf_plan.h"
#include "cpu/convcrf_workspace.h"
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
  p.general = a.mask != nullptr || a.weight != nullptr;
  for (int c = 0; c < p.C; ++c) {
    p.wa.push_back(a.weight != nullptr ? a.weight[c] : a.message_coef);
    p.ua.push_back(a.weight != nullptr ? a.unary_weight - a.weight[c] : a.unary_coef);
  }
  if (p.b > 1) {  // ldw entries: the padding repeats the last pixel's taps (whole vectors)
    p.xi0.resize(p.ldw);
    p.xi1.resize(p.ldw);
    p.xl0.resize(p.ldw);
    p.xl1.resize(p.ldw);
    for (index_t x = 0; x < p.ldw; ++x)
      crf::bilinear_taps(std::min<int>(static_cast<int>(x), p.W - 1), p.p1, p.b, p.Wp,
                         &p.xi0[x], &p.xi1[x], &p.xl0[x], &p.xl1[x]);
    for (int X = 0; X < p.Wp; ++X) {
      int x0, x1;
      crf::pool_span(X, p.p1, p.b, p.W, &x0, &x1);
      p.pcount.push_back(static_cast<float>(x1 - x0));
    }
  }
  return p;
}


}  // namespace crfrows

namespace {

using namespace crfrows;

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

struct Sizes {
  index_t k, q, feat, me, mask, scratch_per_thread;
};

Sizes sizes_of(const Plan& pl) {
  Sizes s;
  s.k = pl.nh * pl.plane;
  s.q = static_cast<index_t>(pl.C) * pl.plane;
  s.feat = pl.nfeat * pl.fstride;
  s.me = pl.b > 1 ? static_cast<index_t>(pl.C) * pl.Hp * pl.ldw : 0;
  s.mask = pl.general ? pl.H * pl.ldw + 2 * pl.fstride : 0;  // fm, valid, inv
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
         (s.k + 2 * s.q + s.feat + s.me + s.mask + max_threads() * s.scratch_per_thread);
}

template <typename TImg>
void convcrf(float* scores, const TImg* image, const ConvCrfArgs& a) {
  check_args(a);
  if (a.n == 0 || a.h == 0 || a.w == 0) return;
  const Plan pl = make_plan(a);
  const Sizes sz = sizes_of(pl);
    const int threads = max_threads();

  const size_t total = static_cast<size_t>(sz.k + 2 * sz.q + sz.feat + sz.me + sz.mask) +
                       static_cast<size_t>(threads) * sz.scratch_per_thread;
  WorkspacePool::Block block = pool().acquire(total);
  float* const K = block.data.get();
  float* Q[2] = {K + sz.k, K + sz.k + sz.q};
  float* const feat = Q[1] + sz.q;
  float* const Me = feat + sz.feat;
  float* const fmask = Me + sz.me;
  float* const scratch = fmask + sz.mask;

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
    if (pl.general) {
      cx.fm = fmask;
      cx.valid = fmask + pl.H * pl.ldw;
      cx.inv = cx.valid + pl.fstride;
    }
    // clear_borders writes only what no later phase writes; the barriers after the weights
    // and the first Q order it before every read.
#pragma omp for schedule(dynamic, 1) nowait
    for (int j = 0; j < pl.nh + 2 * pl.C; ++j) clear_borders(pl, K, Q[0], Q[1], j);
    for (index_t n = 0; n < a.n; ++n) {
      cx.scores = scores + n * pl.C * pl.HW;
      cx.unary = a.unary != nullptr ? a.unary + n * pl.C * pl.HW : nullptr;
      cx.saved = nullptr;
      const TImg* img = image + n * a.im_sn;
      // Rows are handed out in guided chunks (halving, at least 2 rows): each thread's first
      // band is contiguous, so most rows of Q that its next pass reads are the ones it wrote,
      // in its own cache (dynamic chunks of 4 interleaved the threads: k=7 blur 1 took 25%
      // longer), and on a shared machine a thread that is descheduled for a while still
      // delays only its current rows, not a fixed half.
      // U (no barrier: the next barriers order it before Q_0), features, weights, Q_0.
      bool unary_ok = true;
#pragma omp for schedule(guided, 2) nowait
      for (int i = 0; i < pl.H; ++i) unary_ok = unary_row(cx, i, sc) && unary_ok;
      if (!unary_ok) __atomic_store_n(a.unary_bad, 1, __ATOMIC_RELAXED);
      if (pl.general && (a.mask != nullptr || n == 0)) {  // without a mask: all 1, once
#pragma omp for schedule(guided, 2)
        for (int i = 0; i < pl.H; ++i)
          mask_row(cx, a.mask == nullptr ? nullptr : a.mask + (n * pl.H + i) * pl.W, i);
      }
      if (pl.general) {
#pragma omp for schedule(guided, 2)
        for (int R = 0; R < pl.Hp; ++R) features_row_masked(cx, img, feat, R);
      } else {
#pragma omp for schedule(guided, 2)
        for (int R = 0; R < pl.Hp; ++R) features_row(pl, a, img, feat, R);
      }
#pragma omp for schedule(guided, 2)
      for (int R = 0; R < pl.Hp; ++R) weights_row(cx, R);
      cx.qcur = nullptr;
      cx.qnext = Q[0];
      if (pl.b == 1) {
#pragma omp for schedule(guided, 2)
        for (int r = 0; r < pl.H; ++r) rows_blur1(cx, r, sc, MODE_INIT, false);
      } else {
#pragma omp for schedule(guided, 2)
        for (int R = 0; R < pl.Hp; ++R) update_blur(cx, R, sc, MODE_INIT, false);
      }
      for (int it = 0; it < a.num_iter; ++it) {
        const bool last = it == a.num_iter - 1;
        cx.qcur = Q[it % 2];
        cx.qnext = Q[(it + 1) % 2];
        if (a.saved != nullptr) cx.saved = a.saved + ((n * a.num_iter + it) * pl.C) * pl.fstride;
        if (pl.b == 1) {
#pragma omp for schedule(guided, 2)
          for (int r = 0; r < pl.H; ++r) rows_blur1(cx, r, sc, MODE_ITER, last);
        } else {
#pragma omp for schedule(guided, 2)
          for (int R = 0; R < pl.Hp; ++R) message_blur(cx, R, sc);
#pragma omp for schedule(guided, 2)
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
