// segkit._C bindings of the trainable ConvCRF (csrc/cpu/convcrf_grad.h): convcrf_grad_forward
// and convcrf_grad_backward. They take the setting by the names and types of the torch op
// (segkit.torch: unary_kind "logits" | "probs", init "convcrf" | "softmax", the bandwidths
// themselves), and the backward returns the gradient w.r.t. each named value, through the one
// chain rule of common/convcrf_grad_params.h. Every array is checked here with
// bindings/checks.h (dtype, shape, C-contiguity, writeable) because the kernels read raw
// pointers; segkit/ops/convcrf_grad.py checks values.
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "bindings/checks.h"
#include "common/convcrf.h"
#include "common/convcrf_grad_params.h"
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

// The op's string settings as the kernels' codes (crf::UnaryKind, crf::Init).
int code_of(const std::string& value, const char* fn, const char* name, const char* first,
            const char* second) {
  if (value == first) return 0;
  if (value == second) return 1;
  throw py::value_error(std::string(fn) + ": " + name + " must be '" + first + "' or '" +
                        second + "', got '" + value + "'");
}

// A bandwidth the kernels can invert: finite and > 0.
float bandwidth(float value, const char* fn, const char* name) {
  if (!(value > 0.0f) || !std::isfinite(value))
    throw py::value_error(std::string(fn) + ": " + name + " must be finite and > 0, got " +
                          std::to_string(value));
  return value;
}

crfgrad::ParamValues values_of(const char* fn, float pos_compat, float col_compat,
                               float pos_sdims, float col_schan, const py::object& col_sdims) {
  crfgrad::ParamValues v;
  v.pos_compat = pos_compat, v.col_compat = col_compat;
  v.pos_sdims = bandwidth(pos_sdims, fn, "pos_sdims");
  v.col_schan = bandwidth(col_schan, fn, "col_schan");
  v.col_sdims = col_sdims.is_none() ? 0.0f : bandwidth(col_sdims.cast<float>(), fn, "col_sdims");
  return v;
}

ConvCrfGradArgs make_args(const py::array& unary, const char* fn, int filter_size, int blur,
                          int num_iter, const std::string& unary_kind, const std::string& init,
                          bool final_softmax, float unary_weight,
                          const crfgrad::ParamValues& v) {
  static_assert(crf::UNARY_LOGITS == 0 && crf::UNARY_PROBS == 1, "code_of's order");
  static_assert(crf::INIT_CONVCRF == 0 && crf::INIT_SOFTMAX == 1, "code_of's order");
  Arr(unary, fn, "unary").ndim(4);
  ConvCrfGradArgs a;
  a.n = unary.shape(0), a.c = unary.shape(1), a.h = unary.shape(2), a.w = unary.shape(3);
  a.filter_size = filter_size, a.blur = blur, a.num_iter = num_iter;
  a.unary_kind = code_of(unary_kind, fn, "unary_kind", "logits", "probs");
  a.init = code_of(init, fn, "init", "convcrf", "softmax");
  a.final_softmax = final_softmax;
  a.unary_weight = unary_weight, a.pos_compat = v.pos_compat, a.col_compat = v.col_compat;
  a.pos_inv = crfgrad::inverse(v.pos_sdims), a.col_inv = crfgrad::inverse(v.col_schan);
  a.col_pos = v.col_sdims > 0.0f;
  a.colpos_inv = crfgrad::inverse(v.col_sdims);
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

bool forward(const py::array& unary, const py::array& image, const py::object& mask,
             const py::array& weight, const py::object& compat, py::array& out,
             const py::object& saved,
             int filter_size, int blur, int num_iter, const std::string& unary_kind,
             const std::string& init, bool final_softmax, float unary_weight, float pos_compat,
             float col_compat, float pos_sdims, float col_schan, const py::object& col_sdims) {
  const auto v = values_of(kForward, pos_compat, col_compat, pos_sdims, col_schan, col_sdims);
  const auto a = make_args(unary, kForward, filter_size, blur, num_iter, unary_kind, init,
                           final_softmax, unary_weight, v);
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
  return cpu::convcrf_grad_forward(in.unary, in.image, in.mask, in.weight, in.compat, o, s, a);
}

void backward(const py::array& grad, const py::array& unary, const py::array& image,
              const py::object& mask, const py::array& weight, const py::object& compat,
              const py::array& saved, py::array& d_unary, py::array& d_weight,
              py::array& d_params, const py::object& d_compat, int filter_size, int blur,
              int num_iter, const std::string& unary_kind, const std::string& init,
              bool final_softmax, float unary_weight, float pos_compat, float col_compat,
              float pos_sdims, float col_schan, const py::object& col_sdims) {
  const auto v = values_of(kBackward, pos_compat, col_compat, pos_sdims, col_schan, col_sdims);
  const auto a = make_args(unary, kBackward, filter_size, blur, num_iter, unary_kind, init,
                           final_softmax, unary_weight, v);
  const Inputs in = check_inputs(a, kBackward, unary, image, mask, weight, compat);
  index_t hp, wp;
  cpu::convcrf_grad_pooled(a, &hp, &wp);
  const float* g = checked<float>(grad, kBackward, "grad", {a.n, a.c, a.h, a.w});
  const float* s = checked<float>(saved, kBackward, "saved", {a.n, a.num_iter, a.c, hp, wp});
  float* du = checked_out<float>(d_unary, kBackward, "d_unary", {a.n, a.c, a.h, a.w});
  double* dw = checked_out<double>(d_weight, kBackward, "d_weight", {a.c});
  double* dp = checked_out<double>(d_params, kBackward, "d_params", {crfgrad::kParams});
  double* dmu = nullptr;
  if (in.compat != nullptr) {
    if (d_compat.is_none())
      throw py::value_error(std::string(kBackward) + ": d_compat is required when compat is "
                            "given");
    py::array k = d_compat.cast<py::array>();
    dmu = checked_out<double>(k, kBackward, "d_compat", {a.c, a.c});
  }
  py::gil_scoped_release release;
  double sums[crfgrad::kGradSums] = {0, 0, 0, 0, 0};
  cpu::convcrf_grad_backward(g, in.unary, in.image, in.mask, in.weight, in.compat, s, du, dw,
                             sums, dmu, a);
  crfgrad::parameter_gradients(sums, v, dp);
}

}  // namespace

