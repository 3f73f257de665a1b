// _C.mode_filter: (N, H, W) label arrays to csrc/cpu/mode_filter.h.
#include "bindings/checks.h"
#include "cpu/mode_filter.h"

namespace segkit {
namespace py = pybind11;
using bind::Arr;

namespace {

void mode_filter(const py::array& in, const py::array& out, int size, int anchor, int ties,
                 const py::object& ignore_index) {
  const char* fn = "_C.mode_filter";
  Arr(in, fn, "input").ndim(3).native();
  Arr(out, fn, "output").same_shape(in, "input").same_dtype(in, "input").c_contiguous()
      .writeable();
  cpu::ModeFilterArgs args;
  args.size = size;
  args.anchor = anchor;
  args.ties = ties;
  args.has_ignore = bind::optional_int(ignore_index, fn, "ignore_index", &args.ignore);
  bind::dispatch_labels(in, fn, "input", [&](auto tag) {
    if (in.size() == 0) return;  // empty arrays may carry zero strides
    using T = decltype(tag);
    args.n = in.shape(0);
    args.h = in.shape(1);
    args.w = in.shape(2);
    args.in_sn = bind::elem_stride(in, 0, fn, "input");
    args.in_sh = bind::elem_stride(in, 1, fn, "input");
    if (args.w > 1 && bind::elem_stride(in, 2, fn, "input") != 1)
      Arr(in, fn, "input").value_error("columns (the last axis) must be contiguous");
    Arr(in, fn, "input").aligned();
    const T* src = static_cast<const T*>(in.data());
    T* dst = static_cast<T*>(const_cast<py::array&>(out).mutable_data());
    py::gil_scoped_release release;
    cpu::mode_filter<T>(src, dst, args);
  });
}

}  // namespace

void bind_mode_filter(py::module_& m) {
  m.def("mode_filter", &mode_filter, py::arg("input"), py::arg("output"), py::arg("size"),
        py::arg("anchor"), py::arg("ties"), py::arg("ignore_index") = py::none(),
        "mode_filter(input, output, size, anchor, ties, ignore_index=None)\n\n"
        "Mode filter of (N, H, W) label arrays into a C-contiguous writeable `output` of the "
        "same shape and dtype (uint8, uint16, int32, int64). `input`: any non-negative strides, "
        "last axis contiguous. anchor: 0 center, 1 topleft; ties: 0 keep, 1 smallest, 2 first. "
        "Releases the GIL; OpenMP over rows.");
}

}  // namespace segkit
