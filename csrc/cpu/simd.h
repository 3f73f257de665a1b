// The one SIMD layer of the CPU kernels: the instruction sets, how a kernel is compiled for
// each of them and picked at run time, the vector types with their loads and stores, and the
// vector form of the float helpers of common/ (one exp, common/math.h).
//
// The module is compiled for baseline x86-64 (never -march=native). A kernel that wants SIMD
// writes its body once as a template over an instruction-set tag (`Isa::bytes` is the vector
// width) and calls it through dispatch_isa():
//
//   dispatch_isa([&](auto isa) SEGKIT_BODY { my_row<decltype(isa)::bytes>(args...); });
//
// dispatch_isa() switches on active_isa() and calls the lambda from a trampoline that carries
// that instruction set's `target` attribute and `flatten`, so the whole body is compiled once
// per instruction set. Those trampolines are the only target attributes of csrc/ apart from
// the few helpers written with intrinsics (SEGKIT_TARGET_*), which must carry their own.
// Compile-time integers (class blocks, window rows, tie rules) are picked with
// dispatch_upto() / dispatch_exact() / dispatch_bool() in the same style.
//
// To add an instruction set: a row in SEGKIT_ISA_TABLE (runtime.cpp lists the CPU features to
// check, which must be every feature its target string enables), a tag below, and a case in
// dispatch_isa(). See csrc/README.md.
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "common/macros.h"
#include "common/math.h"
#include "cpu/runtime.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SEGKIT_X86 1
#else
#define SEGKIT_X86 0
#endif

// Vector arguments of inlined helpers compiled under AVX targets: no ABI is involved.
#pragma GCC diagnostic ignored "-Wpsabi"

// The target strings, one per instruction set (also reported by runtime.cpp's table).
#define SEGKIT_TARGET_AVX2_STR "avx2,fma,f16c"
#define SEGKIT_TARGET_AVX512_STR "avx512f,avx512vl,avx512bw,avx512dq"
#define SEGKIT_TARGET_AVX2 __attribute__((target(SEGKIT_TARGET_AVX2_STR)))
#define SEGKIT_TARGET_AVX512 __attribute__((target(SEGKIT_TARGET_AVX512_STR)))

#define SEGKIT_ALWAYS __attribute__((always_inline)) inline
// For the lambdas handed to the dispatch functions: inlined at once into their caller, so
// that each variant is optimised as one function body, as if written out by hand (their
// floating-point results depend on it: FMA contraction sees the whole body).
#define SEGKIT_BODY __attribute__((always_inline))

