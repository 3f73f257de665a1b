// Which SIMD code path the CPU kernels take, chosen at run time (never -march=native).
#ifdef _OPENMP
#include <omp.h>
#endif

#include <stdexcept>

#include "cpu/runtime.h"

namespace segkit {
namespace cpu {

static Isa detect_isa() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")) return Isa::Avx512;
  if (__builtin_cpu_supports("avx2")) return Isa::Avx2;
#endif
  return Isa::Base;
}

static Isa g_best = detect_isa();
static Isa g_active = g_best;
static int g_threads = 0;

Isa best_isa() { return g_best; }
Isa active_isa() { return g_active; }

void set_isa(Isa isa) {
  if (static_cast<int>(isa) > static_cast<int>(g_best))
    throw std::invalid_argument(std::string("isa '") + isa_name(isa) +
                                "' is not supported by this processor (best: '" + isa_name(g_best) +
                                "')");
  g_active = isa;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    default: return "base";
  }
}

Isa isa_from_name(const std::string& name) {
  if (name == "avx512") return Isa::Avx512;
  if (name == "avx2") return Isa::Avx2;
  if (name == "base") return Isa::Base;
  throw std::invalid_argument("isa must be one of 'base', 'avx2', 'avx512', got '" + name + "'");
}

int max_threads() {
#ifdef _OPENMP
  return g_threads > 0 ? g_threads : omp_get_max_threads();
#else
  return 1;
#endif
}

void set_threads(int n) {
  if (n < 0) throw std::invalid_argument("threads must be >= 0, got " + std::to_string(n));
  g_threads = n;
}

}  // namespace cpu
}  // namespace segkit
