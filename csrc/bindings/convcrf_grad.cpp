// segkit._C bindings of the trainable ConvCRF (csrc/cpu/convcrf_grad.h): convcrf_grad_forward
// and convcrf_grad_backward. Every array is checked here with bindings/checks.h (dtype, shape,
// C-contiguity, writeable) because the kernels read raw pointers; segkit/ops/convcrf_grad.py
// checks values.
#include <cstdint>
#include <initializer_list>
#include <string>

#include "bindings/checks.h"
#include "cpu/convcrf_grad.h"

namespace segkit {
namespace py = pybind11;
using bind::Arr;
using cpu::ConvCrfGradArgs;

namespace {

constexpr const char* kForward = "_C.convcrf_grad_forward";
constexpr const char* kBackward = "_C.convcrf_grad_backward";

// A C-contiguous array of dtype T and shape `shape` (writeable if asked): its data pointer.
template <typename T>
const T* checked(const py::array& a, const char* fn, const char* name,
                 std::initializer_list<index_t> shape) {
  Arr(a, fn, name).dtype<T>().shape(shape).c_contiguous();
  return static_cast<const T*>(a.data());
}

template <typename T>
T* checked_out(py::array& a, const char* fn, const char* name,
               std::initializer_list<index_t> shape) {
  Arr(a, fn, name).dtype<T>().shape(shape).c_contiguous().writeable();
  return static_cast<T*>(a.mutable_data());
}

ConvCrfGradArgs make_args(const py::array& unary, const char* fn, int filter_size, int blur,
                          int num_iter, int unary_kind, int init, bool final_softmax,
                          float unary_weight, float pos_compat, float col_compat, float pos_inv,
                          float col_inv, const py::object& colpos_inv) {
  Arr(unary, fn, "unary").ndim(4);
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

Inputs check_inputs(const ConvCrfGradArgs& a, const char* fn, const py::array& unary,
                    const py::array& image, const py::object& mask, const py::array& weight,
                    const py::object& compat) {
  Inputs in;
  in.unary = checked<float>(unary, fn, "unary", {a.n, a.c, a.h, a.w});
  in.image = checked<float>(image, fn, "image", {a.n, 3, a.h, a.w});
  in.weight = checked<float>(weight, fn, "weight", {a.c});
  if (!mask.is_none())
    in.mask = checked<std::uint8_t>(mask.cast<py::array>(), fn, "mask", {a.n, a.h, a.w});
  if (!compat.is_none())
    in.compat = checked<float>(compat.cast<py::array>(), fn, "compat", {a.c, a.c});
  return in;
}

void forward(const py::array& unary, const py::array& image, const py::object& mask,
             const py::array& weight, const py::object& compat, py::array& out,
             const py::object& saved,
             int filter_size, int blur, int num_iter, int unary_kind, int init,
             bool final_softmax, float unary_weight, float pos_compat, float col_compat,
             float pos_inv, float col_inv, const py::object& colpos_inv) {
  const auto a = make_args(unary, kForward, filter_size, blur, num_iter, unary_kind, init,
                           final_softmax, unary_weight, pos_compat, col_compat, pos_inv,
                           col_inv, colpos_inv);
  const Inputs in = check_inputs(a, kForward, unary, image, mask, weight, compat);
  index_t hp, wp;
  cpu::convcrf_grad_pooled(a, &hp, &wp);
  float* o = checked_out<float>(out, kForward, "out", {a.n, a.c, a.h, a.w});
  float* s = nullptr;  // None: inference, nothing kept for a backward
  if (!saved.is_none()) {
    py::array sv = saved.cast<py::array>();
    s = checked_out<float>(sv, kForward, "saved", {a.n, a.num_iter, a.c, hp, wp});
  }
  py::gil_scoped_release release;
  cpu::convcrf_grad_forward(in.unary, in.image, in.mask, in.weight, in.compat, o, s, a);
}

void backward(const py::array& grad, const py::array& unary, const py::array& image,
              const py::object& mask, const py::array& weight, const py::object& compat,
              const py::array& saved, py::array& d_unary, py::array& d_weight,
              py::array& d_sums, const py::object& d_compat, int filter_size, int blur,
              int num_iter, int unary_kind, int init, bool final_softmax, float unary_weight,
              float pos_compat, float col_compat, float pos_inv, float col_inv,
              const py::object& colpos_inv) {
  const auto a = make_args(unary, kBackward, filter_size, blur, num_iter, unary_kind, init,
                           final_softmax, unary_weight, pos_compat, col_compat, pos_inv,
                           col_inv, colpos_inv);
  const Inputs in = check_inputs(a, kBackward, unary, image, mask, weight, compat);
  index_t hp, wp;
  cpu::convcrf_grad_pooled(a, &hp, &wp);
  const float* g = checked<float>(grad, kBackward, "grad", {a.n, a.c, a.h, a.w});
  const float* s = checked<float>(saved, kBackward, "saved", {a.n, a.num_iter, a.c, hp, wp});
  float* du = checked_out<float>(d_unary, kBackward, "d_unary", {a.n, a.c, a.h, a.w});
  double* dw = checked_out<double>(d_weight, kBackward, "d_weight", {a.c});
  double* ds = checked_out<double>(d_sums, kBackward, "d_sums", {5});
  double* dmu = nullptr;
  if (in.compat != nullptr) {
    if (d_compat.is_none())
      throw py::value_error(std::string(kBackward) + ": d_compat is required when compat is "
                            "given");
    py::array k = d_compat.cast<py::array>();
    dmu = checked_out<double>(k, kBackward, "d_compat", {a.c, a.c});
  }
  py::gil_scoped_release release;
  cpu::convcrf_grad_backward(g, in.unary, in.image, in.mask, in.weight, in.compat, s, du, dw,
                             ds, dmu, a);
}

}  // namespace

void bind_convcrf_grad(py::module_& m) {
  m.def("convcrf_grad_forward", &forward, py::arg("unary"), py::arg("image"), py::arg("mask"),
        py::arg("weight"), py::arg("compat"), py::arg("out"), py::arg("saved"),
        py::arg("filter_size"), py::arg("blur"), py::arg("num_iter"), py::arg("unary_kind"),
        py::arg("init"), py::arg("final_softmax"), py::arg("unary_weight"),
        py::arg("pos_compat"), py::arg("col_compat"), py::arg("pos_inv"), py::arg("col_inv"),
        py::arg("colpos_inv"),
        "Trainable ConvCRF forward: unary (N, C, H, W) float32, image (N, 3, H, W) float32 "
        "0-255, mask (N, H, W) uint8 or None, weight (C,) float32, compat (C, C) float32 or "
        "None; writes out (N, C, H, W) and, unless saved is None (inference), saved (N, num_iter, "
        "C, Hp, Wp), the pooled message of every iteration. All C-contiguous. Releases the "
        "GIL.");
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
