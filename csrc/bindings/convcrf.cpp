// _C.convcrf, its workspace queries and the ConvCrfParams record (csrc/cpu/convcrf.h).
#include <cstdint>
#include <string>

#include "bindings/checks.h"
#include "cpu/convcrf.h"

namespace segkit {
namespace py = pybind11;
using bind::Arr;

namespace {

// ConvCrfArgs from the parameter record, a (N, C, H, W) score array and a (N, 3, H, W) image view.
cpu::ConvCrfArgs convcrf_args(const py::array& scores, const py::array& image,
                              const cpu::ConvCrfParams& params, const char* fn) {
  Arr(scores, fn, "scores").ndim(4);
  Arr(image, fn, "image").ndim(4).dim(0, scores.shape(0), "N of scores").dim(1, 3, "RGB")
      .dim(2, scores.shape(2), "H of scores").dim(3, scores.shape(3), "W of scores");
  cpu::ConvCrfArgs a;
  static_cast<cpu::ConvCrfParams&>(a) = params;
  a.n = scores.shape(0);
  a.c = scores.shape(1);
  a.h = scores.shape(2);
  a.w = scores.shape(3);
  if (image.size() > 0) {
    a.im_sn = bind::elem_stride(image, 0, fn, "image");
    a.im_sc = bind::elem_stride(image, 1, fn, "image");
    a.im_sh = bind::elem_stride(image, 2, fn, "image");
    a.im_sw = bind::elem_stride(image, 3, fn, "image");
  }
  return a;
}

// The optional inputs of a fitted or trainable setting, checked against the scores' shape.
void fitted_args(cpu::ConvCrfArgs& a, const char* fn, const py::object& weight,
                 const py::object& compat, const py::object& mask, const py::object& saved,
                 float unary_weight) {
  if (!weight.is_none()) {
    py::array w = weight.cast<py::array>();
    Arr(w, fn, "weight").dtype<float>().shape({a.c}).c_contiguous();
    a.weight = static_cast<const float*>(w.data());
    a.unary_weight = unary_weight;
  }
  if (!compat.is_none()) {
    py::array k = compat.cast<py::array>();
    Arr(k, fn, "compat").dtype<float>().shape({a.c, a.c}).c_contiguous();
    a.compat = static_cast<const float*>(k.data());
  }
  if (!mask.is_none()) {
    py::array m = mask.cast<py::array>();
    Arr(m, fn, "mask").dtype<std::uint8_t>().shape({a.n, a.h, a.w}).c_contiguous();
    a.mask = static_cast<const std::uint8_t*>(m.data());
  }
  if (!saved.is_none()) {
    py::array sv = saved.cast<py::array>();
    const index_t hp = (a.h + a.blur - 1) / a.blur, wp = (a.w + a.blur - 1) / a.blur;
    Arr(sv, fn, "saved").dtype<float>().shape({a.n, a.num_iter, a.c, hp, wp}).c_contiguous()
        .writeable();
    a.saved = static_cast<float*>(sv.mutable_data());
  }
}

bool convcrf(const py::array& scores, const py::array& image, const cpu::ConvCrfParams& params,
             const py::object& weight, const py::object& compat, const py::object& mask,
             const py::object& saved, float unary_weight, const py::object& unary,
             bool check_unary) {
  const char* fn = "_C.convcrf";
  Arr(scores, fn, "scores").dtype<float>().c_contiguous().writeable();
  auto a = convcrf_args(scores, image, params, fn);
  fitted_args(a, fn, weight, compat, mask, saved, unary_weight);
  if (!unary.is_none()) {  // read from here; `scores` then only receives the result
    py::array u = unary.cast<py::array>();
    Arr(u, fn, "unary").dtype<float>().shape({a.n, a.c, a.h, a.w}).c_contiguous();
    a.unary = static_cast<const float*>(u.data());
  }
  const char kind = image.dtype().kind();
  const bool u8 = kind == 'u' && image.itemsize() == 1;
  if (!u8 && !(kind == 'f' && image.itemsize() == 4))
    Arr(image, fn, "image").type_error("must be uint8 or float32, got " +
                                       bind::dtype_str(image.dtype()));
  Arr(image, fn, "image").native().aligned();
  if (scores.size() == 0) return true;
  int bad = 0;
  if (check_unary) a.unary_bad = &bad;
  float* dst = static_cast<float*>(const_cast<py::array&>(scores).mutable_data());
  if (u8) {
    const auto* img = static_cast<const uint8_t*>(image.data());
    py::gil_scoped_release release;
    cpu::convcrf<uint8_t>(dst, img, a);
  } else {
    const auto* img = static_cast<const float*>(image.data());
    py::gil_scoped_release release;
    cpu::convcrf<float>(dst, img, a);
  }
  return bad == 0;
}

int64_t convcrf_workspace_bytes(const py::array& scores, const py::array& image,
                                const cpu::ConvCrfParams& params) {
  return cpu::convcrf_workspace_bytes(
      convcrf_args(scores, image, params, "_C.convcrf_workspace_bytes"));
}

// The names of the codes of ConvCrfParams.unary_kind and .init (common/convcrf.h's enums).
const char* const kUnaryKinds[] = {"logits", "probs"};
const char* const kInits[] = {"convcrf", "softmax"};

template <size_t N>
int code_of(const std::string& name, const char* const (&names)[N], const char* what) {
  for (size_t i = 0; i < N; ++i)
    if (name == names[i]) return static_cast<int>(i);
  std::string all;
  for (size_t i = 0; i < N; ++i) all += std::string(i ? ", '" : "'") + names[i] + "'";
  throw py::value_error(std::string("ConvCrfParams.") + what + " must be one of " + all +
                        ", got '" + name + "'");
}

void bind_params(py::module_& m) {
  using P = cpu::ConvCrfParams;
  py::class_<P>(m, "ConvCrfParams",
                "The parameter record of _C.convcrf: the float32 constants of one ConvCRF "
                "setting (segkit.ops.convcrf.ConvCrfParams.kernel_params builds it). colpos_inv "
                "None turns the colour kernel's position term off; unary_kind 'logits' or "
                "'probs'; init 'convcrf' or 'softmax'.")
      .def(py::init<>())
      .def_readwrite("filter_size", &P::filter_size)
      .def_readwrite("blur", &P::blur)
      .def_readwrite("num_iter", &P::num_iter)
      .def_readwrite("pos_inv", &P::pos_inv)
      .def_readwrite("col_inv", &P::col_inv)
      .def_property(
          "colpos_inv",
          [](const P& p) -> py::object {
            if (!p.col_pos) return py::none();
            return py::float_(p.colpos_inv);
          },
          [](P& p, py::object v) {
            p.col_pos = !v.is_none();
            p.colpos_inv = p.col_pos ? v.cast<float>() : 0.0f;
          })
      .def_readwrite("pos_compat", &P::pos_compat)
      .def_readwrite("col_compat", &P::col_compat)
      .def_readwrite("unary_coef", &P::unary_coef)
      .def_readwrite("message_coef", &P::message_coef)
      .def_property(
          "unary_kind", [](const P& p) { return std::string(kUnaryKinds[p.unary_kind]); },
          [](P& p, const std::string& v) { p.unary_kind = code_of(v, kUnaryKinds, "unary_kind"); })
      .def_property(
          "init", [](const P& p) { return std::string(kInits[p.init]); },
          [](P& p, const std::string& v) { p.init = code_of(v, kInits, "init"); })
      .def_readwrite("final_softmax", &P::final_softmax);
}

}  // namespace

void bind_convcrf(py::module_& m) {
  bind_params(m);
  m.def("convcrf", &convcrf, py::arg("scores"), py::arg("image"), py::arg("params"),
        py::kw_only(), py::arg("weight") = py::none(), py::arg("compat") = py::none(),
        py::arg("mask") = py::none(), py::arg("saved") = py::none(),
        py::arg("unary_weight") = 1.0f, py::arg("unary") = py::none(),
        py::arg("check_unary") = false,
        "convcrf(scores, image, params, *, weight=None, compat=None, mask=None, saved=None, "
        "unary_weight=1.0, unary=None, check_unary=False) -> bool\n\n"
        "ConvCRF mean-field inference in place: `scores` (N, C, H, W) writeable C-contiguous "
        "float32 holds the unary on entry (or `unary`, of the same shape, holds it and `scores` "
        "only receives the result) and the scores on return; `image` (N, 3, H, W) uint8 "
        "or float32, any non-negative strides; `params` a ConvCrfParams. A fitted setting: "
        "`weight` (C,) float32 per-class message weights (update (unary_weight - w_c) U + w_c "
        "M, replacing params' coefficients), `compat` (C, C) float32 (M' = M + compat M), "
        "`mask` (N, H, W) uint8 (0: the pixel neither sends nor receives); `saved` (N, "
        "num_iter, C, Hp, Wp) float32 receives, per iteration, the pooled Q its message reads "
        "(what the trainable backward restarts from). All "
        "C-contiguous. check_unary: the first pass also checks the unary (every value finite; "
        "for 'probs', > 0) and the call returns False when one is not (then the scores hold "
        "no result); otherwise True. Releases the GIL.");
  m.def("convcrf_workspace_bytes", &convcrf_workspace_bytes, py::arg("scores"),
        py::arg("image"), py::arg("params"),
        "Bytes of working memory _C.convcrf allocates for these arrays and parameters (besides "
        "the scores).");
  m.def("convcrf_release_workspace", &cpu::convcrf_release_workspace,
        "Free the working memory _C.convcrf keeps between calls; returns the bytes freed.");
  m.def("convcrf_cached_workspace", &cpu::convcrf_cached_workspace,
        "Bytes of working memory _C.convcrf holds between calls.");
}

}  // namespace segkit
