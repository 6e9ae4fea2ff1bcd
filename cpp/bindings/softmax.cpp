// Bindings for softmax / log-softmax over the last dim of a 2-D (rows, n) array (the Python
// layer reshapes and moves the dim): validate, allocate the output, release the GIL, call.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "bindings/common.h"
#include "bindings/output_cache.h"
#include "bindings/registry.h"
#include "ops/softmax.h"
#include "runtime/threads.h"

namespace seqblocks {
namespace {

template <class T>
using CArray = py::array_t<T, py::array::c_style | py::array::forcecast>;

void check_2d(const py::array& a, const char* name) {
  if (a.ndim() != 2) {
    throw std::invalid_argument(std::string(name) + ": expected a 2-D array (rows, n), got shape " + shape_str(a));
  }
}

template <class T>
py::array forward(const py::array& x_arr, bool log) {
  CArray<T> x = CArray<T>::ensure(x_arr);
  const int64_t rows = x.shape(0), n = x.shape(1);
  auto y = new_output<T, py::array::c_style | py::array::forcecast>({rows, n});
  const T* xp = x.data();
  T* yp = y.mutable_data();
  {
    py::gil_scoped_release release;
    const SoftmaxKernels& k = SEQBLOCKS_DISPATCH(softmax_kernels);
    if constexpr (std::is_same_v<T, float>) {
      k.forward_f32(xp, yp, rows, n, log, num_threads());
    } else {
      k.forward_f64(xp, yp, rows, n, log, num_threads());
    }
  }
  return std::move(y);
}

template <class T>
py::array backward(const py::array& dy_arr, const py::array& y_arr, bool log) {
  CArray<T> dy = CArray<T>::ensure(dy_arr);
  CArray<T> y = CArray<T>::ensure(y_arr);
  const int64_t rows = y.shape(0), n = y.shape(1);
  auto dx = new_output<T, py::array::c_style | py::array::forcecast>({rows, n});
  const T* dyp = dy.data();
  const T* yp = y.data();
  T* dxp = dx.mutable_data();
  {
    py::gil_scoped_release release;
    const SoftmaxKernels& k = SEQBLOCKS_DISPATCH(softmax_kernels);
    if constexpr (std::is_same_v<T, float>) {
      k.backward_f32(dyp, yp, dxp, rows, n, log, num_threads());
    } else {
      k.backward_f64(dyp, yp, dxp, rows, n, log, num_threads());
    }
  }
  return std::move(dx);
}

}  // namespace
}  // namespace seqblocks

SEQBLOCKS_BINDINGS(softmax) {
  using namespace seqblocks;
  namespace py = pybind11;
  m.def(
      "softmax_forward",
      [](const py::array& x, bool log) {
        check_2d(x, "x");
        return float_dtype_of(x, "x") == DType::f32 ? forward<float>(x, log) : forward<double>(x, log);
      },
      py::arg("x").noconvert(), py::arg("log"),
      "softmax (log=False) or log_softmax (log=True) of each row of x (rows, n)");
  m.def(
      "softmax_backward",
      [](const py::array& dy, const py::array& y, bool log) {
        check_2d(y, "y");
        const DType t = float_dtype_of(y, "y");
        if (float_dtype_of(dy, "grad_output") != t) {
          throw py::type_error("grad_output: expected dtype " + std::string(py::str(y.dtype())) + " (y's), got " +
                               std::string(py::str(dy.dtype())));
        }
        if (dy.ndim() != 2 || dy.shape(0) != y.shape(0) || dy.shape(1) != y.shape(1)) {
          throw std::invalid_argument("grad_output: expected shape " + shape_str(y) + ", got " + shape_str(dy));
        }
        return t == DType::f32 ? backward<float>(dy, y, log) : backward<double>(dy, y, log);
      },
      py::arg("grad_output").noconvert(), py::arg("y").noconvert(), py::arg("log"),
      "dx of softmax (log=False) or log_softmax (log=True) from grad_output and the forward's y, all (rows, n)");
}
