// Soft voting: the per-pixel definition shared by the C++ (csrc/cpu/soft_vote.cpp) and CUDA
// (csrc/cuda/soft_vote.cu) kernels. Header-only; SEGKIT_HD makes it __host__ __device__.
//
// The arithmetic is fixed so that every backend (NumPy reference, Numba, C++, CUDA) produces
// the same float32 sums bit for bit, and therefore the same labels even at near-ties:
//   s_c = 0;  for m = 0 .. M-1 (models in the order given):  s_c = fl(s_c + fl(w_m * p_m[c]))
// with float32 weights w_m (already divided by their sum) and p_m[c] converted exactly from
// float16 or read as float32. Each product and each sum is rounded once: no fused multiply-add
// (CUDA uses __fmul_rn/__fadd_rn, which the compiler never contracts; the host code puts an
// empty asm barrier between the multiply and the add). label = the smallest c with the largest
// s_c (strict '>' while scanning c upwards). A NaN sum is reported to the caller.
#pragma once

#include "common/macros.h"
#include "common/math.h"

// Stops the compiler from fusing a multiply into the following add (GCC contracts a*b + c
// into an FMA across statements when the target has FMA; the asm makes the product opaque).
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define SEGKIT_FP_BARRIER(x) ((void)0)
#elif (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define SEGKIT_FP_BARRIER(x) __asm__("" : "+x"(x))
#elif (defined(__GNUC__) || defined(__clang__)) && defined(__aarch64__)
#define SEGKIT_FP_BARRIER(x) __asm__("" : "+w"(x))
#else
#define SEGKIT_FP_BARRIER(x) ((void)0)  // other compilers: build with -ffp-contract=off
#endif

namespace segkit {
namespace vote {

// float16 storage and its exact conversion (common/math.h).
using math::half_bits;
using math::half_to_float;
using math::load;

// fl(a * b) and fl(a + b), each rounded once, never fused.
SEGKIT_HD SEGKIT_INLINE float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  float p = a * b;
  SEGKIT_FP_BARRIER(p);
  return p;
#endif
}

SEGKIT_HD SEGKIT_INLINE float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

// One pixel. `value(m, c)` returns model m's probability of class c at this pixel as float32
// (see load()); `w` holds the M float32 weights. Writes the C sums to probs[c * probs_cs] when
// probs is not null, sets `nan` when a sum is NaN, and returns the label.
template <typename Value>
SEGKIT_HD SEGKIT_INLINE int vote_pixel(int M, int C, const float* w, const Value& value,
                                       float* probs, index_t probs_cs, bool& nan) {
  int label = 0;
  float best = 0.0f;
  for (int c = 0; c < C; ++c) {
    float s = 0.0f;
    for (int m = 0; m < M; ++m) s = add_rn(s, mul_rn(w[m], value(m, c)));
    if (probs) probs[c * probs_cs] = s;
    if (s != s) nan = true;
    if (c == 0 || s > best) {
      best = s;
      label = c;
    }
  }
  return label;
}

}  // namespace vote
}  // namespace segkit