void bind_convcrf_grad(py::module_& m) {
  m.def("convcrf_grad_forward", &forward, py::arg("unary"), py::arg("image"), py::arg("mask"),
        py::arg("weight"), py::arg("compat"), py::arg("out"), py::arg("saved"),
        py::arg("filter_size"), py::arg("blur"), py::arg("num_iter"), py::arg("unary_kind"),
        py::arg("init"), py::arg("final_softmax"), py::arg("unary_weight"),
        py::arg("pos_compat"), py::arg("col_compat"), py::arg("pos_sdims"),
        py::arg("col_schan"), py::arg("col_sdims"),
        "Trainable ConvCRF forward: the setting as torch.ops.segkit.conv_crf takes it "
        "(unary_kind 'logits' | 'probs', init 'convcrf' | 'softmax', the bandwidths, col_sdims "
        "None: no position term in the colour kernel); unary (N, C, H, W) float32, image "
        "(N, 3, H, W) float32 0-255, mask (N, H, W) uint8 or None, weight (C,) float32, compat (C, C) float32 or "
        "None; writes out (N, C, H, W) and, unless saved is None (inference), saved (N, num_iter, "
        "C, Hp, Wp): saved[:, t] is Qb_t, the pooled Q that iteration t + 1's message pass reads "
        "(Qb_0 pools the start Q_0). All C-contiguous. Returns False when the unary holds a "
        "value the op refuses (not finite; for 'probs', not > 0; inference on 'probs' is not "
        "checked): then out and saved hold no result. Releases the GIL.");
  m.def("convcrf_grad_backward", &backward, py::arg("grad"), py::arg("unary"),
        py::arg("image"), py::arg("mask"), py::arg("weight"), py::arg("compat"),
        py::arg("saved"), py::arg("d_unary"), py::arg("d_weight"), py::arg("d_params"),
        py::arg("d_compat"), py::arg("filter_size"), py::arg("blur"), py::arg("num_iter"),
        py::arg("unary_kind"), py::arg("init"), py::arg("final_softmax"),
        py::arg("unary_weight"), py::arg("pos_compat"), py::arg("col_compat"),
        py::arg("pos_sdims"), py::arg("col_schan"), py::arg("col_sdims"),
        "Trainable ConvCRF backward: from grad = dL/dout and the forward's inputs and saved "
        "pooled Q, writes d_unary (float32), d_weight (C,) float64, d_params (5,) float64 (the "
        "gradients w.r.t. pos_compat, col_compat, pos_sdims, col_schan, col_sdims; 0 for an "
        "absent col_sdims) and d_compat (C, C) float64 when compat is given. Deterministic. "
        "Releases the GIL.");
}

}  // namespace segkit
