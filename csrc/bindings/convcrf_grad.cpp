// segkit._C bindings of the trainable ConvCRF (csrc/cpu/convcrf_grad.h): convcrf_grad_forward
// and convcrf_grad_backward. Every array is checked here (shape, dtype, C-contiguity,
// writeable) because the kernels read raw pointers; segkit/ops/convcrf_grad.py checks values.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cpu/convcrf_grad.h"

namespace py = pybind11;
using segkit::index_t;
using segkit::cpu::ConvCrfGradArgs;

namespace {

std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// Raises unless `a` is a C-contiguous array of dtype T and shape `shape` (writeable if asked).
template <typename T>
void check(const py::array& a, const char* name, const std::vector<index_t>& shape,
           bool writeable = false) {
  const std::string what = std::string("_C.convcrf_grad: ") + name;
  if (!a.dtype().is(py::dtype::of<T>()))
    throw py::type_error(what + " must be " + py::str(py::dtype::of<T>()).cast<std::string>() +
                         ", got " + py::str(a.dtype()).cast<std::string>());
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = a.shape(i) == shape[i];
  if (!ok) {
    std::string want = "(";
    for (size_t i = 0; i < shape.size(); ++i) want += (i ? ", " : "") + std::to_string(shape[i]);
    throw py::value_error(what + " must have shape " + want + (shape.size() == 1 ? ",)" : ")") +
                          ", got " + shape_str(a));
  }
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(what + " must be C-contiguous");
  if (writeable && !a.writeable()) throw py::value_error(what + " must be writeable");
}

ConvCrfGradArgs make_args(const py::array& unary, int filter_size, int blur, int num_iter,
                          int unary_kind, int init, bool final_softmax, float unary_weight,
                          float pos_compat, float col_compat, float pos_inv, float col_inv,
                          const py::object& colpos_inv) {
  if (unary.ndim() != 4)
    throw py::value_error("_C.convcrf_grad: unary must be (N, C, H, W), got " + shape_str(unary));
  ConvCrfGradArgs a;
  a.n = unary.shape(0), a.c = unary.shape(1), a.h = unary.shape(2), a.w = unary.shape(3);
  a.filter_size = filter_size, a.blur = blur, a.num_iter = num_iter;
  a.unary_kind = unary_kind, a.init = init, a.final_softmax = final_softmax;
  a.unary_weight = unary_weight, a.pos_compat = pos_compat, a.col_compat = col_compat;
  a.pos_inv = pos_inv, a.col_inv = col_inv;
  a.col_pos = !colpos_inv.is_none();
  a.colpos_inv = a.col_pos ? colpos_inv.cast<float>() : 0.0f;
  return a;
}

struct Inputs {
  const float *unary, *image, *weight, *compat = nullptr;
  const std::uint8_t* mask = nullptr;
};

Inputs check_inputs(const ConvCrfGradArgs& a, const py::array& unary, const py::array& image,
                    const py::object& mask, const py::array& weight, const py::object& compat) {
  check<float>(unary, "unary", {a.n, a.c, a.h, a.w});
  check<float>(image, "image", {a.n, 3, a.h, a.w});
  check<float>(weight, "weight", {a.c});
  Inputs in;
  in.unary = static_cast<const float*>(unary.data());
  in.image = static_cast<const float*>(image.data());
  in.weight = static_cast<const float*>(weight.data());
  if (!mask.is_none()) {
    py::array m = mask.cast<py::array>();
    check<std::uint8_t>(m, "mask", {a.n, a.h, a.w});
    in.mask = static_cast<const std::uint8_t*>(m.data());
  }
  if (!compat.is_none()) {
    py::array k = compat.cast<py::array>();
    check<float>(k, "compat", {a.c, a.c});
    in.compat = static_cast<const float*>(k.data());
  }
  return in;
}

void forward(const py::array& unary, const py::array& image, const py::object& mask,
             const py::array& weight, const py::object& compat, py::array& out, py::array& saved,
             int filter_size, int blur, int num_iter, int unary_kind, int init,
             bool final_softmax, float unary_weight, float pos_compat, float col_compat,
             float pos_inv, float col_inv, const py::object& colpos_inv) {
  const auto a = make_args(unary, filter_size, blur, num_iter, unary_kind, init, final_softmax,
                           unary_weight, pos_compat, col_compat, pos_inv, col_inv, colpos_inv);
  const Inputs in = check_inputs(a, unary, image, mask, weight, compat);
  index_t hp, wp;
  segkit::cpu::convcrf_grad_pooled(a, &hp, &wp);
  check<float>(out, "out", {a.n, a.c, a.h, a.w}, true);
  check<float>(saved, "saved", {a.n, a.num_iter, a.c, hp, wp}, true);
  float* o = static_cast<float*>(out.mutable_data());
  float* s = static_cast<float*>(saved.mutable_data());
  py::gil_scoped_release release;
  segkit::cpu::convcrf_grad_forward(in.unary, in.image, in.mask, in.weight, in.compat, o, s, a);
}

void backward(const py::array& grad, const py::array& unary, const py::array& image,
              const py::object& mask, const py::array& weight, const py::object& compat,
              const py::array& saved, py::array& d_unary, py::array& d_weight,
              py::array& d_sums, const py::object& d_compat, int filter_size, int blur,
              int num_iter, int unary_kind, int init, bool final_softmax, float unary_weight,
              float pos_compat, float col_compat, float pos_inv, float col_inv,
              const py::object& colpos_inv) {
  const auto a = make_args(unary, filter_size, blur, num_iter, unary_kind, init, final_softmax,
                           unary_weight, pos_compat, col_compat, pos_inv, col_inv, colpos_inv);
  const Inputs in = check_inputs(a, unary, image, mask, weight, compat);
  index_t hp, wp;
  segkit::cpu::convcrf_grad_pooled(a, &hp, &wp);
  check<float>(grad, "grad", {a.n, a.c, a.h, a.w});
  check<float>(saved, "saved", {a.n, a.num_iter, a.c, hp, wp});
  check<float>(d_unary, "d_unary", {a.n, a.c, a.h, a.w}, true);
  check<double>(d_weight, "d_weight", {a.c}, true);
  check<double>(d_sums, "d_sums", {5}, true);
  double* dmu = nullptr;
  if (in.compat != nullptr) {
    if (d_compat.is_none())
      throw py::value_error("_C.convcrf_grad: d_compat is required when compat is given");
    py::array k = d_compat.cast<py::array>();
    check<double>(k, "d_compat", {a.c, a.c}, true);
    dmu = static_cast<double*>(k.mutable_data());
  }
  const float* g = static_cast<const float*>(grad.data());
  const float* s = static_cast<const float*>(saved.data());
  float* du = static_cast<float*>(d_unary.mutable_data());
  double* dw = static_cast<double*>(d_weight.mutable_data());
  double* ds = static_cast<double*>(d_sums.mutable_data());
  py::gil_scoped_release release;
  segkit::cpu::convcrf_grad_backward(g, in.unary, in.image, in.mask, in.weight, in.compat, s,
                                     du, dw, ds, dmu, a);
}

}  // namespace

