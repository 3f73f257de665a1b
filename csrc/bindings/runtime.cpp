// _C.build_info, the SIMD path and the thread count (csrc/cpu/runtime.h).
#include <string>

#include "bindings/checks.h"
#include "cpu/runtime.h"

namespace segkit {
namespace py = pybind11;

namespace {

py::dict build_info() {
  py::dict d;
#if defined(__clang__)
  d["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  d["compiler"] = std::string("gcc ") + __VERSION__;
#else
  d["compiler"] = "unknown";
#endif
#ifdef _OPENMP
  d["openmp"] = _OPENMP;
#else
  d["openmp"] = py::none();
#endif
  // The table of instruction sets (csrc/cpu/runtime.cpp) with what this CPU has of each.
  py::list table;
  for (int i = 0; i < cpu::kIsaCount; ++i) {
    const auto& info = cpu::isa_info(static_cast<cpu::Isa>(i));
    py::dict row, has;
    const std::string features = info.features;
    size_t start = 0;
    while (start < features.size()) {
      size_t end = features.find(',', start);
      if (end == std::string::npos) end = features.size();
      const std::string f = features.substr(start, end - start);
      has[py::str(f)] = cpu::cpu_has_feature(f);
      start = end + 1;
    }
    row["name"] = info.name;
    row["target"] = info.target;
    row["vector_bytes"] = info.vector_bytes;
    row["features"] = has;
    row["supported"] = i <= static_cast<int>(cpu::best_isa());
    table.append(row);
  }
  d["simd_table"] = table;
  d["simd_best"] = cpu::isa_name(cpu::best_isa());
  d["simd_active"] = cpu::isa_name(cpu::active_isa());
  d["threads"] = cpu::max_threads();
  return d;
}

}  // namespace

void bind_runtime(py::module_& m) {
  m.def("build_info", &build_info, "Compiler, OpenMP version, SIMD paths and thread count.");
  m.def(
      "simd_isa", []() { return cpu::isa_name(cpu::active_isa()); },
      "The SIMD code path the CPU kernels use now: 'base', 'avx2' or 'avx512'.");
  m.def(
      "set_simd_isa",
      [](const std::string& name) {
        const char* old = cpu::isa_name(cpu::active_isa());
        cpu::set_isa(cpu::isa_from_name(name));
        return std::string(old);
      },
      py::arg("name"),
      "Select the SIMD path ('base', 'avx2', 'avx512'; at most what the CPU has). Returns the "
      "previous one. For tests and benchmarks.");
  m.def("get_num_threads", &cpu::max_threads, "OpenMP threads the kernels use.");
  m.def("set_num_threads", &cpu::set_threads, py::arg("n"),
        "OpenMP threads for the kernels (0: OpenMP's default).");
}

}  // namespace segkit
