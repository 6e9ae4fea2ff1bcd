// Argument handling shared by the layer-norm bindings (layer_norm.cpp, add_layer_norm.cpp), and
// their common backward: layer norm backward from (x, mean, rstd), plus a residual stream's own
// gradient when given (add_layer_norm's ds).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <string>
#include <type_traits>

#include "bindings/common.h"
#include "bindings/output_cache.h"
#include "ops/add_layer_norm.h"
#include "ops/layer_norm.h"
#include "runtime/threads.h"

namespace seqblocks {
namespace layer_norm_args {

template <class T>
using CArray = py::array_t<T, py::array::c_style | py::array::forcecast>;

inline void check_2d(const py::array& a, const char* name) {
  if (a.ndim() != 2) {
    throw std::invalid_argument(std::string(name) + ": expected a 2-D array (rows, k), got shape " + shape_str(a));
  }
}

// a must have like's shape and the dtype t (like's).
inline void check_like(const py::array& a, const char* name, const py::array& like, DType t) {
  if (float_dtype_of(a, name) != t) {
    throw py::type_error(std::string(name) + ": expected dtype " + std::string(py::str(like.dtype())) + ", got " +
                         std::string(py::str(a.dtype())));
  }
  if (a.ndim() != like.ndim() || !std::equal(like.shape(), like.shape() + like.ndim(), a.shape())) {
    throw std::invalid_argument(std::string(name) + ": expected shape " + shape_str(like) + ", got " + shape_str(a));
  }
}

// An optional (k,) operand of x's dtype (read-only: forcecast never hides a write); an empty
// array when None.
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

// (dx, dweight or None, dbias or None) of layer norm at x (rows, k) (named x_name in errors)
// from the forward's mean and rstd; dx also gets ds (x's shape) added when ds is not None.
template <class T>
py::tuple backward(const py::array& dy_arr, const py::object& ds_obj, const py::array& x_arr, const char* x_name,
                   const py::array& mean_arr, const py::array& rstd_arr, const py::object& w_obj, bool want_dw,
                   bool want_db, DType t) {
  CArray<T> x = CArray<T>::ensure(x_arr);
  const int64_t rows = x.shape(0), k = x.shape(1);
  if (k == 0) throw std::invalid_argument(std::string(x_name) + ": expected k >= 1 columns, got shape " + shape_str(x));
  check_like(dy_arr, "grad_output", x_arr, t);
  CArray<T> ds;
  if (!ds_obj.is_none()) {
    py::array ds_arr = py::array::ensure(ds_obj);
    if (!ds_arr) throw py::type_error("grad_s: expected an array or None");
    check_like(ds_arr, "grad_s", x_arr, t);
    ds = CArray<T>::ensure(ds_arr);
  }
  if (mean_arr.ndim() != 1 || mean_arr.shape(0) != rows || float_dtype_of(mean_arr, "mean") != t ||
      rstd_arr.ndim() != 1 || rstd_arr.shape(0) != rows || float_dtype_of(rstd_arr, "rstd") != t) {
    throw std::invalid_argument("mean, rstd: expected shape (" + std::to_string(rows) + ",) and " + x_name +
                                "'s dtype, got " + shape_str(mean_arr) + " and " + shape_str(rstd_arr));
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
  a.x = x.data();
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
    const AddLayerNormKernels& add = SEQBLOCKS_DISPATCH(add_layer_norm_kernels);
    if constexpr (std::is_same_v<T, float>) {
      ln.backward_f32(a);
      if (ds_ptr) add.accumulate_f32(a.dx, ds_ptr, rows * k, a.nthreads);
    } else {
      ln.backward_f64(a);
      if (ds_ptr) add.accumulate_f64(a.dx, ds_ptr, rows * k, a.nthreads);
    }
  }
  return py::make_tuple(dx, dw, db);
}

}  // namespace layer_norm_args
}  // namespace seqblocks
