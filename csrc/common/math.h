// Float helpers shared by the kernel bodies of common/ (CPU and CUDA): bit casts, the exp and
// log polynomials (exp_poly lane by lane for a float or, through FloatLanes, a vector of
// floats: cpu/simd.h adds the vector lanes) and the float16 storage type with its exact
// conversion. Header-only; SEGKIT_HD makes it __host__ __device__. No kernel lives here.
#pragma once
#include "common/macros.h"

// Device code (nvcc's device pass, NVRTC) uses CUDA's intrinsics and math library; host code
// (g++, nvcc's host pass) the portable versions.
#if defined(__CUDA_ARCH__)
#define SEGKIT_MATH_DEVICE 1
#else
#define SEGKIT_MATH_DEVICE 0
#endif

namespace segkit {
namespace math {

// ---- bit casts -----------------------------------------------------------------------------
SEGKIT_HD SEGKIT_INLINE float bits_to_float(unsigned int u) {
#if SEGKIT_MATH_DEVICE
  return __uint_as_float(u);
#else
  float f;
  __builtin_memcpy(&f, &u, sizeof f);
  return f;
#endif
}

SEGKIT_HD SEGKIT_INLINE unsigned int float_to_bits(float f) {
#if SEGKIT_MATH_DEVICE
  return __float_as_uint(f);
#else
  unsigned int u;
  __builtin_memcpy(&u, &f, sizeof u);
  return u;
#endif
}

SEGKIT_HD SEGKIT_INLINE float neg_inf() { return bits_to_float(0xff800000u); }

// ---- exp and log -----------------------------------------------------------------------------
// On the GPU the CUDA library's expf/logf; on the CPU branch-free polynomial versions
// (Cephes-style, within about 2 ulp) that the compiler vectorises inside loops over pixels.

// Lanes of a float type for the polynomials below: float here; the CPU's vector types in
// cpu/simd.h. splat(v): v in every lane; to_int(r): r (integral) as integers; pow2(n): 2^n.
template <typename F>
struct FloatLanes;
template <>
struct FloatLanes<float> {
  typedef int I;
  static SEGKIT_HD SEGKIT_INLINE float splat(float v) { return v; }
  static SEGKIT_HD SEGKIT_INLINE int to_int(float r) { return static_cast<int>(r); }
  static SEGKIT_HD SEGKIT_INLINE float pow2(int n) {
    return bits_to_float(static_cast<unsigned int>((n + 127) << 23));
  }
};

// exp(x) for x <= 88, lane by lane for a float or a vector of floats (the same operations in
// the same order, so the same results). Below -87 it returns about 1e-38 instead of a
// subnormal or zero: every caller adds it to terms of order 1, where the difference is far
// below float32 resolution.
template <typename F>
SEGKIT_HD SEGKIT_INLINE F exp_poly(F x) {
  typedef FloatLanes<F> L;
  const F lo = L::splat(-87.0f), hi = L::splat(88.0f);
  x = x < lo ? lo : x;  // also maps -inf to a finite argument (NaN stays NaN)
  x = x > hi ? hi : x;
  // n = round(x / ln 2) by the float magic-number trick (exact for |x / ln 2| < 2^22).
  const F r = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const F t = (x - r * 0.693359375f) + r * 2.12194440e-4f;  // x - n ln 2, two-part ln 2
  F p = L::splat(1.9875691500e-4f);
  p = p * t + 1.3981999507e-3f;
  p = p * t + 8.3334519073e-3f;
  p = p * t + 4.1665795894e-2f;
  p = p * t + 1.6666665459e-1f;
  p = p * t + 5.0000001201e-1f;
  const F e = p * (t * t) + t + 1.0f;
  return e * L::pow2(L::to_int(r));
}

// exp on the GPU: the CUDA library's; on the CPU: exp_poly.
SEGKIT_HD SEGKIT_INLINE float exp_f32(float x) {
#if SEGKIT_MATH_DEVICE
  return expf(x);
#else
  return exp_poly(x);
#endif
}

// Natural logarithm for x >= 0 (0 -> -inf; subnormals handled).
SEGKIT_HD SEGKIT_INLINE float log_f32(float x) {
#if SEGKIT_MATH_DEVICE
  return logf(x);
#else
  const bool sub = x < 1.17549435e-38f;
  const float xs = sub ? x * 8388608.0f : x;  // 2^23
  const int bits = static_cast<int>(float_to_bits(xs));
  int e = ((bits >> 23) & 0xff) - 126;
  float m = bits_to_float(static_cast<unsigned int>((bits & 0x007fffff) | 0x3f000000));  // [0.5, 1)
  const bool small = m < 0.707106781186547524f;
  e -= small ? 1 : 0;
  m = small ? m + m - 1.0f : m - 1.0f;
  const float ef = static_cast<float>(e) - (sub ? 23.0f : 0.0f);
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  y += ef * -2.12194440e-4f;
  y += -0.5f * z;
  float r = m + y;
  r += ef * 0.693359375f;
  return x == 0.0f ? neg_inf() : r;
#endif
}

// ---- float16 -----------------------------------------------------------------------------------
// IEEE binary16 storage type: the raw 16 bits (NVRTC has no <cstdint>, and CUDA's __half
// needs cuda_fp16.h; the conversion below is all we need).
typedef unsigned short half_bits;

// Exact float16 -> float32 for every input: zeros, subnormals, normals, inf and NaN, with
// integer operations (no subnormal float arithmetic, so no slow assists and no dependence on
// denormals-are-zero): normals rebias the exponent (15 -> 127), subnormals are their 10-bit
// mantissa times 2^-24, inf/NaN keep an all-ones exponent and their payload.
SEGKIT_HD SEGKIT_INLINE float half_to_float(half_bits h) {
#if SEGKIT_MATH_DEVICE
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
#else
  const unsigned int sign = static_cast<unsigned int>(h & 0x8000u) << 16;
  const unsigned int mag = h & 0x7fffu;
  if (mag >= 0x7c00u) return bits_to_float(sign | 0x7f800000u | ((mag & 0x3ffu) << 13));
  if (mag < 0x400u) return bits_to_float(sign | float_to_bits(static_cast<float>(mag) * 0x1p-24f));
  return bits_to_float(sign | ((mag << 13) + 0x38000000u));
#endif
}

SEGKIT_HD SEGKIT_INLINE float load(const float* p) { return *p; }
SEGKIT_HD SEGKIT_INLINE float load(const half_bits* p) { return half_to_float(*p); }

}  // namespace math
}  // namespace segkit
