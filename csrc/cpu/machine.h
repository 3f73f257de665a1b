// What this machine's cores can do, measured with the kernels' own build (benchmarks/
// bench_machine.py): streaming bandwidth, FMA throughput and the throughput of the kernels'
// exp (math::exp_poly), each on the active SIMD path and the kernels' OpenMP threads. Tiny on
// purpose: each loop is the least code that moves the bytes or issues the operations it names.
#pragma once
#include <cstdint>

#include "common/macros.h"

namespace segkit {
namespace cpu {

// Reads x[0, n) `reps` times, split over the threads; returns the sum of the last pass (in
// double, so the loop cannot be dropped). The bytes read: 4 n reps.
double machine_read(const float* x, index_t n, int reps);

// x = x * a + b in place, `reps` times, split over the threads (each element read and written:
// 8 n reps bytes). With a = 1, b = 0 x is unchanged.
void machine_update(float* x, index_t n, int reps, float a, float b);

// `iters` rounds of 12 independent vector FMA chains (acc = acc * m + a) per thread; returns
// the sum over threads, chains and lanes of the final accumulators (chain c starts at
// start + c).
// Floating-point operations: 2 * 16 * lanes * iters * threads.
double machine_fma(std::int64_t iters, float start, float m, float a);

// Vector FMA lanes of the active path (4, 8 or 16 floats).
int machine_lanes();

// out = exp_poly(x) over n values (n a multiple of 16, as is the work item), `reps` times,
// split over the threads: the kernels' own exp on the active path.
void machine_exp(const float* x, float* out, index_t n, int reps);

}  // namespace cpu
}  // namespace segkit
