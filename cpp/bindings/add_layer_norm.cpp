// Bindings for residual add + layer norm over the last dim of 2-D (rows, k) arrays (the Python
// layer flattens normalized_shape into k): validate, allocate outputs, release the GIL, call.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <string>
#include <type_traits>

#include "bindings/common.h"
#include "bindings/output_cache.h"
#include "bindings/registry.h"
#include "ops/add_layer_norm.h"
#include "runtime/threads.h"

namespace seqblocks {
namespace {

template <class T>
using CArray = py::array_t<T, py::array::c_style | py::array::forcecast>;

void check_like(const py::array& a, const char* name, const py::array& like, DType t) {
  if (float_dtype_of(a, name) != t) {
    throw py::type_error(std::string(name) + ": expected dtype " + std::string(py::str(like.dtype())) + ", got " +
                         std::string(py::str(a.dtype())));
  }
  if (a.ndim() != like.ndim() || !std::equal(like.shape(), like.shape() + like.ndim(), a.shape())) {
    throw std::invalid_argument(std::string(name) + ": expected shape " + shape_str(like) + ", got " + shape_str(a));
  }
}

// An optional (k,) operand of x's dtype (read-only: forcecast never hides a write).
template <class T>
CArray<T> optional_vector(const py::object& obj, const char* name, int64_t k, DType want) {
  if (obj.is_none()) return CArray<T>();
  py::array arr = py::array::ensure(obj);
  if (!arr) throw py::type_error(std::string(name) + ": expected an array or None");
  if (float_dtype_of(arr, name) != want) {
    throw py::type_error(std::string(name) + ": expected the dtype of x, got " + std::string(py::str(arr.dtype())));
  }
  if (arr.ndim() != 1 || arr.shape(0) != k) {
    throw std::invalid_argument(std::string(name) + ": expected shape (" + std::to_string(k) + ",), got " +
                                shape_str(arr));
  }
  return CArray<T>::ensure(arr);
}

template <class T>
py::tuple forward(const py::array& x_arr, const py::array& r_arr, const py::object& w_obj, const py::object& b_obj,
                  double eps, bool needs_grad, DType t) {
  check_like(r_arr, "residual", x_arr, t);
  CArray<T> x = CArray<T>::ensure(x_arr), r = CArray<T>::ensure(r_arr);
  const int64_t rows = x.shape(0), k = x.shape(1);
  if (k == 0) throw std::invalid_argument("x: expected k >= 1 columns, got shape " + shape_str(x));
  CArray<T> w = optional_vector<T>(w_obj, "weight", k, t);
  CArray<T> b = optional_vector<T>(b_obj, "bias", k, t);
  auto y = new_output<T, py::array::c_style | py::array::forcecast>({rows, k});
  auto s = new_output<T, py::array::c_style | py::array::forcecast>({rows, k});
  AddLayerNormForwardArgs<T> a;
  a.x = x.data();
  a.r = r.data();
  a.w = w_obj.is_none() ? nullptr : w.data();
  a.b = b_obj.is_none() ? nullptr : b.data();
  a.s = s.mutable_data();
  a.y = y.mutable_data();
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
  return py::make_tuple(y, s, mean, rstd);
}

template <class T>
py::tuple backward(const py::array& dy_arr, const py::object& ds_obj, const py::array& s_arr,
                   const py::array& mean_arr, const py::array& rstd_arr, const py::object& w_obj, bool want_dw,
                   bool want_db, DType t) {
  CArray<T> s = CArray<T>::ensure(s_arr);
  const int64_t rows = s.shape(0), k = s.shape(1);
  if (k == 0) throw std::invalid_argument("s: expected k >= 1 columns, got shape " + shape_str(s));
  check_like(dy_arr, "grad_output", s_arr, t);
  CArray<T> ds;
  if (!ds_obj.is_none()) {
    py::array ds_arr = py::array::ensure(ds_obj);
    if (!ds_arr) throw py::type_error("grad_s: expected an array or None");
    check_like(ds_arr, "grad_s", s_arr, t);
    ds = CArray<T>::ensure(ds_arr);
  }
  if (mean_arr.ndim() != 1 || mean_arr.shape(0) != rows || float_dtype_of(mean_arr, "mean") != t ||
      rstd_arr.ndim() != 1 || rstd_arr.shape(0) != rows || float_dtype_of(rstd_arr, "rstd") != t) {
    throw std::invalid_argument("mean, rstd: expected shape (" + std::to_string(rows) + ",) and s's dtype, got " +
                                shape_str(mean_arr) + " and " + shape_str(rstd_arr));
  }
  CArray<T> dy = CArray<T>::ensure(dy_arr);
  CArray<T> mean = CArray<T>::ensure(mean_arr), rstd = CArray<T>::ensure(rstd_arr);
  CArray<T> w = optional_vector<T>(w_obj, "weight", k, t);
  auto dx = new_output<T, py::array::c_style | py::array::forcecast>({rows, k});
  py::object dw = py::none(), db = py::none();
  LayerNormBackwardArgs<T> a;
  if (want_dw) {
    auto d = new_output<T, py::array::c_style | py::array::forcecast>({k});
    a.dw = d.mutable_data();
    dw = d;
  }
  if (want_db) {
    auto d = new_output<T, py::array::c_style | py::array::forcecast>({k});
    a.db = d.mutable_data();
    db = d;
  }
  a.dy = dy.data();
  a.x = s.data();
  a.mean = mean.data();
  a.rstd = rstd.data();
  a.w = w_obj.is_none() ? nullptr : w.data();
  a.dx = dx.mutable_data();
  a.rows = rows;
  a.k = k;
  const T* ds_ptr = ds_obj.is_none() ? nullptr : ds.data();
  {
    py::gil_scoped_release release;
    a.nthreads = num_threads();
    const LayerNormKernels& ln = SEQBLOCKS_DISPATCH(layer_norm_kernels);
    const AddLayerNormKernels& kt = SEQBLOCKS_DISPATCH(add_layer_norm_kernels);
    if constexpr (std::is_same_v<T, float>) {
      ln.backward_f32(a);
      if (ds_ptr) kt.accumulate_f32(a.dx, ds_ptr, rows * k, a.nthreads);
    } else {
      ln.backward_f64(a);
      if (ds_ptr) kt.accumulate_f64(a.dx, ds_ptr, rows * k, a.nthreads);
    }
  }
  return py::make_tuple(dx, dw, db);
}

void check_2d(const py::array& a, const char* name) {
  if (a.ndim() != 2) {
    throw std::invalid_argument(std::string(name) + ": expected a 2-D array (rows, k), got shape " + shape_str(a));
  }
}

}  // namespace
}  // namespace seqblocks

