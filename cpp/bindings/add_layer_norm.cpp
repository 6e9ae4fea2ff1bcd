// Bindings for residual add + layer norm over the last dim of 2-D (rows, k) arrays (the Python
// layer flattens normalized_shape into k): validate, allocate outputs, release the GIL, call.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <string>
#include <type_traits>

#include "bindings/common.h"
#include "bindings/layer_norm_args.h"
#include "bindings/output_cache.h"
#include "bindings/registry.h"
#include "ops/add_layer_norm.h"
#include "runtime/threads.h"

namespace seqblocks {
namespace {

using layer_norm_args::check_2d;
using layer_norm_args::check_like;
using layer_norm_args::optional_vector;
template <class T>
using CArray = layer_norm_args::CArray<T>;

// With in_place (inference only), y is written over the residual array itself (s = x + residual
// goes there first, then is normalized row by row in place): no new memory, whose first writes
// would each fetch a line the block no longer needs. residual must then be writable and
// C-contiguous (never a converted copy: the result would be lost) and apart from x.
template <class T>
py::tuple forward(const py::array& x_arr, const py::array& r_arr, const py::object& w_obj, const py::object& b_obj,
                  double eps, bool needs_grad, bool in_place, DType t) {
  check_like(r_arr, "residual", x_arr, t);
  if (in_place) {
    if (needs_grad) throw std::invalid_argument("in_place: expected needs_grad=False (s is not kept), got True");
    if (!r_arr.writeable() || !(r_arr.flags() & py::array::c_style)) {
      throw std::invalid_argument("residual: expected a writable C-contiguous array for in_place");
    }
    const char* x0 = static_cast<const char*>(x_arr.data());
    const char* r0 = static_cast<const char*>(r_arr.data());
    const auto bytes = static_cast<size_t>(r_arr.nbytes());
    if (x0 < r0 + bytes && r0 < x0 + static_cast<size_t>(x_arr.nbytes())) {
      throw std::invalid_argument("x: expected memory apart from residual's for in_place, got overlapping arrays");
    }
  }
  CArray<T> x = CArray<T>::ensure(x_arr), r = CArray<T>::ensure(r_arr);
  const int64_t rows = x.shape(0), k = x.shape(1);
  if (k == 0) throw std::invalid_argument("x: expected k >= 1 columns, got shape " + shape_str(x));
  CArray<T> w = optional_vector<T>(w_obj, "weight", k, t);
  CArray<T> b = optional_vector<T>(b_obj, "bias", k, t);
  py::array_t<T, py::array::c_style | py::array::forcecast> y, s;
  if (in_place) {
    y = py::reinterpret_borrow<py::array_t<T, py::array::c_style | py::array::forcecast>>(r_arr);
  } else {
    y = new_output<T, py::array::c_style | py::array::forcecast>({rows, k});
    s = new_output<T, py::array::c_style | py::array::forcecast>({rows, k});
  }
  AddLayerNormForwardArgs<T> a;
  a.x = x.data();
  a.r = r.data();
  a.w = w_obj.is_none() ? nullptr : w.data();
  a.b = b_obj.is_none() ? nullptr : b.data();
  a.y = y.mutable_data();
  a.s = in_place ? a.y : s.mutable_data();
  a.rows = rows;
  a.k = k;
  a.eps = eps;
  py::object mean = py::none(), rstd = py::none();
  if (needs_grad) {
    auto m = new_output<T, py::array::c_style | py::array::forcecast>({rows});
    auto rs = new_output<T, py::array::c_style | py::array::forcecast>({rows});
    a.mean = m.mutable_data();
    a.rstd = rs.mutable_data();
    mean = m;
    rstd = rs;
  }
  {
    py::gil_scoped_release release;
    a.nthreads = num_threads();
    const AddLayerNormKernels& kt = SEQBLOCKS_DISPATCH(add_layer_norm_kernels);
    if constexpr (std::is_same_v<T, float>) {
      kt.forward_f32(a);
    } else {
      kt.forward_f64(a);
    }
  }
  if (in_place) return py::make_tuple(y, py::none(), mean, rstd);
  return py::make_tuple(y, s, mean, rstd);
}

}  // namespace
}  // namespace seqblocks

SEQBLOCKS_BINDINGS(add_layer_norm) {
  using namespace seqblocks;
  namespace py = pybind11;
  m.def(
      "add_layer_norm_forward",
      [](const py::array& x, const py::array& residual, const py::object& weight, const py::object& bias, double eps,
         bool needs_grad, bool in_place) {
        check_2d(x, "x");
        const DType t = float_dtype_of(x, "x");
        return t == DType::f32 ? forward<float>(x, residual, weight, bias, eps, needs_grad, in_place, t)
                               : forward<double>(x, residual, weight, bias, eps, needs_grad, in_place, t);
      },
      py::arg("x").noconvert(), py::arg("residual").noconvert(), py::arg("weight"), py::arg("bias"), py::arg("eps"),
      py::arg("needs_grad"), py::arg("in_place") = false,
      "(y, s, mean or None, rstd or None): s = x + residual, y = layer norm of s over rows (rows, k); with "
      "in_place y is written over residual (returned as y) and s is None");
  m.def(
      "add_layer_norm_backward",
      [](const py::array& dy, const py::object& ds, const py::array& s, const py::array& mean, const py::array& rstd,
         const py::object& weight, bool want_dw, bool want_db) {
        check_2d(s, "s");
        const DType t = float_dtype_of(s, "s");
        return t == DType::f32
                   ? layer_norm_args::backward<float>(dy, ds, s, "s", mean, rstd, weight, want_dw, want_db, t)
                   : layer_norm_args::backward<double>(dy, ds, s, "s", mean, rstd, weight, want_dw, want_db, t);
      },
      py::arg("grad_output").noconvert(), py::arg("grad_s"), py::arg("s").noconvert(), py::arg("mean").noconvert(),
      py::arg("rstd").noconvert(), py::arg("weight"), py::arg("want_dweight"), py::arg("want_dbias"),
      "(dx, dweight or None, dbias or None); dx = layer norm backward at s, plus grad_s when given");
}
