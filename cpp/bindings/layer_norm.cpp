// Bindings for layer norm over the last dim of a 2-D (rows, k) array (the Python layer flattens
// normalized_shape into k): validate, allocate outputs, release the GIL, call.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "bindings/common.h"
#include "bindings/output_cache.h"
#include "bindings/registry.h"
#include "ops/layer_norm.h"
#include "runtime/threads.h"

namespace seqblocks {
namespace {

template <class T>
using CArray = py::array_t<T, py::array::c_style | py::array::forcecast>;

// An optional (k,) operand of x's dtype; an empty array when None.
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

void check_2d(const py::array& a, const char* name) {
  if (a.ndim() != 2) {
    throw std::invalid_argument(std::string(name) + ": expected a 2-D array (rows, k), got shape " + shape_str(a));
  }
}

void check_same(const py::array& a, const char* name, const py::array& like, DType t) {
  if (float_dtype_of(a, name) != t) {
    throw py::type_error(std::string(name) + ": expected dtype " + std::string(py::str(like.dtype())) + ", got " +
                         std::string(py::str(a.dtype())));
  }
  if (a.ndim() != like.ndim() || !std::equal(like.shape(), like.shape() + like.ndim(), a.shape())) {
    throw std::invalid_argument(std::string(name) + ": expected shape " + shape_str(like) + ", got " + shape_str(a));
  }
}

template <class T>
py::tuple forward(const py::array& x_arr, const py::object& w_obj, const py::object& b_obj, double eps,
                  bool needs_grad, DType t) {
  CArray<T> x = CArray<T>::ensure(x_arr);
  const int64_t rows = x.shape(0), k = x.shape(1);
  if (k == 0) throw std::invalid_argument("x: expected k >= 1 columns, got shape " + shape_str(x));
  CArray<T> w = optional_vector<T>(w_obj, "weight", k, t);
  CArray<T> b = optional_vector<T>(b_obj, "bias", k, t);
  auto y = new_output<T, py::array::c_style | py::array::forcecast>({rows, k});
  LayerNormForwardArgs<T> a;
  a.x = x.data();
  a.w = w_obj.is_none() ? nullptr : w.data();
  a.b = b_obj.is_none() ? nullptr : b.data();
  a.y = y.mutable_data();
  a.rows = rows;
  a.k = k;
  a.eps = eps;
  py::object mean = py::none(), rstd = py::none();
  if (needs_grad) {
    auto m = new_output<T, py::array::c_style | py::array::forcecast>({rows});
    auto r = new_output<T, py::array::c_style | py::array::forcecast>({rows});
    a.mean = m.mutable_data();
    a.rstd = r.mutable_data();
    mean = m;
    rstd = r;
  }
  {
    py::gil_scoped_release release;
    a.nthreads = num_threads();
    const LayerNormKernels& kt = SEQBLOCKS_DISPATCH(layer_norm_kernels);
    if constexpr (std::is_same_v<T, float>) {
      kt.forward_f32(a);
    } else {
      kt.forward_f64(a);
    }
  }
  return py::make_tuple(y, mean, rstd);
}

template <class T>
py::tuple backward(const py::array& dy_arr, const py::array& x_arr, const py::array& mean_arr,
                   const py::array& rstd_arr, const py::object& w_obj, bool want_dw, bool want_db, DType t) {
  CArray<T> x = CArray<T>::ensure(x_arr);
  const int64_t rows = x.shape(0), k = x.shape(1);
  if (k == 0) throw std::invalid_argument("x: expected k >= 1 columns, got shape " + shape_str(x));
  check_same(dy_arr, "grad_output", x_arr, t);
  if (mean_arr.ndim() != 1 || mean_arr.shape(0) != rows || float_dtype_of(mean_arr, "mean") != t ||
      rstd_arr.ndim() != 1 || rstd_arr.shape(0) != rows || float_dtype_of(rstd_arr, "rstd") != t) {
    throw std::invalid_argument("mean, rstd: expected shape (" + std::to_string(rows) + ",) and x's dtype, got " +
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
  a.x = x.data();
  a.mean = mean.data();
  a.rstd = rstd.data();
  a.w = w_obj.is_none() ? nullptr : w.data();
  a.dx = dx.mutable_data();
  a.rows = rows;
  a.k = k;
  {
    py::gil_scoped_release release;
    a.nthreads = num_threads();
    const LayerNormKernels& kt = SEQBLOCKS_DISPATCH(layer_norm_kernels);
    if constexpr (std::is_same_v<T, float>) {
      kt.backward_f32(a);
    } else {
      kt.backward_f64(a);
    }
  }
  return py::make_tuple(dx, dw, db);
}

}  // namespace
}  // namespace seqblocks

SEQBLOCKS_BINDINGS(layer_norm) {
  using namespace seqblocks;
  namespace py = pybind11;
  m.def(
      "layer_norm_forward",
      [](const py::array& x, const py::object& weight, const py::object& bias, double eps, bool needs_grad) {
        check_2d(x, "x");
        const DType t = float_dtype_of(x, "x");
        return t == DType::f32 ? forward<float>(x, weight, bias, eps, needs_grad, t)
                               : forward<double>(x, weight, bias, eps, needs_grad, t);
      },
      py::arg("x").noconvert(), py::arg("weight"), py::arg("bias"), py::arg("eps"), py::arg("needs_grad"),
      "(y, mean or None, rstd or None) of layer norm over the rows of x (rows, k); weight, bias (k,) or None");
  m.def(
      "layer_norm_backward",
      [](const py::array& dy, const py::array& x, const py::array& mean, const py::array& rstd,
         const py::object& weight, bool want_dw, bool want_db) {
        check_2d(x, "x");
        const DType t = float_dtype_of(x, "x");
        return t == DType::f32 ? backward<float>(dy, x, mean, rstd, weight, want_dw, want_db, t)
                               : backward<double>(dy, x, mean, rstd, weight, want_dw, want_db, t);
      },
      py::arg("grad_output").noconvert(), py::arg("x").noconvert(), py::arg("mean").noconvert(),
      py::arg("rstd").noconvert(), py::arg("weight"), py::arg("want_dweight"), py::arg("want_dbias"),
      "(dx, dweight or None, dbias or None) of layer norm from the forward's x, mean, rstd");
}