SEQBLOCKS_BINDINGS(add_layer_norm) {
  using namespace seqblocks;
  namespace py = pybind11;
  m.def(
      "add_layer_norm_forward",
      [](const py::array& x, const py::array& residual, const py::object& weight, const py::object& bias, double eps,
         bool needs_grad) {
        check_2d(x, "x");
        const DType t = float_dtype_of(x, "x");
        return t == DType::f32 ? forward<float>(x, residual, weight, bias, eps, needs_grad, t)
                               : forward<double>(x, residual, weight, bias, eps, needs_grad, t);
      },
      py::arg("x").noconvert(), py::arg("residual").noconvert(), py::arg("weight"), py::arg("bias"), py::arg("eps"),
      py::arg("needs_grad"),
      "(y, s, mean or None, rstd or None): s = x + residual, y = layer norm of s over rows (rows, k)");
  m.def(
      "add_layer_norm_backward",
      [](const py::array& dy, const py::object& ds, const py::array& s, const py::array& mean, const py::array& rstd,
         const py::object& weight, bool want_dw, bool want_db) {
        check_2d(s, "s");
        const DType t = float_dtype_of(s, "s");
        return t == DType::f32 ? backward<float>(dy, ds, s, mean, rstd, weight, want_dw, want_db, t)
                               : backward<double>(dy, ds, s, mean, rstd, weight, want_dw, want_db, t);
      },
      py::arg("grad_output").noconvert(), py::arg("grad_s"), py::arg("s").noconvert(), py::arg("mean").noconvert(),
      py::arg("rstd").noconvert(), py::arg("weight"), py::arg("want_dweight"), py::arg("want_dbias"),
      "(dx, dweight or None, dbias or None); dx = layer norm backward at s, plus grad_s when given");
}
