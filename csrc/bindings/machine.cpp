// _C.machine_*: the machine figures of csrc/cpu/machine.h, for benchmarks/bench_machine.py.
#include <string>

#include "bindings/checks.h"
#include "cpu/machine.h"

namespace segkit {
namespace py = pybind11;
using bind::Arr;

namespace {

void check_reps(const char* fn, int reps) {
  if (reps < 1) throw py::value_error(std::string(fn) + ": reps must be >= 1, got " +
                                      std::to_string(reps));
}

double machine_read(const py::array& x, int reps) {
  const char* fn = "_C.machine_read";
  Arr(x, fn, "x").dtype<float>().ndim(1).c_contiguous().aligned();
  check_reps(fn, reps);
  const float* p = static_cast<const float*>(x.data());
  const index_t n = x.shape(0);
  py::gil_scoped_release release;
  return cpu::machine_read(p, n, reps);
}

void machine_update(const py::array& x, int reps, float a, float b) {
  const char* fn = "_C.machine_update";
  Arr(x, fn, "x").dtype<float>().ndim(1).c_contiguous().aligned().writeable();
  check_reps(fn, reps);
  float* p = static_cast<float*>(const_cast<py::array&>(x).mutable_data());
  const index_t n = x.shape(0);
  py::gil_scoped_release release;
  cpu::machine_update(p, n, reps, a, b);
}

double machine_fma(long long iters, float start, float m, float a) {
  if (iters < 0)
    throw py::value_error("_C.machine_fma: iters must be >= 0, got " + std::to_string(iters));
  py::gil_scoped_release release;
  return cpu::machine_fma(iters, start, m, a);
}

void machine_exp(const py::array& x, const py::array& out, int reps) {
  const char* fn = "_C.machine_exp";
  Arr(x, fn, "x").dtype<float>().ndim(1).c_contiguous().aligned();
  if (x.shape(0) % 16 != 0)
    Arr(x, fn, "x").value_error("must hold a multiple of 16 values, got " +
                                std::to_string(x.shape(0)));
  Arr(out, fn, "out").dtype<float>().same_shape(x, "x").c_contiguous().aligned().writeable();
  check_reps(fn, reps);
  const float* px = static_cast<const float*>(x.data());
  float* po = static_cast<float*>(const_cast<py::array&>(out).mutable_data());
  const index_t n = x.shape(0);
  py::gil_scoped_release release;
  cpu::machine_exp(px, po, n, reps);
}

}  // namespace

void bind_machine(py::module_& m) {
  m.def("machine_read", &machine_read, py::arg("x"), py::arg("reps") = 1,
        "machine_read(x, reps=1) -> float\n\nReads float32 C-contiguous `x` (1-D) `reps` times "
        "on the kernels' threads and SIMD path; returns the sum of the last pass. For "
        "benchmarks/bench_machine.py (bandwidth: 4 * x.size * reps bytes).");
  m.def("machine_update", &machine_update, py::arg("x"), py::arg("reps") = 1,
        py::arg("a") = 1.0f, py::arg("b") = 0.0f,
        "machine_update(x, reps=1, a=1, b=0)\n\nx = x * a + b in place, `reps` times, on the "
        "kernels' threads and SIMD path (8 * x.size * reps bytes moved).");
  m.def("machine_fma", &machine_fma, py::arg("iters"), py::arg("start") = 0.0f,
        py::arg("m") = 1.0f, py::arg("a") = 0.0f,
        "machine_fma(iters, start=0, m=1, a=0) -> float\n\nPer thread 12 independent vector "
        "chains acc = acc * m + a (chain c from start + c), `iters` rounds; returns the sum of "
        "every lane (2 * 12 * machine_lanes() * iters * threads floating-point operations).");
  m.def("machine_lanes", &cpu::machine_lanes, "Float lanes of the active SIMD path's vectors.");
  m.def("machine_exp", &machine_exp, py::arg("x"), py::arg("out"), py::arg("reps") = 1,
        "machine_exp(x, out, reps=1)\n\nout = the kernels' exp (exp_poly) of float32 `x` "
        "(1-D, a multiple of 16 values), `reps` times, on the kernels' threads and SIMD path.");
}

}  // namespace segkit
