// CPU mode filter, the AVX-512 form of the 3x3 row of windows (mode_filter.cpp's
// window_row_body with intrinsics: mask registers make each counted pair one compare and two
// masked adds, which the vector-extension form cannot express). Included by mode_filter.cpp.
#pragma once
#include <cstdint>
#include <limits>

#include "common/mode_filter.h"
#include "cpu/simd.h"

#if SEGKIT_X86
namespace segkit {
namespace cpu {
namespace mode_avx512 {

using mode::TIES_FIRST;
using mode::TIES_KEEP;

#define SEGKIT_AVX512 SEGKIT_TARGET_AVX512 __attribute__((always_inline)) static inline

// AVX-512BW operations on label vectors of T (counts live in lanes of the same width). With
// mask registers, counting an equal pair is one compare plus two masked adds.
template <typename T>
struct Z;
template <>
struct Z<uint8_t> {
  using M = __mmask64;
  SEGKIT_AVX512 __m512i set1(uint8_t x) { return _mm512_set1_epi8(static_cast<char>(x)); }
  SEGKIT_AVX512 M eq(__m512i a, __m512i b) { return _mm512_cmpeq_epi8_mask(a, b); }
  SEGKIT_AVX512 M ne(__m512i a, __m512i b) { return _mm512_cmpneq_epi8_mask(a, b); }
  SEGKIT_AVX512 __m512i inc(__m512i c, M k, __m512i one) { return _mm512_mask_add_epi8(c, k, c, one); }
  SEGKIT_AVX512 __m512i maskz(M k, __m512i a) { return _mm512_maskz_mov_epi8(k, a); }
  SEGKIT_AVX512 __m512i max(__m512i a, __m512i b) { return _mm512_max_epu8(a, b); }
  SEGKIT_AVX512 __m512i min_if(__m512i a, M k, __m512i b) { return _mm512_mask_min_epu8(a, k, a, b); }
  SEGKIT_AVX512 __m512i blend(M k, __m512i a, __m512i b) { return _mm512_mask_blend_epi8(k, a, b); }
};
template <>
struct Z<uint16_t> {
  using M = __mmask32;
  SEGKIT_AVX512 __m512i set1(uint16_t x) { return _mm512_set1_epi16(static_cast<short>(x)); }
  SEGKIT_AVX512 M eq(__m512i a, __m512i b) { return _mm512_cmpeq_epi16_mask(a, b); }
  SEGKIT_AVX512 M ne(__m512i a, __m512i b) { return _mm512_cmpneq_epi16_mask(a, b); }
  SEGKIT_AVX512 __m512i inc(__m512i c, M k, __m512i one) { return _mm512_mask_add_epi16(c, k, c, one); }
  SEGKIT_AVX512 __m512i maskz(M k, __m512i a) { return _mm512_maskz_mov_epi16(k, a); }
  SEGKIT_AVX512 __m512i max(__m512i a, __m512i b) { return _mm512_max_epu16(a, b); }
  SEGKIT_AVX512 __m512i min_if(__m512i a, M k, __m512i b) { return _mm512_mask_min_epu16(a, k, a, b); }
  SEGKIT_AVX512 __m512i blend(M k, __m512i a, __m512i b) { return _mm512_mask_blend_epi16(k, a, b); }
};
template <>
struct Z<int32_t> {
  using M = __mmask16;
  SEGKIT_AVX512 __m512i set1(int32_t x) { return _mm512_set1_epi32(x); }
  SEGKIT_AVX512 M eq(__m512i a, __m512i b) { return _mm512_cmpeq_epi32_mask(a, b); }
  SEGKIT_AVX512 M ne(__m512i a, __m512i b) { return _mm512_cmpneq_epi32_mask(a, b); }
  SEGKIT_AVX512 __m512i inc(__m512i c, M k, __m512i one) { return _mm512_mask_add_epi32(c, k, c, one); }
  SEGKIT_AVX512 __m512i maskz(M k, __m512i a) { return _mm512_maskz_mov_epi32(k, a); }
  SEGKIT_AVX512 __m512i max(__m512i a, __m512i b) { return _mm512_max_epi32(a, b); }
  SEGKIT_AVX512 __m512i min_if(__m512i a, M k, __m512i b) { return _mm512_mask_min_epi32(a, k, a, b); }
  SEGKIT_AVX512 __m512i blend(M k, __m512i a, __m512i b) { return _mm512_mask_blend_epi32(k, a, b); }
};
template <>
struct Z<int64_t> {
  using M = __mmask8;
  SEGKIT_AVX512 __m512i set1(int64_t x) { return _mm512_set1_epi64(x); }
  SEGKIT_AVX512 M eq(__m512i a, __m512i b) { return _mm512_cmpeq_epi64_mask(a, b); }
  SEGKIT_AVX512 M ne(__m512i a, __m512i b) { return _mm512_cmpneq_epi64_mask(a, b); }
  SEGKIT_AVX512 __m512i inc(__m512i c, M k, __m512i one) { return _mm512_mask_add_epi64(c, k, c, one); }
  SEGKIT_AVX512 __m512i maskz(M k, __m512i a) { return _mm512_maskz_mov_epi64(k, a); }
  SEGKIT_AVX512 __m512i max(__m512i a, __m512i b) { return _mm512_max_epi64(a, b); }
  SEGKIT_AVX512 __m512i min_if(__m512i a, M k, __m512i b) { return _mm512_mask_min_epi64(a, k, a, b); }
  SEGKIT_AVX512 __m512i blend(M k, __m512i a, __m512i b) { return _mm512_mask_blend_epi64(k, a, b); }
};

// The same row as window_row_body, with AVX-512BW intrinsics. Counts include the cell itself
// (1..K for voters, 0 for ignored cells).
template <typename T, int R, int TIES, bool IGN, int OWN>
SEGKIT_TARGET_AVX512 void window_row_avx512(const T* top, index_t ld, T* out, index_t n, int own,
                                            T ign) {
  using O = Z<T>;
  using M = typename O::M;
  constexpr index_t L = 64 / sizeof(T);
  constexpr int K = 3 * R;
  const int own_i = OWN >= 0 ? OWN : own;
  const T* own_ptr = top + (own_i / 3) * ld + own_i % 3;
  const __m512i one = O::set1(1), zero = _mm512_setzero_si512();
  const __m512i vmax = O::set1(std::numeric_limits<T>::max()), vign = O::set1(ign);
  for (index_t x0 = 0; x0 < n; x0 += L) {
    const index_t x = x0 + L <= n ? x0 : n - L;  // the last block overlaps the one before
    __m512i v[K], c[K];
#pragma GCC unroll 9
    for (int i = 0; i < K; ++i) {
      v[i] = _mm512_loadu_si512(top + (i / 3) * ld + x + i % 3);
      c[i] = one;
    }
#pragma GCC unroll 9
    for (int i = 0; i < K; ++i) {
#pragma GCC unroll 9
      for (int j = i + 1; j < K; ++j) {
        const M k = O::eq(v[i], v[j]);
        c[i] = O::inc(c[i], k, one);
        c[j] = O::inc(c[j], k, one);
      }
    }
    if (IGN) {
#pragma GCC unroll 9
      for (int i = 0; i < K; ++i) c[i] = O::maskz(O::ne(v[i], vign), c[i]);
    }
    __m512i m = c[0];
#pragma GCC unroll 9
    for (int i = 1; i < K; ++i) m = O::max(m, c[i]);
    const __m512i vo = OWN >= 0 ? v[OWN >= 0 ? OWN : 0] : _mm512_loadu_si512(own_ptr + x);
    __m512i res;
    if (TIES == TIES_FIRST) {
      res = v[K - 1];
#pragma GCC unroll 9
      for (int i = K - 2; i >= 0; --i) res = O::blend(O::eq(c[i], m), res, v[i]);
    } else {
      res = vmax;
#pragma GCC unroll 9
      for (int i = 0; i < K; ++i) res = O::min_if(res, O::eq(c[i], m), v[i]);
      if (TIES == TIES_KEEP) {
        __m512i co;
        if (OWN >= 0) {
          co = c[OWN >= 0 ? OWN : 0];
        } else {
          co = zero;
#pragma GCC unroll 9
          for (int i = 0; i < K; ++i) co = O::inc(co, O::eq(vo, v[i]), one);
          if (IGN) co = O::maskz(O::ne(vo, vign), co);
        }
        res = O::blend(O::eq(co, m), res, vo);
      }
    }
    if (IGN) res = O::blend(O::eq(m, zero) | O::eq(vo, vign), res, vo);
    _mm512_storeu_si512(out + x, res);
  }
}

#undef SEGKIT_AVX512

}  // namespace mode_avx512
}  // namespace cpu
}  // namespace segkit
#endif  // SEGKIT_X86
