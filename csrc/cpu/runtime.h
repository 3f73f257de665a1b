// CPU runtime settings shared by every kernel: SIMD path and thread count.
#pragma once
#include <cstdint>
#include <string>

#include "common/macros.h"

namespace segkit {
namespace cpu {

// ---- runtime SIMD selection (x86-64: baseline SSE2, AVX2 tier, AVX-512 tier) ----
// The table of instruction sets lives in runtime.cpp; cpu/simd.h compiles kernels for them.
enum class Isa { Base = 0, Avx2 = 1, Avx512 = 2 };
constexpr int kIsaCount = 3;

struct IsaInfo {
  Isa isa;
  const char* name;      // "base", "avx2", "avx512"
  const char* target;    // the `target` attribute its kernels are compiled with ("" for base)
  int vector_bytes;      // vector width of its kernels
  const char* features;  // every CPU feature that target enables, comma-separated
};
const IsaInfo& isa_info(Isa isa);
bool cpu_has_feature(const std::string& name);  // one feature, as __builtin_cpu_supports names it

Isa best_isa();                 // the widest instruction set whose features this CPU all has
Isa active_isa();               // what the kernels use now (best_isa() unless lowered)
void set_isa(Isa isa);          // lower (or restore) the ISA; raises if unsupported
const char* isa_name(Isa isa);
Isa isa_from_name(const std::string& name);

int max_threads();
void set_threads(int n);        // 0: OpenMP's default

}  // namespace cpu
}  // namespace segkit