namespace segkit {

void bind_convcrf_grad(py::module_& m) {
  m.def("convcrf_grad_forward", &forward, py::arg("unary"), py::arg("image"), py::arg("mask"),
        py::arg("weight"), py::arg("compat"), py::arg("out"), py::arg("saved"),
        py::arg("filter_size"), py::arg("blur"), py::arg("num_iter"), py::arg("unary_kind"),
        py::arg("init"), py::arg("final_softmax"), py::arg("unary_weight"),
        py::arg("pos_compat"), py::arg("col_compat"), py::arg("pos_inv"), py::arg("col_inv"),
        py::arg("colpos_inv"),
        "Trainable ConvCRF forward: unary (N, C, H, W) float32, image (N, 3, H, W) float32 "
        "0-255, mask (N, H, W) uint8 or None, weight (C,) float32, compat (C, C) float32 or "
        "None; writes out (N, C, H, W) and saved (N, num_iter, C, Hp, Wp), the pooled message "
        "of every iteration. All C-contiguous. Releases the GIL.");
  m.def("convcrf_grad_backward", &backward, py::arg("grad"), py::arg("unary"),
        py::arg("image"), py::arg("mask"), py::arg("weight"), py::arg("compat"),
        py::arg("saved"), py::arg("d_unary"), py::arg("d_weight"), py::arg("d_sums"),
        py::arg("d_compat"), py::arg("filter_size"), py::arg("blur"), py::arg("num_iter"),
        py::arg("unary_kind"), py::arg("init"), py::arg("final_softmax"),
        py::arg("unary_weight"), py::arg("pos_compat"), py::arg("col_compat"),
        py::arg("pos_inv"), py::arg("col_inv"), py::arg("colpos_inv"),
        "Trainable ConvCRF backward: from grad = dL/dout and the forward's inputs and saved "
        "messages, writes d_unary (float32), d_weight (C,) float64, d_sums (5,) float64 (sum "
        "Gp S, Gc S, dP Gp S, dI Gc S, dP Gc S) and d_compat (C, C) float64 when compat is "
        "given. Deterministic. Releases the GIL.");
}

}  // namespace segkit
