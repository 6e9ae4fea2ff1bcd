// Bindings for layer norm over the last dim of a 2-D (rows, k) array (the Python layer flattens
// normalized_shape into k): validate, allocate outputs, release the GIL, call.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "bindings/common.h"
#include "bindings/layer_norm_args.h"
#include "bindings/output_cache.h"
#include "bindings/registry.h"
#include "ops/layer_norm.h"
#include "runtime/threads.h"

namespace seqblocks {
namespace {

using layer_norm_args::check_2d;
using layer_norm_args::optional_vector;
template <class T>
using CArray = layer_norm_args::CArray<T>;

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
        const py::object no_ds = py::none();
        return t == DType::f32
                   ? layer_norm_args::backward<float>(dy, no_ds, x, "x", mean, rstd, weight, want_dw, want_db, t)
                   : layer_norm_args::backward<double>(dy, no_ds, x, "x", mean, rstd, weight, want_dw, want_db, t);
      },
      py::arg("grad_output").noconvert(), py::arg("x").noconvert(), py::arg("mean").noconvert(),
      py::arg("rstd").noconvert(), py::arg("weight"), py::arg("want_dweight"), py::arg("want_dbias"),
      "(dx, dweight or None, dbias or None) of layer norm from the forward's x, mean, rstd");
}
