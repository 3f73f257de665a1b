// CPU runtime settings shared by every kernel: SIMD path and thread count.
#pragma once
#include <cstdint>
#include <string>

#include "common/macros.h"

namespace segkit {
namespace cpu {

// ---- runtime SIMD selection (x86-64: baseline SSE2, AVX2, AVX-512BW) ----
enum class Isa { Base = 0, Avx2 = 1, Avx512 = 2 };
Isa best_isa();                 // what this processor supports
Isa active_isa();               // what the kernels use now (best_isa() unless lowered)
void set_isa(Isa isa);          // lower (or restore) the ISA; raises if unsupported
const char* isa_name(Isa isa);
Isa isa_from_name(const std::string& name);

int max_threads();
void set_threads(int n);        // 0: OpenMP's default

}  // namespace cpu
}  // namespace segkit
