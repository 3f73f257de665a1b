// The array checks every binding runs before it hands a pointer to csrc/cpu/: the one place
// that knows what "safe to read/write as a T[n]" means. Each failure raises ValueError (shape,
// size, layout, writeable) or TypeError (dtype, byte order) with a message that names the
// function, the argument and the bad value, e.g.
//   _C.label_issues_count: thresholds_adj has 3 entries, needs at least 11 (argmax reaches 10)
// Usage (chainable; every call returns the checker):
//   Arr(out, "_C.mode_filter", "output").ndim(3).same_shape(in, "input").same_dtype(in, "input")
//       .c_contiguous().writeable();
//   Arr(sums, fn, "sums").dtype<double>().size(c).c_contiguous().writeable();
//   Arr(saved, fn, "saved").dtype<float>().shape({n, t, c, hp, wp}).c_contiguous();
// Take every array argument as py::array (never py::array_t<T>, which converts silently into
// a temporary: writes to it are lost, and without c_style it is not even contiguous).
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <initializer_list>
#include <string>

#include "common/macros.h"

namespace segkit {
namespace bind {

namespace py = pybind11;

inline std::string dtype_str(const py::dtype& d) { return py::str(d).cast<std::string>(); }

inline std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t d = 0; d < a.ndim(); ++d)
    s += (d ? ", " : "") + std::to_string(a.shape(d));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// True when the dtype's byte order is the machine's ('=' native, '|' single byte).
inline bool native_order(const py::dtype& d) {
  const char b = d.byteorder();
  if (b == '=' || b == '|') return true;
  const uint16_t one = 1;
  const bool little = *reinterpret_cast<const uint8_t*>(&one) == 1;
  return b == (little ? '<' : '>');
}

// numpy's NPY_ARRAY_ALIGNED flag (pybind11 names only the layout flags)
constexpr int kAligned = 0x0100;

class Arr {
 public:
  Arr(const py::array& a, const char* fn, const char* arg) : a_(a), fn_(fn), arg_(arg) {}

  [[noreturn]] void value_error(const std::string& what) const {
    throw py::value_error(prefix() + what);
  }
  [[noreturn]] void type_error(const std::string& what) const {
    throw py::type_error(prefix() + what);
  }

