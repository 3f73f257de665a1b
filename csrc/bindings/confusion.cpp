// _C.confusion: two label arrays to csrc/cpu/confusion.h's counts.
#include "bindings/checks.h"
#include "cpu/confusion.h"

namespace segkit {
namespace py = pybind11;
using bind::Arr;

namespace {

void confusion(const py::array& pred, const py::array& gt, int num_classes,
               const py::object& ignore_index, const py::array& counts, const py::array& bad) {
  const char* fn = "_C.confusion";
  if (num_classes < 1)
    throw py::value_error("_C.confusion: num_classes must be >= 1, got " +
                          std::to_string(num_classes));
  Arr(pred, fn, "pred").native().c_contiguous();
  Arr(gt, fn, "gt").same_dtype(pred, "pred").size(pred.size(), "pred's size").c_contiguous();
  Arr(counts, fn, "counts").dtype<int64_t>()
      .size(static_cast<py::ssize_t>(num_classes) * num_classes, "num_classes^2")
      .c_contiguous().writeable();
  Arr(bad, fn, "bad").dtype<int64_t>().size(2).c_contiguous().writeable();
  long long ignore = 0;
  const bool has_ignore = bind::optional_int(ignore_index, fn, "ignore_index", &ignore);
  auto* out = static_cast<int64_t*>(const_cast<py::array&>(counts).mutable_data());
  auto* oob = static_cast<int64_t*>(const_cast<py::array&>(bad).mutable_data());
  bind::dispatch_labels(pred, fn, "pred", [&](auto tag) {
    using T = decltype(tag);
    const T* p = static_cast<const T*>(pred.data());
    const T* g = static_cast<const T*>(gt.data());
    const index_t n = pred.size();
    py::gil_scoped_release release;
    cpu::confusion<T>(p, g, n, num_classes, has_ignore, ignore, out, oob);
  });
}

}  // namespace

void bind_confusion(py::module_& m) {
  m.def("confusion", &confusion, py::arg("pred"), py::arg("gt"), py::arg("num_classes"),
        py::arg("ignore_index"), py::arg("counts"), py::arg("bad"),
        "confusion(pred, gt, num_classes, ignore_index, counts, bad)\n\n"
        "Adds the confusion counts of two C-contiguous label arrays of one dtype and size to "
        "`counts` (writeable C-contiguous int64, num_classes^2 entries, row = ground truth) and "
        "the out-of-range ground-truth and predicted label counts to `bad` (int64, 2). "
        "Releases the GIL; OpenMP over pixels.");
}

}  // namespace segkit
