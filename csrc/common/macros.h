// Shared definitions for kernel bodies compiled by g++ (CPU), nvcc and NVRTC (CUDA).
#pragma once

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define SEGKIT_HD __host__ __device__
#define SEGKIT_INLINE __forceinline__
#else
#define SEGKIT_HD
#define SEGKIT_INLINE inline
#endif

// Full unrolling of loops with a compile-time trip count (no-op where unsupported).
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define SEGKIT_UNROLL _Pragma("unroll")
#elif defined(__GNUC__) && !defined(__clang__)
#define SEGKIT_UNROLL _Pragma("GCC unroll 16")
#elif defined(__clang__)
#define SEGKIT_UNROLL _Pragma("unroll")
#else
#define SEGKIT_UNROLL
#endif

namespace segkit {

// 64-bit index type that every compiler here knows without <cstdint> (NVRTC has no libc).
typedef long long index_t;

template <typename T>
SEGKIT_HD SEGKIT_INLINE T min_of(T a, T b) { return b < a ? b : a; }
template <typename T>
SEGKIT_HD SEGKIT_INLINE T max_of(T a, T b) { return a < b ? b : a; }

}  // namespace segkit
