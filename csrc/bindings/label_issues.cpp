// _C.label_issues_*: confident learning (cleanlab.segmentation's defaults), csrc/cpu/label_issues.h.
// Every array is checked here (dtype, size, C-contiguity, writeable outputs): the kernels read
// and write them as flat T[n] buffers.
#include <string>

#include "bindings/checks.h"
#include "cpu/label_issues.h"

namespace segkit {
namespace py = pybind11;
using bind::Arr;

namespace {

constexpr py::ssize_t kHistBins = 65536;

// The raw views of labels (N, H, W) and probs (N, C, H, W).
cpu::LabelIssuesArgs li_args(const py::array& labels, const py::array& probs, int num_classes,
                             const py::object& ignore_index, const char* fn) {
  cpu::LabelIssuesArgs a;
  if (num_classes < 1)
    throw py::value_error(std::string(fn) + ": num_classes must be >= 1, got " +
                          std::to_string(num_classes));
  Arr(labels, fn, "labels").ndim(3).c_contiguous();
  Arr(probs, fn, "probs").ndim(4).dim(0, labels.shape(0), "N of labels")
      .dim(1, num_classes, "num_classes").dim(2, labels.shape(1), "H of labels")
      .dim(3, labels.shape(2), "W of labels").kind('f', 2, 4, "float16 or float32")
      .c_contiguous();
  bind::dispatch_labels(labels, fn, "labels", [&](auto tag) {
    using T = decltype(tag);
    a.label_type = std::is_same<T, uint8_t>::value    ? 0
                   : std::is_same<T, uint16_t>::value ? 1
                   : std::is_same<T, int32_t>::value  ? 2
                                                      : 3;
  });
  a.prob_half = probs.itemsize() == 2;
  a.labels = labels.data();
  a.probs = probs.data();
  a.n = labels.shape(0);
  a.hw = static_cast<index_t>(labels.shape(1)) * labels.shape(2);
  a.num_classes = num_classes;
  a.has_ignore = bind::optional_int(ignore_index, fn, "ignore_index", &a.ignore);
  return a;
}

template <typename T>
T* out_ptr(const py::array& a, const char* fn, const char* arg, py::ssize_t n,
           const char* what) {
  Arr(a, fn, arg).dtype<T>().size(n, what).c_contiguous().writeable();
  return static_cast<T*>(const_cast<py::array&>(a).mutable_data());
}

template <typename T>
const T* in_ptr(const py::array& a, const char* fn, const char* arg, py::ssize_t n,
                const char* what) {
  Arr(a, fn, arg).dtype<T>().size(n, what).c_contiguous();
  return static_cast<const T*>(a.data());
}

int64_t* hist_ptr(const py::object& hist, const char* fn) {
  if (hist.is_none()) return nullptr;
  if (!py::isinstance<py::array>(hist))
    throw py::type_error(std::string(fn) + ": hist must be None or an int64 numpy array");
  return out_ptr<int64_t>(hist.cast<py::array>(), fn, "hist", kHistBins, "the histogram bins");
}

void sums(const py::array& labels, const py::array& probs, int num_classes,
          const py::object& ignore_index, const py::array& sums, const py::array& counts,
          const py::array& bad) {
  const char* fn = "_C.label_issues_sums";
  auto a = li_args(labels, probs, num_classes, ignore_index, fn);
  double* s = out_ptr<double>(sums, fn, "sums", num_classes, "num_classes");
  int64_t* k = out_ptr<int64_t>(counts, fn, "counts", num_classes, "num_classes");
  int64_t* b = out_ptr<int64_t>(bad, fn, "bad", 1, nullptr);
  py::gil_scoped_release release;
  cpu::label_issues_sums(a, s, k, b);
}

int64_t scores(const py::array& labels, const py::array& probs, int num_classes,
               const py::object& ignore_index, const py::array& thresholds_adj,
               const py::array& scores, const py::array& candidates, const py::object& hist) {
  const char* fn = "_C.label_issues_scores";
  auto a = li_args(labels, probs, num_classes, ignore_index, fn);
  const py::ssize_t n = a.n * a.hw;
  const double* t = in_ptr<double>(thresholds_adj, fn, "thresholds_adj", num_classes,
                                   "num_classes");
  float* s = out_ptr<float>(scores, fn, "scores", n, "N*H*W");
  uint8_t* c = out_ptr<uint8_t>(candidates, fn, "candidates", n, "N*H*W");
  int64_t* h = hist_ptr(hist, fn);
  py::gil_scoped_release release;
  return cpu::label_issues_scores(a, t, s, c, h);
}

void fused(const py::array& labels, const py::array& probs, int num_classes,
           const py::object& ignore_index, const py::array& sums, const py::array& counts,
           const py::array& bad, const py::array& scores, const py::array& candidates,
           const py::array& argmax, const py::array& top, const py::object& hist,
           const py::object& nonfinite) {
  const char* fn = "_C.label_issues_fused";
  auto a = li_args(labels, probs, num_classes, ignore_index, fn);
  const py::ssize_t n = a.n * a.hw;
  double* s = out_ptr<double>(sums, fn, "sums", num_classes, "num_classes");
  int64_t* k = out_ptr<int64_t>(counts, fn, "counts", num_classes, "num_classes");
  int64_t* b = out_ptr<int64_t>(bad, fn, "bad", 1, nullptr);
  float* sc = out_ptr<float>(scores, fn, "scores", n, "N*H*W");
  uint8_t* c = out_ptr<uint8_t>(candidates, fn, "candidates", n, "N*H*W");
  int32_t* am = out_ptr<int32_t>(argmax, fn, "argmax", n, "N*H*W");
  float* tp = out_ptr<float>(top, fn, "top", n, "N*H*W");
  int64_t* h = hist_ptr(hist, fn);
  int64_t* nf = nullptr;
  if (!nonfinite.is_none()) {
    if (!py::isinstance<py::array>(nonfinite))
      throw py::type_error(std::string(fn) + ": nonfinite must be None or an int64 numpy array");
    nf = out_ptr<int64_t>(nonfinite.cast<py::array>(), fn, "nonfinite", 1, nullptr);
  }
  py::gil_scoped_release release;
  cpu::label_issues_fused(a, s, k, b, sc, c, am, tp, h, nf);
}

int64_t count(const py::array& candidates, const py::array& argmax, const py::array& top,
              const py::array& thresholds_adj) {
  const char* fn = "_C.label_issues_count";
  const py::ssize_t n = candidates.size();
  const uint8_t* c = in_ptr<uint8_t>(candidates, fn, "candidates", n, nullptr);
  const int32_t* am = in_ptr<int32_t>(argmax, fn, "argmax", n, "candidates' size");
  const float* tp = in_ptr<float>(top, fn, "top", n, "candidates' size");
  const py::ssize_t classes = thresholds_adj.size();
  const double* t = in_ptr<double>(thresholds_adj, fn, "thresholds_adj", classes, nullptr);
  // Every candidate's argmax must index thresholds_adj (the fused pass writes 0..C-1;
  // anything else is a caller's bug): the kernel checks it in its one pass.
  int64_t first_bad = -1, counted = 0;
  {
    py::gil_scoped_release release;
    counted = cpu::label_issues_count(c, am, tp, n, t, static_cast<int>(classes), &first_bad);
  }
  if (first_bad >= 0)
    Arr(thresholds_adj, fn, "thresholds_adj")
        .value_error("has " + std::to_string(classes) + " entries, but argmax of a candidate " +
                     "is " + std::to_string(am[first_bad]) + " (needs 0 <= argmax < " +
                     std::to_string(classes) + ")");
  return counted;
}

void softmin(const py::array& scores, double temperature, const py::array& out) {
  const char* fn = "_C.label_issues_softmin";
  Arr(scores, fn, "scores").ndim(2).dtype<float>().c_contiguous();
  const index_t n = scores.shape(0), hw = scores.shape(1);
  const float* s = static_cast<const float*>(scores.data());
  double* o = out_ptr<double>(out, fn, "out", n, "rows of scores");
  py::gil_scoped_release release;
  cpu::label_issues_softmin(s, n, hw, temperature, o);
}

void flags(const py::array& scores, const py::array& candidates, uint32_t cutoff_key,
           const py::array& flags) {
  const char* fn = "_C.label_issues_flags";
  const py::ssize_t n = scores.size();
  const float* s = in_ptr<float>(scores, fn, "scores", n, nullptr);
  const uint8_t* c = in_ptr<uint8_t>(candidates, fn, "candidates", n, "scores' size");
  uint8_t* f = out_ptr<uint8_t>(flags, fn, "flags", n, "scores' size");
  py::gil_scoped_release release;
  cpu::label_issues_flags(s, c, n, cutoff_key, f);
}

}  // namespace

void bind_label_issues(py::module_& m) {
  m.def("label_issues_sums", &sums, py::arg("labels"), py::arg("probs"), py::arg("num_classes"),
        py::arg("ignore_index"), py::arg("sums"), py::arg("counts"), py::arg("bad"),
        "Confident-learning thresholds, pass 1: adds per class the sum of the self-confidence "
        "p[label] (into float64 `sums`, C) and the pixel count (int64 `counts`, C); bad[0] "
        "(int64, 1) += labels outside 0..C-1. labels (N, H, W) uint8/uint16/int32/int64 and "
        "probs (N, C, H, W) float16/float32, both C-contiguous.");
  m.def("label_issues_scores", &scores, py::arg("labels"), py::arg("probs"),
        py::arg("num_classes"), py::arg("ignore_index"), py::arg("thresholds_adj"),
        py::arg("scores"), py::arg("candidates"), py::arg("hist"),
        "Confident-learning pass 2: per-pixel self-confidence (float32 `scores`, N*H*W; NaN "
        "where ignored) and candidate flag (uint8 `candidates`: argmax != label), the "
        "65536-bin int64 histogram `hist` (or None) of the scores' order keys; returns the "
        "estimated number of issues (candidates whose top probability >= thresholds_adj, "
        "float64, C).");
  m.def("label_issues_fused", &fused, py::arg("labels"), py::arg("probs"),
        py::arg("num_classes"), py::arg("ignore_index"), py::arg("sums"), py::arg("counts"),
        py::arg("bad"), py::arg("scores"), py::arg("candidates"), py::arg("argmax"),
        py::arg("top"), py::arg("hist"), py::arg("nonfinite") = py::none(),
        "Confident learning in one read of probs: the threshold sums of label_issues_sums and "
        "the per-pixel outputs of label_issues_scores plus argmax (int32) and top probability "
        "(float32), each N*H*W; `nonfinite` (int64, 1, or None) receives the flat index into "
        "probs of the first NaN or inf, -1 if none.");
  m.def("label_issues_count", &count, py::arg("candidates"), py::arg("argmax"), py::arg("top"),
        py::arg("thresholds_adj"),
        "Number of counted issues from label_issues_fused's outputs (uint8 candidates whose "
        "float32 top probability >= float64 thresholds_adj[int32 argmax]); every candidate's "
        "argmax must index thresholds_adj.");
  m.def("label_issues_softmin", &softmin, py::arg("scores"), py::arg("temperature"),
        py::arg("out"),
        "cleanlab's softmin image quality of each row of float32 scores (N, H*W), NaN skipped, "
        "into float64 `out` (N).");
  m.def("label_issues_flags", &flags, py::arg("scores"), py::arg("candidates"),
        py::arg("cutoff_key"), py::arg("flags"),
        "Flagging pass: flags = candidates & (order key of score < cutoff_key); float32 "
        "scores, uint8 candidates and flags of one size.");
}

}  // namespace segkit
