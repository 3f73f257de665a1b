// segkit._C: the Python face of the CPU kernels. Thin by design: unpack arrays into pointers,
// shapes and strides, release the GIL, call csrc/cpu/. Argument checking with friendly
// messages happens in segkit/ops/*.py; the checks here guard memory safety.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cpu/confusion.h"
#include "cpu/convcrf.h"
#include "cpu/mode_filter.h"
#include "cpu/runtime.h"
#include "cpu/soft_vote.h"
#include "cpu/label_issues.h"

namespace py = pybind11;
using segkit::index_t;

namespace segkit {
void bind_convcrf_grad(py::module_& m);  // csrc/bindings/convcrf_grad.cpp
}

namespace {

// Calls f(T{}) with T the C++ type of a label array's dtype.
template <typename F>
void dispatch_labels(const py::array& a, const char* what, F&& f) {
  const char kind = a.dtype().kind();
  const auto size = a.dtype().itemsize();
  if (kind == 'u' && size == 1) return f(uint8_t{});
  if (kind == 'u' && size == 2) return f(uint16_t{});
  if (kind == 'i' && size == 4) return f(int32_t{});
  if (kind == 'i' && size == 8) return f(int64_t{});
  throw py::type_error(std::string(what) + ": unsupported dtype " +
                       py::str(a.dtype()).cast<std::string>() +
                       " (expected uint8, uint16, int32 or int64)");
}

// Element stride of axis `axis`; raises unless it is a whole, non-negative number of elements.
index_t elem_stride(const py::array& a, int axis, const char* what) {
  const auto s = a.strides(axis), item = a.itemsize();
  if (s < 0 || s % item != 0)
    throw py::value_error(std::string(what) + ": negative or misaligned stride");
  return static_cast<index_t>(s / item);
}

void mode_filter(const py::array& in, py::array& out, int size, int anchor, int ties,
                 py::object ignore_index) {
  if (in.ndim() != 3 || out.ndim() != 3)
    throw py::value_error("_C.mode_filter: expects 3-D (N, H, W) input and output");
  for (int d = 0; d < 3; ++d)
    if (in.shape(d) != out.shape(d))
      throw py::value_error("_C.mode_filter: input and output shapes differ");
  if (in.dtype().kind() != out.dtype().kind() || in.itemsize() != out.itemsize())
    throw py::type_error("_C.mode_filter: input and output dtypes differ");
  if (!(out.flags() & py::array::c_style) || !out.writeable())
    throw py::value_error("_C.mode_filter: output must be C-contiguous and writeable");
  if (in.size() == 0) return;  // empty arrays may carry zero strides
  segkit::cpu::ModeFilterArgs args;
  args.n = in.shape(0);
  args.h = in.shape(1);
  args.w = in.shape(2);
  args.in_sn = elem_stride(in, 0, "_C.mode_filter");
  args.in_sh = elem_stride(in, 1, "_C.mode_filter");
  if (args.w > 1 && elem_stride(in, 2, "_C.mode_filter") != 1)
    throw py::value_error("_C.mode_filter: input columns must be contiguous");
  args.size = size;
  args.anchor = anchor;
  args.ties = ties;
  args.has_ignore = !ignore_index.is_none();
  args.ignore = args.has_ignore ? ignore_index.cast<long long>() : 0;
  dispatch_labels(in, "_C.mode_filter", [&](auto tag) {
    using T = decltype(tag);
    const T* src = static_cast<const T*>(in.data());
    T* dst = static_cast<T*>(out.mutable_data());
    py::gil_scoped_release release;
    segkit::cpu::mode_filter<T>(src, dst, args);
  });
}

void confusion(const py::array& pred, const py::array& gt, int num_classes,
               py::object ignore_index, py::array& counts, py::array& bad) {
  if (pred.size() != gt.size())
    throw py::value_error("_C.confusion: pred and gt sizes differ");
  if (pred.dtype().kind() != gt.dtype().kind() || pred.itemsize() != gt.itemsize())
    throw py::type_error("_C.confusion: pred and gt dtypes differ");
  if (!(pred.flags() & py::array::c_style) || !(gt.flags() & py::array::c_style))
    throw py::value_error("_C.confusion: pred and gt must be C-contiguous");
  if (num_classes < 1 || static_cast<long long>(num_classes) * num_classes != counts.size() ||
      counts.dtype().kind() != 'i' || counts.itemsize() != 8 || !counts.writeable() ||
      !(counts.flags() & py::array::c_style))
    throw py::value_error("_C.confusion: counts must be a writeable int64 array of C*C");
  if (bad.size() != 2 || bad.dtype().kind() != 'i' || bad.itemsize() != 8 || !bad.writeable())
    throw py::value_error("_C.confusion: bad must be a writeable int64 array of 2");
  const bool has_ignore = !ignore_index.is_none();
  const long long ignore = has_ignore ? ignore_index.cast<long long>() : 0;
  auto* out = static_cast<int64_t*>(counts.mutable_data());
  auto* oob = static_cast<int64_t*>(bad.mutable_data());
  dispatch_labels(pred, "_C.confusion", [&](auto tag) {
    using T = decltype(tag);
    const T* p = static_cast<const T*>(pred.data());
    const T* g = static_cast<const T*>(gt.data());
    const index_t n = pred.size();
    py::gil_scoped_release release;
    segkit::cpu::confusion<T>(p, g, n, num_classes, has_ignore, ignore, out, oob);
  });
}

bool soft_vote(const std::vector<py::array>& inputs, const py::array& weights, py::array& labels,
               py::object probs) {
  const char* what = "_C.soft_vote";
  if (inputs.empty()) throw py::value_error("_C.soft_vote: needs at least one input");
  const py::array& first = inputs[0];
  if (first.ndim() != 4) throw py::value_error("_C.soft_vote: inputs must be 4-D (N, C, H, W)");
  const auto item = first.itemsize();
  if (first.dtype().kind() != 'f' || (item != 2 && item != 4))
    throw py::type_error("_C.soft_vote: inputs must be float16 or float32");
  segkit::cpu::SoftVoteArgs args;
  args.n = first.shape(0);
  args.c = first.shape(1);
  args.h = first.shape(2);
  args.w = first.shape(3);
  args.m = static_cast<int>(inputs.size());
  args.half = item == 2;
  std::vector<const void*> ptrs;
  std::vector<index_t> strides;
  for (const py::array& a : inputs) {
    if (a.ndim() != 4 || a.dtype().kind() != 'f' || a.itemsize() != item)
      throw py::type_error("_C.soft_vote: inputs must share one dtype and be 4-D");
    for (int d = 0; d < 4; ++d)
      if (a.shape(d) != first.shape(d))
        throw py::value_error("_C.soft_vote: inputs must share one shape");
    if (args.w > 1 && elem_stride(a, 3, what) != 1)
      throw py::value_error("_C.soft_vote: the last axis of every input must be contiguous");
    ptrs.push_back(a.data());
    for (int d = 0; d < 3; ++d) strides.push_back(a.shape(d) > 1 ? elem_stride(a, d, what) : 0);
  }
  if (weights.ndim() != 1 || weights.shape(0) != args.m || weights.dtype().kind() != 'f' ||
      weights.itemsize() != 4 || !(weights.flags() & py::array::c_style))
    throw py::value_error("_C.soft_vote: weights must be a contiguous float32 array, one per input");
  if (labels.ndim() != 3 || labels.shape(0) != args.n || labels.shape(1) != args.h ||
      labels.shape(2) != args.w || labels.dtype().kind() != 'u' ||
      (labels.itemsize() != 1 && labels.itemsize() != 2) ||
      !(labels.flags() & py::array::c_style) || !labels.writeable())
    throw py::value_error("_C.soft_vote: labels must be a writeable C-contiguous uint8/uint16 "
                          "(N, H, W) array");
  float* probs_ptr = nullptr;
  if (!probs.is_none()) {
    py::array p = probs.cast<py::array>();
    if (p.ndim() != 4 || p.dtype().kind() != 'f' || p.itemsize() != 4 ||
        !(p.flags() & py::array::c_style) || !p.writeable())
      throw py::value_error("_C.soft_vote: probs must be a writeable C-contiguous float32 array");
    for (int d = 0; d < 4; ++d)
      if (p.shape(d) != first.shape(d))
        throw py::value_error("_C.soft_vote: probs must have the inputs' shape");
    probs_ptr = static_cast<float*>(p.mutable_data());
  }
  args.inputs = ptrs.data();
  args.strides = strides.data();
  args.weights = static_cast<const float*>(weights.data());
  args.labels = labels.mutable_data();
  args.label_bytes = static_cast<int>(labels.itemsize());
  args.probs = probs_ptr;
  py::gil_scoped_release release;
  return segkit::cpu::soft_vote(args);
}

// ConvCrfArgs from the parameter record, a (N, C, H, W) score array and a (N, 3, H, W) image view.
segkit::cpu::ConvCrfArgs convcrf_args(const py::array& scores, const py::array& image,
                                      const segkit::cpu::ConvCrfParams& params) {
  if (scores.ndim() != 4 || image.ndim() != 4)
    throw py::value_error("_C.convcrf: expects 4-D scores (N, C, H, W) and image (N, 3, H, W)");
  if (image.shape(0) != scores.shape(0) || image.shape(1) != 3 ||
      image.shape(2) != scores.shape(2) || image.shape(3) != scores.shape(3))
    throw py::value_error("_C.convcrf: image shape does not match the scores");
  segkit::cpu::ConvCrfArgs a;
  static_cast<segkit::cpu::ConvCrfParams&>(a) = params;
  a.n = scores.shape(0);
  a.c = scores.shape(1);
  a.h = scores.shape(2);
  a.w = scores.shape(3);
  if (image.size() > 0) {
    a.im_sn = elem_stride(image, 0, "_C.convcrf");
    a.im_sc = elem_stride(image, 1, "_C.convcrf");
    a.im_sh = elem_stride(image, 2, "_C.convcrf");
    a.im_sw = elem_stride(image, 3, "_C.convcrf");
  }
  return a;
}

void convcrf(py::array& scores, const py::array& image,
             const segkit::cpu::ConvCrfParams& params) {
  if (!scores.dtype().is(py::dtype::of<float>()) || !(scores.flags() & py::array::c_style) ||
      !scores.writeable())
    throw py::value_error("_C.convcrf: scores must be a writeable C-contiguous float32 array");
  const auto a = convcrf_args(scores, image, params);
  if (scores.size() == 0) return;
  float* dst = static_cast<float*>(scores.mutable_data());
  const char kind = image.dtype().kind();
  if (kind == 'u' && image.itemsize() == 1) {
    const auto* img = static_cast<const uint8_t*>(image.data());
    py::gil_scoped_release release;
    segkit::cpu::convcrf<uint8_t>(dst, img, a);
  } else if (image.dtype().is(py::dtype::of<float>())) {
    const auto* img = static_cast<const float*>(image.data());
    py::gil_scoped_release release;
    segkit::cpu::convcrf<float>(dst, img, a);
  } else {
    throw py::type_error("_C.convcrf: image must be uint8 or float32, got " +
                         py::str(image.dtype()).cast<std::string>());
  }
}

int64_t convcrf_workspace_bytes(const py::array& scores, const py::array& image,
                                const segkit::cpu::ConvCrfParams& params) {
  return segkit::cpu::convcrf_workspace_bytes(convcrf_args(scores, image, params));
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

void bind_convcrf_params(py::module_& m) {
  using P = segkit::cpu::ConvCrfParams;
  py::class_<P>(m, "ConvCrfParams",
                "The parameter record of _C.convcrf: the float32 constants of one ConvCRF "
                "setting (segkit.ops.convcrf.CrfParams.kernel_params builds it). colpos_inv "
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
  for (int i = 0; i < segkit::cpu::kIsaCount; ++i) {
    const auto& info = segkit::cpu::isa_info(static_cast<segkit::cpu::Isa>(i));
    py::dict row, has;
    const std::string features = info.features;
    size_t start = 0;
    while (start < features.size()) {
      size_t end = features.find(',', start);
      if (end == std::string::npos) end = features.size();
      const std::string f = features.substr(start, end - start);
      has[py::str(f)] = segkit::cpu::cpu_has_feature(f);
      start = end + 1;
    }
    row["name"] = info.name;
    row["target"] = info.target;
    row["vector_bytes"] = info.vector_bytes;
    row["features"] = has;
    row["supported"] = i <= static_cast<int>(segkit::cpu::best_isa());
    table.append(row);
  }
  d["simd_table"] = table;
  d["simd_best"] = segkit::cpu::isa_name(segkit::cpu::best_isa());
  d["simd_active"] = segkit::cpu::isa_name(segkit::cpu::active_isa());
  d["threads"] = segkit::cpu::max_threads();
  return d;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "segkit's compiled CPU kernels (pybind11 + OpenMP). Use the segkit package, not this.";

  m.def("mode_filter", &mode_filter, py::arg("input"), py::arg("output"), py::arg("size"),
        py::arg("anchor"), py::arg("ties"), py::arg("ignore_index") = py::none(),
        "mode_filter(input, output, size, anchor, ties, ignore_index=None)\n\n"
        "Mode filter of (N, H, W) label arrays into a C-contiguous `output` of the same shape "
        "and dtype (uint8, uint16, int32, int64). anchor: 0 center, 1 topleft; ties: 0 keep, "
        "1 smallest, 2 first. Releases the GIL; OpenMP over rows.");

  m.def("confusion", &confusion, py::arg("pred"), py::arg("gt"), py::arg("num_classes"),
        py::arg("ignore_index"), py::arg("counts"), py::arg("bad"),
        "confusion(pred, gt, num_classes, ignore_index, counts, bad)\n\n"
        "Adds the confusion counts of two C-contiguous label arrays of one dtype to `counts` "
        "(int64, num_classes^2, row = ground truth) and the out-of-range ground-truth and "
        "predicted label counts to `bad` (int64, 2). Releases the GIL; OpenMP over pixels.");
  m.def("soft_vote", &soft_vote, py::arg("inputs"), py::arg("weights"), py::arg("labels"),
        py::arg("probs") = py::none(),
        "soft_vote(inputs, weights, labels, probs=None) -> bool\n\n"
        "Fused weighted sum over M (N, C, H, W) float16/float32 inputs (one dtype; any "
        "non-negative strides, last axis contiguous) with float32 `weights`, argmax over C "
        "(ties: smallest class) into C-contiguous uint8/uint16 `labels` (N, H, W), and the "
        "float32 sums into `probs` (N, C, H, W) when given. Returns True if a sum was NaN. "
        "Releases the GIL; OpenMP over tiles of pixels.");
  bind_convcrf_params(m);
  segkit::bind_convcrf_grad(m);
  m.def("convcrf", &convcrf, py::arg("scores"), py::arg("image"), py::arg("params"),
        "convcrf(scores, image, params)\n\n"
        "ConvCRF mean-field inference in place: `scores` (N, C, H, W) C-contiguous float32 holds "
        "the unary on entry and the scores on return; `image` (N, 3, H, W) uint8 or float32, "
        "any strides; `params` a ConvCrfParams. Releases the GIL.");
  m.def("convcrf_workspace_bytes", &convcrf_workspace_bytes, py::arg("scores"),
        py::arg("image"), py::arg("params"),
        "Bytes of working memory _C.convcrf allocates for these arrays and parameters (besides "
        "the scores).");
  m.def("convcrf_release_workspace", &segkit::cpu::convcrf_release_workspace,
        "Free the working memory _C.convcrf keeps between calls; returns the bytes freed.");
  m.def("convcrf_cached_workspace", &segkit::cpu::convcrf_cached_workspace,
        "Bytes of working memory _C.convcrf holds between calls.");

  m.def("build_info", &build_info, "Compiler, OpenMP version, SIMD paths and thread count.");
  m.def(
      "simd_isa", []() { return segkit::cpu::isa_name(segkit::cpu::active_isa()); },
      "The SIMD code path the CPU kernels use now: 'base', 'avx2' or 'avx512'.");
  m.def(
      "set_simd_isa",
      [](const std::string& name) {
        const char* old = segkit::cpu::isa_name(segkit::cpu::active_isa());
        segkit::cpu::set_isa(segkit::cpu::isa_from_name(name));
        return std::string(old);
      },
      py::arg("name"),
      "Select the SIMD path ('base', 'avx2', 'avx512'; at most what the CPU has). Returns the "
      "previous one. For tests and benchmarks.");
  m.def("get_num_threads", &segkit::cpu::max_threads, "OpenMP threads the kernels use.");
  m.def("set_num_threads", &segkit::cpu::set_threads, py::arg("n"),
        "OpenMP threads for the kernels (0: OpenMP's default).");

  // ---- label issues (confident learning, cleanlab.segmentation's defaults) ----
  // Argument checks (shapes, dtypes, contiguity) are the Python layer's (segkit/ops/label_issues.py);
  // these only read the raw buffers and release the GIL.
  auto li_args = [](const py::array& labels, const py::array& probs, int num_classes,
                    py::object ignore_index) {
    segkit::cpu::LabelIssuesArgs a;
    if (labels.ndim() != 3 || probs.ndim() != 4 || probs.shape(0) != labels.shape(0) ||
        probs.shape(1) != num_classes || probs.shape(2) != labels.shape(1) ||
        probs.shape(3) != labels.shape(2))
      throw py::value_error("_C.label_issues_*: labels (N, H, W) and probs (N, C, H, W) differ");
    if (!(labels.flags() & py::array::c_style) || !(probs.flags() & py::array::c_style))
      throw py::value_error("_C.label_issues_*: labels and probs must be C-contiguous");
    const char lk = labels.dtype().kind();
    const auto ls = labels.itemsize();
    if (lk == 'u' && ls == 1) a.label_type = 0;
    else if (lk == 'u' && ls == 2) a.label_type = 1;
    else if (lk == 'i' && ls == 4) a.label_type = 2;
    else if (lk == 'i' && ls == 8) a.label_type = 3;
    else throw py::type_error("_C.label_issues_*: labels must be uint8, uint16, int32 or int64");
    if (probs.dtype().kind() != 'f' || (probs.itemsize() != 2 && probs.itemsize() != 4))
      throw py::type_error("_C.label_issues_*: probs must be float16 or float32");
    a.prob_half = probs.itemsize() == 2;
    a.labels = labels.data();
    a.probs = probs.data();
    a.n = labels.shape(0);
    a.hw = static_cast<index_t>(labels.shape(1)) * labels.shape(2);
    a.num_classes = num_classes;
    a.has_ignore = !ignore_index.is_none();
    a.ignore = a.has_ignore ? ignore_index.cast<long long>() : 0;
    return a;
  };
  m.def(
      "label_issues_sums",
      [li_args](const py::array& labels, const py::array& probs, int num_classes,
                py::object ignore_index, py::array_t<double>& sums, py::array_t<int64_t>& counts,
                py::array_t<int64_t>& bad) {
        auto a = li_args(labels, probs, num_classes, ignore_index);
        if (sums.size() != num_classes || counts.size() != num_classes || bad.size() != 1)
          throw py::value_error("_C.label_issues_sums: sums/counts need C entries, bad 1");
        double* s = sums.mutable_data();
        int64_t* k = counts.mutable_data();
        int64_t* b = bad.mutable_data();
        py::gil_scoped_release release;
        segkit::cpu::label_issues_sums(a, s, k, b);
      },
      py::arg("labels"), py::arg("probs"), py::arg("num_classes"), py::arg("ignore_index"),
      py::arg("sums"), py::arg("counts"), py::arg("bad"),
      "Confident-learning thresholds, pass 1: adds per class the sum of the self-confidence "
      "p[label] (float64) and the pixel count; bad[0] += labels outside 0..C-1.");
  m.def(
      "label_issues_scores",
      [li_args](const py::array& labels, const py::array& probs, int num_classes,
                py::object ignore_index, const py::array_t<double>& thresholds_adj,
                py::array_t<float>& scores, py::array_t<uint8_t>& candidates, py::object hist) {
        auto a = li_args(labels, probs, num_classes, ignore_index);
        if (thresholds_adj.size() != num_classes || scores.size() != a.n * a.hw ||
            candidates.size() != a.n * a.hw)
          throw py::value_error("_C.label_issues_scores: thresholds need C entries, scores and "
                                "candidates N*H*W");
        int64_t* h = nullptr;
        if (!hist.is_none()) {
          auto arr = hist.cast<py::array_t<int64_t>>();
          if (arr.size() != 65536 || !arr.writeable())
            throw py::value_error("_C.label_issues_scores: hist must be writeable int64 of 65536");
          h = arr.mutable_data();
        }
        const double* t = thresholds_adj.data();
        float* s = scores.mutable_data();
        uint8_t* c = candidates.mutable_data();
        py::gil_scoped_release release;
        return segkit::cpu::label_issues_scores(a, t, s, c, h);
      },
      py::arg("labels"), py::arg("probs"), py::arg("num_classes"), py::arg("ignore_index"),
      py::arg("thresholds_adj"), py::arg("scores"), py::arg("candidates"), py::arg("hist"),
      "Confident-learning pass 2: per-pixel self-confidence (NaN where ignored) and candidate "
      "flag (argmax != label), the 65536-bin histogram of the scores' order keys; returns the "
      "estimated number of issues (candidates whose top probability >= thresholds_adj).");
  m.def(
      "label_issues_fused",
      [li_args](const py::array& labels, const py::array& probs, int num_classes,
                py::object ignore_index, py::array_t<double>& sums, py::array_t<int64_t>& counts,
                py::array_t<int64_t>& bad, py::array_t<float>& scores,
                py::array_t<uint8_t>& candidates, py::array_t<int32_t>& argmax,
                py::array_t<float>& top, py::object hist) {
        auto a = li_args(labels, probs, num_classes, ignore_index);
        if (sums.size() != num_classes || counts.size() != num_classes || bad.size() != 1)
          throw py::value_error("_C.label_issues_fused: sums/counts need C entries, bad 1");
        if (scores.size() != a.n * a.hw || candidates.size() != a.n * a.hw ||
            argmax.size() != a.n * a.hw || top.size() != a.n * a.hw)
          throw py::value_error("_C.label_issues_fused: scores, candidates, argmax, top need "
                                "N*H*W entries");
        int64_t* h = nullptr;
        if (!hist.is_none()) {
          auto arr = hist.cast<py::array_t<int64_t>>();
          if (arr.size() != 65536 || !arr.writeable())
            throw py::value_error("_C.label_issues_fused: hist must be writeable int64 of 65536");
          h = arr.mutable_data();
        }
        double* s = sums.mutable_data();
        int64_t* k = counts.mutable_data();
        int64_t* b = bad.mutable_data();
        float* sc = scores.mutable_data();
        uint8_t* c = candidates.mutable_data();
        int32_t* am = argmax.mutable_data();
        float* tp = top.mutable_data();
        py::gil_scoped_release release;
        segkit::cpu::label_issues_fused(a, s, k, b, sc, c, am, tp, h);
      },
      py::arg("labels"), py::arg("probs"), py::arg("num_classes"), py::arg("ignore_index"),
      py::arg("sums"), py::arg("counts"), py::arg("bad"), py::arg("scores"),
      py::arg("candidates"), py::arg("argmax"), py::arg("top"), py::arg("hist"),
      "Confident learning in one read of probs: the threshold sums of label_issues_sums and "
      "the per-pixel outputs of label_issues_scores plus argmax and top probability.");
  m.def(
      "label_issues_count",
      [](const py::array_t<uint8_t>& candidates, const py::array_t<int32_t>& argmax,
         const py::array_t<float>& top, const py::array_t<double>& thresholds_adj) {
        const index_t n = candidates.size();
        if (argmax.size() != n || top.size() != n)
          throw py::value_error("_C.label_issues_count: candidates, argmax, top sizes differ");
        const uint8_t* c = candidates.data();
        const int32_t* am = argmax.data();
        const float* tp = top.data();
        const double* t = thresholds_adj.data();
        py::gil_scoped_release release;
        return segkit::cpu::label_issues_count(c, am, tp, n, t);
      },
      py::arg("candidates"), py::arg("argmax"), py::arg("top"), py::arg("thresholds_adj"),
      "Number of counted issues from label_issues_fused's outputs (candidates whose top "
      "probability >= thresholds_adj[argmax]).");
  m.def(
      "label_issues_softmin",
      [](const py::array_t<float>& scores, double temperature, py::array_t<double>& out) {
        if (scores.ndim() != 2 || out.size() != scores.shape(0) ||
            !(scores.flags() & py::array::c_style))
          throw py::value_error("_C.label_issues_softmin: scores (N, H*W) C-contiguous, out N");
        const float* s = scores.data();
        double* o = out.mutable_data();
        const index_t n = scores.shape(0), hw = scores.shape(1);
        py::gil_scoped_release release;
        segkit::cpu::label_issues_softmin(s, n, hw, temperature, o);
      },
      py::arg("scores"), py::arg("temperature"), py::arg("out"),
      "cleanlab's softmin image quality of each row of scores (NaN skipped).");
  m.def(
      "label_issues_flags",
      [](const py::array_t<float>& scores, const py::array_t<uint8_t>& candidates,
         uint32_t cutoff_key, py::array_t<uint8_t>& flags) {
        if (scores.size() != candidates.size() || scores.size() != flags.size())
          throw py::value_error("_C.label_issues_flags: scores, candidates, flags sizes differ");
        const float* s = scores.data();
        const uint8_t* c = candidates.data();
        uint8_t* f = flags.mutable_data();
        const index_t n = scores.size();
        py::gil_scoped_release release;
        segkit::cpu::label_issues_flags(s, c, n, cutoff_key, f);
      },
      py::arg("scores"), py::arg("candidates"), py::arg("cutoff_key"), py::arg("flags"),
      "Flagging pass: flags = candidates & (order key of score < cutoff_key).");
}
