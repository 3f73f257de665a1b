// segkit._C: the Python face of the CPU kernels. The one PYBIND11_MODULE; each op binds itself
// from csrc/bindings/<op>.cpp through a `void bind_<op>(py::module_&)` declared below.
// Bindings are thin: check every array (csrc/bindings/checks.h), unpack it into pointers,
// shapes and strides, release the GIL, call csrc/cpu/. Friendly argument checks for users
// happen in segkit/ops/*.py; the checks in the bindings guard memory safety.
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace segkit {
void bind_mode_filter(py::module_& m);
void bind_confusion(py::module_& m);
void bind_soft_vote(py::module_& m);
void bind_convcrf(py::module_& m);
void bind_label_issues(py::module_& m);
void bind_runtime(py::module_& m);
void bind_convcrf_grad(py::module_& m);
void bind_machine(py::module_& m);
}  // namespace segkit

PYBIND11_MODULE(_C, m) {
  m.doc() = "segkit's compiled CPU kernels (pybind11 + OpenMP). Use the segkit package, not this.";
  segkit::bind_mode_filter(m);
  segkit::bind_confusion(m);
  segkit::bind_soft_vote(m);
  segkit::bind_convcrf(m);
  segkit::bind_label_issues(m);
  segkit::bind_runtime(m);
  segkit::bind_convcrf_grad(m);
  segkit::bind_machine(m);
}