namespace segkit {
namespace cpu {

// ---- instruction-set tags (compile time) ----------------------------------------------------
struct IsaBase {
  static constexpr Isa id = Isa::Base;
  static constexpr int bytes = 16;  // SSE2
};
struct IsaAvx2 {
  static constexpr Isa id = Isa::Avx2;
  static constexpr int bytes = 32;
};
struct IsaAvx512 {
  static constexpr Isa id = Isa::Avx512;
  static constexpr int bytes = 64;
};

// ---- dispatch ---------------------------------------------------------------------------------
namespace detail {
template <class F>
__attribute__((flatten)) inline auto on_base(const F& f) -> decltype(f(IsaBase{})) {
  return f(IsaBase{});
}
#if SEGKIT_X86
template <class F>
SEGKIT_TARGET_AVX2 __attribute__((flatten)) inline auto on_avx2(const F& f)
    -> decltype(f(IsaBase{})) {
  return f(IsaAvx2{});
}
template <class F>
SEGKIT_TARGET_AVX512 __attribute__((flatten)) inline auto on_avx512(const F& f)
    -> decltype(f(IsaBase{})) {
  return f(IsaAvx512{});
}
#endif
}  // namespace detail

// f(tag) compiled for instruction set `isa` (at most active_isa()).
template <class F>
inline auto dispatch_isa(Isa isa, const F& f) -> decltype(f(IsaBase{})) {
#if SEGKIT_X86
  switch (isa) {
    case Isa::Avx512: return detail::on_avx512(f);
    case Isa::Avx2: return detail::on_avx2(f);
    default: break;
  }
#endif
  return detail::on_base(f);
}

// f(tag) compiled for the active instruction set (see the top of this file).
template <class F>
inline auto dispatch_isa(const F& f) -> decltype(f(IsaBase{})) {
  return dispatch_isa(active_isa(), f);
}

// The widest instruction set, at most the active one, whose vectors fit in `bytes`; false
// when even the baseline's do not.
inline bool isa_fitting(index_t bytes, Isa* isa) {
  for (int i = static_cast<int>(active_isa()); i >= 0; --i)
    if (bytes >= isa_info(static_cast<Isa>(i)).vector_bytes) {
      *isa = static_cast<Isa>(i);
      return true;
    }
  return false;
}

template <int N>
using int_c = std::integral_constant<int, N>;

// f(int_c<N>{}) for the first N of Ns with n <= N; false (and no call) if n exceeds them all.
template <int... Ns, class F>
SEGKIT_ALWAYS bool dispatch_upto(int n, const F& f) {
  bool done = false;
  ((!done && n <= Ns ? (f(int_c<Ns>{}), done = true) : false), ...);
  return done;
}

// f(int_c<N>{}) for the N of Ns equal to n; false (and no call) if none is.
template <int... Ns, class F>
SEGKIT_ALWAYS bool dispatch_exact(int n, const F& f) {
  bool done = false;
  ((!done && n == Ns ? (f(int_c<Ns>{}), done = true) : false), ...);
  return done;
}

// f(std::true_type{}) or f(std::false_type{}).
template <class F>
SEGKIT_ALWAYS void dispatch_bool(bool b, const F& f) {
  if (b)
    f(std::true_type{});
  else
    f(std::false_type{});
}

// ---- vectors --------------------------------------------------------------------------------
// B bytes of T (GCC/Clang vector extension; a class member so that template arguments do not
// drop the attribute).
template <typename T, int B>
struct Vec {
  typedef T type __attribute__((vector_size(B)));
  static constexpr int lanes = B / static_cast<int>(sizeof(T));
};
template <typename T, int B>
using vec_t = typename Vec<T, B>::type;

// Unaligned load / store of a whole vector.
template <typename V, typename T>
SEGKIT_ALWAYS V loadv(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename V, typename T>
SEGKIT_ALWAYS void storev(T* p, V v) {
  std::memcpy(p, &v, sizeof v);
}
// The first n lanes of v at p.
template <typename V, typename T>
SEGKIT_ALWAYS void store_lanes(T* p, V v, int n) {
  if (n * sizeof(T) == sizeof(V)) {
    storev(p, v);
  } else {
    T t[sizeof(V) / sizeof(T)];
    std::memcpy(t, &v, sizeof v);
    std::memcpy(p, t, sizeof(T) * n);
  }
}

// B bytes of float32 lanes from IEEE float16 bits: vcvtph2ps where the instruction set has it
// (AVX2 tier: F16C; AVX-512: AVX512F), else an exact integer conversion (normals rebias the
// exponent, subnormals are mantissa * 2^-24, inf/NaN keep all-ones).
template <int B>
inline vec_t<float, B> load_half_portable(const std::uint16_t* p) {
  typedef vec_t<std::uint32_t, B> U;
  typedef vec_t<std::int32_t, B> I;
  typedef vec_t<float, B> F;
  vec_t<std::uint16_t, B / 2> h;
  std::memcpy(&h, p, sizeof h);
  const U u = __builtin_convertvector(h, U);
  const U sign = (u & 0x8000u) << 16;
  const U mag = u & 0x7fffu;
  const U normal = (mag << 13) + 0x38000000u;  // exponent bias 15 -> 127
  const F sub = __builtin_convertvector((I)mag, F) * 0x1p-24f;
  const U special = 0x7f800000u | ((mag & 0x3ffu) << 13);
  const U is_sub = (U)(mag < 0x400u);
  const U is_special = (U)(mag >= 0x7c00u);
  U bits = (is_sub & (U)sub) | (~is_sub & normal);
  bits = (is_special & special) | (~is_special & bits);
  return (F)(bits | sign);
}

// Not always_inline: these inline into the trampolines of their instruction set (flatten).
inline vec_t<float, 16> load_half(IsaBase, const std::uint16_t* p) {
  return load_half_portable<16>(p);
}
#if SEGKIT_X86
SEGKIT_TARGET_AVX2 inline vec_t<float, 32> load_half(IsaAvx2, const std::uint16_t* p) {
  return (vec_t<float, 32>)_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
SEGKIT_TARGET_AVX512 inline vec_t<float, 64> load_half(IsaAvx512, const std::uint16_t* p) {
  return (vec_t<float, 64>)_mm512_cvtph_ps(
      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
#endif

}  // namespace cpu

// ---- vector lanes for the float helpers of common/ (math::exp_poly) -------------------------
namespace math {
template <int B>
struct VecFloatLanes {
  typedef cpu::vec_t<float, B> F;
  typedef cpu::vec_t<int, B> I;
  static SEGKIT_ALWAYS F splat(float v) { return F{} + v; }
  static SEGKIT_ALWAYS I to_int(F r) { return __builtin_convertvector(r, I); }
  static SEGKIT_ALWAYS F pow2(I n) { return (F)((n + 127) << 23); }
};
template <>
struct FloatLanes<cpu::vec_t<float, 16>> : VecFloatLanes<16> {};
template <>
struct FloatLanes<cpu::vec_t<float, 32>> : VecFloatLanes<32> {};
template <>
struct FloatLanes<cpu::vec_t<float, 64>> : VecFloatLanes<64> {};
}  // namespace math

}  // namespace segkit
