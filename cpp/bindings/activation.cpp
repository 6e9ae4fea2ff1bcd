// Bindings for the activation pairs: forward through the vectorized math (relu: its own kernel),
// backward through the fused kernels of ops/activation_isa.cpp.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <type_traits>

#include "bindings/common.h"
#include "bindings/ops_args.h"
#include "bindings/output_cache.h"
#include "bindings/registry.h"
#include "ops/activation.h"
#include "runtime/dispatch.h"
#include "runtime/threads.h"

namespace seqblocks {
namespace {

template <class T>
void run_unary(UnaryOp op, const T* x, T* y, int64_t n, int nt) {
  if constexpr (std::is_same_v<T, float>) {
    kernels().unary_f32(op, x, y, n, nt);
  } else {
    kernels().unary_f64(op, x, y, n, nt);
  }
}

template <class T>
py::array forward_impl(const std::string& name, const py::array& x_arr) {
  auto x = c_input<T>(x_arr);
  auto y = new_output<T>(shape_of(x));
  const int64_t n = static_cast<int64_t>(x.size());
  if (n == 0) return std::move(y);
  UnaryOp op = UnaryOp::exp;
  const bool relu = name == "relu";
  if (!relu) {
    if (name == "tanh") op = UnaryOp::tanh;
    else if (name == "sigmoid") op = UnaryOp::sigmoid;
    else if (name == "gelu_erf") op = UnaryOp::gelu_erf;
    else if (name == "gelu_tanh") op = UnaryOp::gelu_tanh;
    else throw std::invalid_argument("name: expected relu, tanh, sigmoid, gelu_erf or gelu_tanh, got '" + name + "'");
  }
  const T* px = x.data();
  T* pyv = y.mutable_data();
  {
    py::gil_scoped_release release;
    const int nt = num_threads();
    if (relu) {
      const ActivationKernels& k = SEQBLOCKS_DISPATCH(activation_kernels);
      if constexpr (std::is_same_v<T, float>) {
        k.relu_forward_f32(px, pyv, n, nt);
      } else {
        k.relu_forward_f64(px, pyv, n, nt);
      }
    } else {
      run_unary<T>(op, px, pyv, n, nt);
    }
  }
  return std::move(y);
}

template <class T>
py::array backward_impl(const std::string& kind_name, const py::array& dy_arr, const py::array& saved_arr) {
  ActivationGrad kind;
  if (kind_name == "relu") kind = ActivationGrad::relu;
  else if (kind_name == "tanh") kind = ActivationGrad::tanh;
  else if (kind_name == "sigmoid") kind = ActivationGrad::sigmoid;
  else if (kind_name == "gelu_erf") kind = ActivationGrad::gelu_erf;
  else if (kind_name == "gelu_tanh") kind = ActivationGrad::gelu_tanh;
  else throw std::invalid_argument("kind: expected relu, tanh, sigmoid, gelu_erf or gelu_tanh, got '" + kind_name + "'");
  if (!same_shape(dy_arr, saved_arr)) {
    throw std::invalid_argument("grad_output: expected shape " + shape_str(saved_arr) + " (the forward's), got " +
                                shape_str(dy_arr));
  }
  auto dy = c_input<T>(dy_arr);
  auto saved = c_input<T>(saved_arr);
  auto dx = new_output<T>(shape_of(dy));
  const int64_t n = static_cast<int64_t>(dy.size());
  if (n == 0) return std::move(dx);
  const T* pdy = dy.data();
  const T* ps = saved.data();
  T* pdx = dx.mutable_data();
  {
    py::gil_scoped_release release;
    const int nt = num_threads();
    // aux = gelu(x), for the double kernel only (the float one needs no GELU output)
    if (kind == ActivationGrad::gelu_erf && std::is_same_v<T, double>) run_unary<T>(UnaryOp::gelu_erf, ps, pdx, n, nt);
    const ActivationKernels& k = SEQBLOCKS_DISPATCH(activation_kernels);
    if constexpr (std::is_same_v<T, float>) {
      k.backward_f32(kind, pdy, ps, pdx, pdx, n, nt);
    } else {
      k.backward_f64(kind, pdy, ps, pdx, pdx, n, nt);
    }
  }
  return std::move(dx);
}

}  // namespace
}  // namespace seqblocks

SEQBLOCKS_BINDINGS(activation) {
  using namespace seqblocks;
  namespace py = pybind11;
  m.def(
      "activation_forward",
      [](const std::string& name, const py::array& x) {
        return float_dtype_of(x, "x") == DType::f32 ? forward_impl<float>(name, x) : forward_impl<double>(name, x);
      },
      py::arg("name"), py::arg("x").noconvert(), "y = f(x), f in relu, tanh, sigmoid, gelu_erf, gelu_tanh");
  m.def(
      "activation_backward",
      [](const std::string& kind, const py::array& dy, const py::array& saved) {
        const DType t = float_dtype_of(dy, "grad_output");
        expect_dtype(saved, t, "saved", "grad_output");
        return t == DType::f32 ? backward_impl<float>(kind, dy, saved) : backward_impl<double>(kind, dy, saved);
      },
      py::arg("kind"), py::arg("grad_output").noconvert(), py::arg("saved").noconvert(),
      "dx = dy * f'(x) from what the forward saved (y for relu, tanh, sigmoid; x for gelu_erf, gelu_tanh)");
}
