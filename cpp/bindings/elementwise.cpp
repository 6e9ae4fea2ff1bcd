// Bindings for the residual add (with broadcasting) and the deterministic axis sums; the
// broadcast pattern is reduced to (mode, outer, mid, inner) in python/seqblocks/ops/elementwise.py.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "bindings/common.h"
#include "bindings/ops_args.h"
#include "bindings/output_cache.h"
#include "bindings/registry.h"
#include "ops/elementwise.h"
#include "runtime/threads.h"

namespace seqblocks {
namespace {

int64_t checked_volume(int64_t outer, int64_t mid, int64_t inner, const char* what) {
  if (outer < 0 || mid < 0 || inner < 0) {
    throw std::invalid_argument(std::string(what) + ": expected extents >= 0, got (" + std::to_string(outer) +
                                ", " + std::to_string(mid) + ", " + std::to_string(inner) + ")");
  }
  return checked_mul(checked_mul(outer, mid, what), inner, what);
}

void expect_size(const py::array& a, int64_t want, const char* name) {
  if (static_cast<int64_t>(a.size()) != want) {
    throw std::invalid_argument(std::string(name) + ": expected " + std::to_string(want) +
                                " elements, got shape " + shape_str(a));
  }
}

// y has a's shape (a new array, so the caller needs no reshaped view of it: autograd copies a
// view before storing it as a gradient). out (optional): where y goes instead -- a writable
// C-contiguous array of a's size and dtype, either a itself (an in-place add: every element is
// read before it is written) or memory apart from a and b.
template <class T>
py::array add_impl(const py::array& a_arr, const py::array& b_arr, int mode, int64_t outer, int64_t mid,
                   int64_t inner, const py::object& out_obj) {
  if (mode != 0 && mode != 1) throw std::invalid_argument("mode: expected 0 or 1, got " + std::to_string(mode));
  const int64_t total = checked_volume(outer, mid, inner, "add_broadcast");
  expect_size(a_arr, total, "a");
  expect_size(b_arr, mode == 0 ? checked_mul(outer, inner, "add_broadcast b") : mid, "b");
  auto a = c_input<T>(a_arr);
  auto b = c_input<T>(b_arr);
  py::array_t<T> y;
  if (out_obj.is_none()) {
    y = new_output<T>(std::vector<py::ssize_t>(a_arr.shape(), a_arr.shape() + a_arr.ndim()));
  } else {
    py::array out = py::array::ensure(out_obj);
    if (!out) throw py::type_error("out: expected an array or None");
    expect_dtype(out, std::is_same_v<T, float> ? DType::f32 : DType::f64, "out", "a");
    expect_size(out, total, "out");
    if (!out.writeable() || !(out.flags() & py::array::c_style)) {
      throw std::invalid_argument("out: expected a writable C-contiguous array");
    }
    const auto overlaps = [&](const void* p, size_t bytes) {
      const char* o = static_cast<const char*>(out.data());
      const char* q = static_cast<const char*>(p);
      return o < q + bytes && q < o + static_cast<size_t>(out.nbytes());
    };
    const bool apart_from_a = !overlaps(a.data(), static_cast<size_t>(a.nbytes()));
    if (overlaps(b.data(), static_cast<size_t>(b.nbytes())) || (out.data() != a.data() && !apart_from_a)) {
      throw std::invalid_argument("out: expected a itself or memory apart from a and b, got overlapping arrays");
    }
    y = py::reinterpret_borrow<py::array_t<T>>(out);
  }
  const T* pa = a.data();
  const T* pb = b.data();
  T* py_ = y.mutable_data();
  {
    py::gil_scoped_release release;
    const ElementwiseKernels& k = SEQBLOCKS_DISPATCH(elementwise_kernels);
    if constexpr (std::is_same_v<T, float>) {
      k.add_f32(pa, pb, py_, mode, outer, mid, inner, num_threads());
    } else {
      k.add_f64(pa, pb, py_, mode, outer, mid, inner, num_threads());
    }
  }
  return std::move(y);
}

template <class T>
py::array sum_axis_impl(const py::array& x_arr, int64_t outer, int64_t mid, int64_t inner) {
  const int64_t total = checked_volume(outer, mid, inner, "sum_axis");
  expect_size(x_arr, total, "x");
  auto x = c_input<T>(x_arr);
  auto out = new_output<T>({static_cast<py::ssize_t>(checked_mul(outer, inner, "sum_axis output"))});
  const T* px = x.data();
  T* po = out.mutable_data();
  {
    py::gil_scoped_release release;
    const ElementwiseKernels& k = SEQBLOCKS_DISPATCH(elementwise_kernels);
    if constexpr (std::is_same_v<T, float>) {
      k.sum_axis_f32(px, po, outer, mid, inner, num_threads());
    } else {
      k.sum_axis_f64(px, po, outer, mid, inner, num_threads());
    }
  }
  return std::move(out);
}

}  // namespace
}  // namespace seqblocks

SEQBLOCKS_BINDINGS(elementwise) {
  using namespace seqblocks;
  namespace py = pybind11;
  m.def(
      "add_broadcast",
      [](const py::array& a, const py::array& b, int mode, int64_t outer, int64_t mid, int64_t inner,
         const py::object& out) {
        const DType t = float_dtype_of(a, "a");
        expect_dtype(b, t, "b", "a");
        return t == DType::f32 ? add_impl<float>(a, b, mode, outer, mid, inner, out)
                               : add_impl<double>(a, b, mode, outer, mid, inner, out);
      },
      py::arg("a").noconvert(), py::arg("b").noconvert(), py::arg("mode"), py::arg("outer"), py::arg("mid"),
      py::arg("inner"), py::arg("out") = py::none(),
      "y = a + b over the view (outer, mid, inner): mode 0 adds b[o, i], mode 1 adds b[m]; returns y flat "
      "(written into out when given: a itself or an array apart from a and b)");
  m.def(
      "sum_axis",
      [](const py::array& x, int64_t outer, int64_t mid, int64_t inner) {
        return float_dtype_of(x, "x") == DType::f32 ? sum_axis_impl<float>(x, outer, mid, inner)
                                                     : sum_axis_impl<double>(x, outer, mid, inner);
      },
      py::arg("x").noconvert(), py::arg("outer"), py::arg("mid"), py::arg("inner"),
      "out[o, i] = sum over m of x[o, m, i] (deterministic for any thread count); returns out flat");
}
