// Which SIMD code path the CPU kernels take, chosen at run time (never -march=native): the
// table of instruction sets, and the thread count.
#ifdef _OPENMP
#include <omp.h>
#endif

#include <stdexcept>
#include <string>

#include "cpu/runtime.h"
#include "cpu/simd.h"

namespace segkit {
namespace cpu {

namespace {

// name, target string, vector bytes, and every feature the target enables (g++ -m<target>
// -dM -E lists them as __SSE3__ ... macros; tests/test_backend.py checks the two agree).
const IsaInfo kIsas[kIsaCount] = {
    {Isa::Base, "base", "", 16, "sse,sse2"},
    {Isa::Avx2, "avx2", SEGKIT_TARGET_AVX2_STR, 32,
     "sse,sse2,sse3,ssse3,sse4.1,sse4.2,popcnt,avx,avx2,fma,f16c"},
    {Isa::Avx512, "avx512", SEGKIT_TARGET_AVX512_STR, 64,
     "sse,sse2,sse3,ssse3,sse4.1,sse4.2,popcnt,avx,avx2,avx512f,avx512vl,avx512bw,avx512dq"},
};

// __builtin_cpu_supports takes a string literal only: one entry per feature the table names.
struct Feature {
  const char* name;
  bool (*has)();
};
#if SEGKIT_X86
#define SEGKIT_FEATURE(f) {f, [] { return __builtin_cpu_supports(f) != 0; }}
const Feature kFeatures[] = {
    SEGKIT_FEATURE("sse"),     SEGKIT_FEATURE("sse2"),    SEGKIT_FEATURE("sse3"),
    SEGKIT_FEATURE("ssse3"),   SEGKIT_FEATURE("sse4.1"),  SEGKIT_FEATURE("sse4.2"),
    SEGKIT_FEATURE("popcnt"),  SEGKIT_FEATURE("avx"),     SEGKIT_FEATURE("avx2"),
    SEGKIT_FEATURE("fma"),     SEGKIT_FEATURE("f16c"),    SEGKIT_FEATURE("avx512f"),
    SEGKIT_FEATURE("avx512vl"), SEGKIT_FEATURE("avx512bw"), SEGKIT_FEATURE("avx512dq"),
};
#undef SEGKIT_FEATURE
#endif

bool has_all(const char* list) {
  std::string s(list);
  size_t start = 0;
  while (start < s.size()) {
    size_t end = s.find(',', start);
    if (end == std::string::npos) end = s.size();
    if (!cpu_has_feature(s.substr(start, end - start))) return false;
    start = end + 1;
  }
  return true;
}

Isa detect_isa() {
#if SEGKIT_X86
  __builtin_cpu_init();
  for (int i = kIsaCount - 1; i > 0; --i)
    if (has_all(kIsas[i].features)) return kIsas[i].isa;
#endif
  return Isa::Base;
}

Isa g_best = detect_isa();
Isa g_active = g_best;
int g_threads = 0;

}  // namespace

const IsaInfo& isa_info(Isa isa) { return kIsas[static_cast<int>(isa)]; }

bool cpu_has_feature(const std::string& name) {
#if SEGKIT_X86
  __builtin_cpu_init();
  for (const Feature& f : kFeatures)
    if (name == f.name) return f.has();
  throw std::logic_error("segkit: CPU feature '" + name + "' is not in runtime.cpp's list");
#else
  (void)name;
  return false;
#endif
}

Isa best_isa() { return g_best; }
Isa active_isa() { return g_active; }

void set_isa(Isa isa) {
  if (static_cast<int>(isa) > static_cast<int>(g_best))
    throw std::invalid_argument(std::string("isa '") + isa_name(isa) +
                                "' is not supported by this processor (best: '" + isa_name(g_best) +
                                "')");
  g_active = isa;
}

const char* isa_name(Isa isa) { return isa_info(isa).name; }

Isa isa_from_name(const std::string& name) {
  for (const IsaInfo& i : kIsas)
    if (name == i.name) return i.isa;
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