  // Exact dtype T: kind, item size and native byte order.
  template <typename T>
  Arr& dtype() {
    const py::dtype want = py::dtype::of<T>();
    if (a_.dtype().kind() != want.kind() || a_.itemsize() != want.itemsize())
      type_error("must be " + dtype_str(want) + ", got " + dtype_str(a_.dtype()));
    return native();
  }
  // A native-order dtype of kind `kind` ('u', 'i', 'f') and one of the item sizes (0 ends).
  Arr& kind(char kind, int size_a, int size_b = 0, const char* names = "") {
    const auto item = a_.itemsize();
    if (a_.dtype().kind() != kind || (item != size_a && item != size_b))
      type_error(std::string("must be ") + names + ", got " + dtype_str(a_.dtype()));
    return native();
  }
  Arr& native() {
    if (!native_order(a_.dtype()))
      type_error("must be in the machine's byte order, got " + dtype_str(a_.dtype()));
    return *this;
  }
  Arr& same_dtype(const py::array& b, const char* b_name) {
    if (a_.dtype().kind() != b.dtype().kind() || a_.itemsize() != b.itemsize())
      type_error("dtype " + dtype_str(a_.dtype()) + " differs from " + b_name + "'s " +
                 dtype_str(b.dtype()));
    return native();
  }
  Arr& ndim(py::ssize_t n) {
    if (a_.ndim() != n)
      value_error("must be " + std::to_string(n) + "-D, got shape " + shape_str(a_));
    return *this;
  }
  // Extent `n` along axis `axis` (ndim checked first).
  Arr& dim(int axis, py::ssize_t n, const char* what = nullptr) {
    if (axis >= a_.ndim() || a_.shape(axis) != n)
      value_error("shape " + shape_str(a_) + " needs " + std::to_string(n) + " along axis " +
                  std::to_string(axis) + (what ? std::string(" (") + what + ")" : ""));
    return *this;
  }
  // Exactly the shape `want` (the message prints the whole wanted shape).
  Arr& shape(std::initializer_list<index_t> want) {
    bool same = a_.ndim() == static_cast<py::ssize_t>(want.size());
    py::ssize_t d = 0;
    for (auto it = want.begin(); same && it != want.end(); ++it, ++d) same = a_.shape(d) == *it;
    if (!same) {
      std::string w = "(";
      d = 0;
      for (auto n : want) w += (d++ ? ", " : "") + std::to_string(n);
      value_error("must have shape " + w + (want.size() == 1 ? ",)" : ")") + ", got " +
                  shape_str(a_));
    }
    return *this;
  }
  Arr& same_shape(const py::array& b, const char* b_name) {
    bool same = a_.ndim() == b.ndim();
    for (py::ssize_t d = 0; same && d < a_.ndim(); ++d) same = a_.shape(d) == b.shape(d);
    if (!same)
      value_error("shape " + shape_str(a_) + " differs from " + b_name + "'s " + shape_str(b));
    return *this;
  }
  Arr& size(py::ssize_t n, const char* what = nullptr) {
    if (a_.size() != n)
      value_error("has " + std::to_string(a_.size()) + " entries, needs " + std::to_string(n) +
                  (what ? std::string(" (") + what + ")" : ""));
    return *this;
  }
  Arr& c_contiguous() {
    if (!(a_.flags() & py::array::c_style))
      value_error("must be C-contiguous (strides of shape " + shape_str(a_) + " are not)");
    return aligned();
  }
  Arr& aligned() {
    if (!(a_.flags() & kAligned)) value_error("must be aligned to its item size");
    return *this;
  }
  Arr& writeable() {
    if (!a_.writeable()) value_error("must be writeable (got a read-only array)");
    return *this;
  }

 private:
  std::string prefix() const { return std::string(fn_) + ": " + arg_ + " "; }
  const py::array& a_;
  const char* fn_;
  const char* arg_;
};

// Element stride of axis `axis`; raises unless it is a whole, non-negative number of elements.
inline index_t elem_stride(const py::array& a, int axis, const char* fn, const char* arg) {
  const auto s = a.strides(axis), item = a.itemsize();
  if (s < 0 || s % item != 0)
    Arr(a, fn, arg).value_error("axis " + std::to_string(axis) + " has a negative or misaligned "
                                "stride (" + std::to_string(s) + " bytes)");
  return static_cast<index_t>(s / item);
}

// Calls f(T{}) with T the C++ type of a label array's dtype (uint8, uint16, int32, int64).
template <typename F>
void dispatch_labels(const py::array& a, const char* fn, const char* arg, F&& f) {
  Arr(a, fn, arg).native();
  const char kind = a.dtype().kind();
  const auto size = a.dtype().itemsize();
  if (kind == 'u' && size == 1) return f(uint8_t{});
  if (kind == 'u' && size == 2) return f(uint16_t{});
  if (kind == 'i' && size == 4) return f(int32_t{});
  if (kind == 'i' && size == 8) return f(int64_t{});
  Arr(a, fn, arg).type_error("must be uint8, uint16, int32 or int64, got " +
                             dtype_str(a.dtype()));
}

// An optional integer argument (None or an int that fits long long).
inline bool optional_int(const py::object& v, const char* fn, const char* arg, long long* out) {
  if (v.is_none()) return false;
  if (!PyIndex_Check(v.ptr()) || PyBool_Check(v.ptr()))
    throw py::type_error(std::string(fn) + ": " + arg + " must be None or an int, got " +
                         py::repr(v).cast<std::string>());
  try {
    *out = py::reinterpret_steal<py::int_>(PyNumber_Index(v.ptr())).cast<long long>();
  } catch (const py::cast_error&) {
    throw py::value_error(std::string(fn) + ": " + arg + " " + py::repr(v).cast<std::string>() +
                          " does not fit a 64-bit integer");
  }
  return true;
}

}  // namespace bind
}  // namespace segkit
