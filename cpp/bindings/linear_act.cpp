// Binding for the linear + activation forward (ops/linear_act.h): (y, z or None). The backward is
// composed in Python from the activation and linear backward bindings.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "bindings/common.h"
#include "bindings/ops_args.h"
#include "bindings/output_cache.h"
#include "bindings/registry.h"
#include "ops/linear_act.h"
#include "runtime/threads.h"

namespace seqblocks {
namespace {

LinearAct parse_act(const std::string& name) {
  if (name == "relu") return LinearAct::relu;
  if (name == "gelu_erf") return LinearAct::gelu_erf;
  if (name == "gelu_tanh") return LinearAct::gelu_tanh;
  throw std::invalid_argument("activation: expected 'relu', 'gelu_erf' or 'gelu_tanh', got '" + name + "'");
}

template <class T>
py::tuple linear_act_impl(LinearAct act, const py::array& x_arr, const py::array& w_arr, const py::object& b_obj,
                          bool keep_pre) {
  const int64_t rows = x_arr.shape(0), in_f = x_arr.shape(1), out_f = w_arr.shape(0);
  if (w_arr.shape(1) != in_f) {
    throw std::invalid_argument("weight: expected shape (out, " + std::to_string(in_f) + ") for x " +
                                shape_str(x_arr) + ", got " + shape_str(w_arr));
  }
  checked_mul(checked_mul(rows, out_f, "y"), static_cast<int64_t>(sizeof(T)), "y bytes");
  auto x = c_input<T>(x_arr);
  auto w = c_input<T>(w_arr);
  CArray<T> b;
  const T* pb = nullptr;
  if (!b_obj.is_none()) {
    const py::array b_arr = py::cast<py::array>(b_obj);
    expect_dtype(b_arr, std::is_same_v<T, float> ? DType::f32 : DType::f64, "bias", "x");
    if (b_arr.ndim() != 1 || b_arr.shape(0) != out_f) {
      throw std::invalid_argument("bias: expected shape (" + std::to_string(out_f) + ",), got " + shape_str(b_arr));
    }
    b = c_input<T>(b_arr);
    pb = b.data();
  }
  auto y = new_output<T>({static_cast<py::ssize_t>(rows), static_cast<py::ssize_t>(out_f)});
  py::object pre = py::none();
  T* ppre = nullptr;
  if (keep_pre) {
    auto z = new_output<T>({static_cast<py::ssize_t>(rows), static_cast<py::ssize_t>(out_f)});
    ppre = z.mutable_data();
    pre = std::move(z);
  }
  const T* px = x.data();
  const T* pw = w.data();
  T* py_ = y.mutable_data();
  if (rows * out_f > 0) {
    py::gil_scoped_release release;
    const LinearActKernels& k = SEQBLOCKS_DISPATCH(linear_act_kernels);
    if constexpr (std::is_same_v<T, float>) {
      k.forward_f32(act, px, pw, pb, py_, ppre, rows, in_f, out_f, num_threads());
    } else {
      k.forward_f64(act, px, pw, pb, py_, ppre, rows, in_f, out_f, num_threads());
    }
  }
  return py::make_tuple(std::move(y), std::move(pre));
}

}  // namespace
}  // namespace seqblocks

SEQBLOCKS_BINDINGS(linear_act) {
  using namespace seqblocks;
  namespace py = pybind11;
  m.def(
      "linear_act",
      [](const py::array& x, const py::array& weight, const py::object& bias, const std::string& activation,
         bool keep_pre) {
        const LinearAct act = parse_act(activation);
        for (auto [arr, name] : {std::pair{&x, "x"}, std::pair{&weight, "weight"}}) {
          if (arr->ndim() != 2) {
            throw std::invalid_argument(std::string(name) + ": expected a 2-D array, got shape " + shape_str(*arr));
          }
        }
        const DType t = float_dtype_of(x, "x");
        expect_dtype(weight, t, "weight", "x");
        return t == DType::f32 ? linear_act_impl<float>(act, x, weight, bias, keep_pre)
                               : linear_act_impl<double>(act, x, weight, bias, keep_pre);
      },
      py::arg("x").noconvert(), py::arg("weight").noconvert(), py::arg("bias"), py::arg("activation"),
      py::arg("keep_pre"),
      "(act(x @ weight.T + bias), x @ weight.T + bias if keep_pre else None) for x (rows, in), weight (out, in)");
}
