// _C.soft_vote: M probability arrays to csrc/cpu/soft_vote.h's fused weighted argmax.
#include <pybind11/stl.h>

#include <vector>

#include "bindings/checks.h"
#include "cpu/soft_vote.h"

namespace segkit {
namespace py = pybind11;
using bind::Arr;

namespace {

bool soft_vote(const std::vector<py::array>& inputs, const py::array& weights,
               const py::array& labels, const py::object& probs) {
  const char* fn = "_C.soft_vote";
  if (inputs.empty()) throw py::value_error("_C.soft_vote: inputs needs at least one array");
  const py::array& first = inputs[0];
  Arr(first, fn, "inputs[0]").ndim(4).kind('f', 2, 4, "float16 or float32");
  cpu::SoftVoteArgs args;
  args.n = first.shape(0);
  args.c = first.shape(1);
  args.h = first.shape(2);
  args.w = first.shape(3);
  args.m = static_cast<int>(inputs.size());
  args.half = first.itemsize() == 2;
  std::vector<const void*> ptrs;
  std::vector<index_t> strides;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const py::array& a = inputs[i];
    const std::string name = "inputs[" + std::to_string(i) + "]";
    Arr(a, fn, name.c_str()).same_dtype(first, "inputs[0]").same_shape(first, "inputs[0]")
        .aligned();
    if (args.w > 1 && bind::elem_stride(a, 3, fn, name.c_str()) != 1)
      Arr(a, fn, name.c_str()).value_error("must have a contiguous last axis");
    ptrs.push_back(a.data());
    for (int d = 0; d < 3; ++d)
      strides.push_back(a.shape(d) > 1 ? bind::elem_stride(a, d, fn, name.c_str()) : 0);
  }
  Arr(weights, fn, "weights").dtype<float>().ndim(1).size(args.m, "one per input")
      .c_contiguous();
  Arr(labels, fn, "labels").ndim(3).dim(0, args.n, "N").dim(1, args.h, "H").dim(2, args.w, "W")
      .kind('u', 1, 2, "uint8 or uint16").c_contiguous().writeable();
  float* probs_ptr = nullptr;
  if (!probs.is_none()) {
    if (!py::isinstance<py::array>(probs))
      throw py::type_error("_C.soft_vote: probs must be None or a numpy array");
    py::array p = probs.cast<py::array>();
    Arr(p, fn, "probs").dtype<float>().same_shape(first, "inputs[0]").c_contiguous()
        .writeable();
    probs_ptr = static_cast<float*>(p.mutable_data());
  }
  args.inputs = ptrs.data();
  args.strides = strides.data();
  args.weights = static_cast<const float*>(weights.data());
  args.labels = const_cast<py::array&>(labels).mutable_data();
  args.label_bytes = static_cast<int>(labels.itemsize());
  args.probs = probs_ptr;
  py::gil_scoped_release release;
  return cpu::soft_vote(args);
}

}  // namespace

void bind_soft_vote(py::module_& m) {
  m.def("soft_vote", &soft_vote, py::arg("inputs"), py::arg("weights"), py::arg("labels"),
        py::arg("probs") = py::none(),
        "soft_vote(inputs, weights, labels, probs=None) -> bool\n\n"
        "Fused weighted sum over M (N, C, H, W) float16/float32 inputs (one dtype and shape; "
        "any non-negative strides, last axis contiguous) with float32 `weights` (M), argmax "
        "over C (ties: smallest class) into writeable C-contiguous uint8/uint16 `labels` "
        "(N, H, W), and the float32 sums into `probs` (N, C, H, W, C-contiguous) when given. "
        "Returns True if a sum was NaN. Releases the GIL; OpenMP over tiles of pixels.");
}

}  // namespace segkit
