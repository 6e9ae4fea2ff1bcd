// Bindings for the element-wise math kernels (exp, tanh, sigmoid, gelu).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "bindings/common.h"
#include "bindings/output_cache.h"
#include "bindings/registry.h"
#include "runtime/dispatch.h"
#include "runtime/threads.h"

namespace seqblocks {
namespace {

UnaryOp unary_op_from_name(const std::string& name) {
  if (name == "exp") return UnaryOp::exp;
  if (name == "tanh") return UnaryOp::tanh;
  if (name == "sigmoid") return UnaryOp::sigmoid;
  if (name == "gelu_erf") return UnaryOp::gelu_erf;
  if (name == "gelu_tanh") return UnaryOp::gelu_tanh;
  throw std::invalid_argument("unary: op must be one of exp, tanh, sigmoid, gelu_erf, gelu_tanh, got '" +
                              name + "'");
}

template <class T>
py::array run_unary(UnaryOp op, const py::array& x_arr) {
  auto x = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(x_arr);
  std::vector<py::ssize_t> shape(x.shape(), x.shape() + x.ndim());
  auto y = new_output<T>(shape);
  const int64_t n = static_cast<int64_t>(x.size());
  if (n == 0) return std::move(y);
  const T* src = x.data();
  T* dst = y.mutable_data();
  {
    py::gil_scoped_release release;
    const KernelTable& kt = kernels();
    if constexpr (std::is_same_v<T, float>) {
      kt.unary_f32(op, src, dst, n, num_threads());
    } else {
      kt.unary_f64(op, src, dst, n, num_threads());
    }
  }
  return std::move(y);
}

}  // namespace

}  // namespace seqblocks

SEQBLOCKS_BINDINGS(math) {
  using namespace seqblocks;
  namespace py = pybind11;
  m.def(
      "unary",
      [](const std::string& name, const py::array& x) {
        const UnaryOp op = unary_op_from_name(name);
        if (float_dtype_of(x, "x") == DType::f32) return run_unary<float>(op, x);
        return run_unary<double>(op, x);
      },
      py::arg("op"), py::arg("x").noconvert(), "y = op(x) element-wise, op in exp, tanh, sigmoid, gelu_erf, gelu_tanh");
}
