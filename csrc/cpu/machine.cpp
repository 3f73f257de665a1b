// The machine figures of cpu/machine.h. As in the kernels they measure, OpenMP splits the work
// here and each thread's piece runs through cpu/simd.h's dispatch, so the loops are compiled
// once per instruction set.
#include "cpu/machine.h"

#include "common/math.h"
#include "cpu/runtime.h"
#include "cpu/simd.h"

namespace segkit {
namespace cpu {
namespace {

constexpr index_t kChunk = 1 << 14;  // floats per work item (64 KiB)

template <int B>
SEGKIT_ALWAYS double read_chunk(const float* x, index_t n) {
  typedef vec_t<float, B> V;
  constexpr int L = Vec<float, B>::lanes;
  V a0 = V{}, a1 = V{}, a2 = V{}, a3 = V{};  // four chains hide the add latency
  index_t i = 0;
  for (; i + 4 * L <= n; i += 4 * L) {
    a0 += loadv<V>(x + i);
    a1 += loadv<V>(x + i + L);
    a2 += loadv<V>(x + i + 2 * L);
    a3 += loadv<V>(x + i + 3 * L);
  }
  double s = 0;
  for (; i < n; ++i) s += x[i];
  const V a = (a0 + a1) + (a2 + a3);
  for (int l = 0; l < L; ++l) s += a[l];
  return s;
}

template <int B>
SEGKIT_ALWAYS void update_chunk(float* x, index_t n, float a, float b) {
  typedef vec_t<float, B> V;
  constexpr int L = Vec<float, B>::lanes;
  index_t i = 0;
  for (; i + L <= n; i += L) storev(x + i, loadv<V>(x + i) * a + b);
  for (; i < n; ++i) x[i] = x[i] * a + b;
}

template <int B>
SEGKIT_ALWAYS double fma_chains(std::int64_t iters, float start, float m, float a) {
  typedef vec_t<float, B> V;
  constexpr int L = Vec<float, B>::lanes;
  constexpr int kChains = 12;  // > FMA latency (4) x ports (2); + 2 constants fit 16 registers
  V acc[kChains];
  const V vm = V{} + m, va = V{} + a;
#pragma GCC unroll 16
  for (int c = 0; c < kChains; ++c) acc[c] = V{} + (start + c);  // distinct: no chain is CSE'd
  for (std::int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 16
    for (int c = 0; c < kChains; ++c) acc[c] = acc[c] * vm + va;
  }
  double s = 0;
  for (int c = 0; c < kChains; ++c)
    for (int l = 0; l < L; ++l) s += acc[c][l];
  return s;
}

template <int B>
SEGKIT_ALWAYS void exp_chunk(const float* x, float* out, index_t n) {
  typedef vec_t<float, B> V;
  constexpr int L = Vec<float, B>::lanes;
  for (index_t i = 0; i < n; i += L) storev(out + i, math::exp_poly(loadv<V>(x + i)));
}

}  // namespace

// Every pass splits [0, n) the same way (static schedule, same count), so a thread touches
// the same chunks in every pass and needs no barrier between passes: the loops run inside one
// parallel region, and a fork or barrier (tens of microseconds with a passive wait policy)
// is not what is measured.
double machine_read(const float* x, index_t n, int reps) {
  double total = 0;
#pragma omp parallel reduction(+ : total) num_threads(max_threads())
  for (int r = 0; r < reps; ++r) {
    const bool last = r == reps - 1;
#pragma omp for schedule(static) nowait
    for (index_t c0 = 0; c0 < n; c0 += kChunk) {
      const index_t len = c0 + kChunk < n ? kChunk : n - c0;
      const double s = dispatch_isa([&](auto isa) SEGKIT_BODY {
        return read_chunk<decltype(isa)::bytes>(x + c0, len);
      });
      if (last) total += s;
    }
  }
  return total;
}

// f(c0, len) on the chunks of [0, n), `reps` times, the chunks shared among the threads.
template <typename F>
void for_chunks(index_t n, int reps, const F& f) {
#pragma omp parallel num_threads(max_threads())
  for (int r = 0; r < reps; ++r) {
#pragma omp for schedule(static) nowait
    for (index_t c0 = 0; c0 < n; c0 += kChunk) f(c0, c0 + kChunk < n ? kChunk : n - c0);
  }
}

void machine_update(float* x, index_t n, int reps, float a, float b) {
  for_chunks(n, reps, [&](index_t c0, index_t len) {
    dispatch_isa([&](auto isa) SEGKIT_BODY {
      update_chunk<decltype(isa)::bytes>(x + c0, len, a, b);
    });
  });
}

double machine_fma(std::int64_t iters, float start, float m, float a) {
  double total = 0;
#pragma omp parallel reduction(+ : total) num_threads(max_threads())
  total += dispatch_isa([&](auto isa) SEGKIT_BODY {
    return fma_chains<decltype(isa)::bytes>(iters, start, m, a);
  });
  return total;
}

int machine_lanes() {
  return dispatch_isa([&](auto isa) SEGKIT_BODY { return decltype(isa)::bytes / 4; });
}

void machine_exp(const float* x, float* out, index_t n, int reps) {
  for_chunks(n, reps, [&](index_t c0, index_t len) {
    dispatch_isa([&](auto isa) SEGKIT_BODY {
      exp_chunk<decltype(isa)::bytes>(x + c0, out + c0, len);
    });
  });
}

}  // namespace cpu
}  // namespace segkit
