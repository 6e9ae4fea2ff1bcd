// Binding for the backward of the linear pair, one call for the three gradients:
//   dx (rows, in)  = dy (rows, out) @ W (out, in)        GEMM
//   dW (out, in)   = dy^T (out, rows) @ x (rows, in)     GEMM with dy read transposed in place
//   db (out,)      = column sums of dy                    deterministic (ops/elementwise.h)
// With an activation (the backward of x = act(z) feeding this linear map, as in a feed-forward
// block): the first output is dz = dx act'(saved) instead, applied by the dx GEMM's epilogue to
// each finished tile while it is in cache (ops/activation.h, backward_tile) -- the same numbers
// as the separate activation backward, without writing dx and reading it back.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "bindings/common.h"
#include "bindings/ops_args.h"
#include "bindings/output_cache.h"
#include "bindings/registry.h"
#include "ops/activation.h"
#include "ops/elementwise.h"
#include "runtime/dispatch.h"
#include "runtime/threads.h"

namespace seqblocks {
namespace {

// The activation whose derivative multiplies dx: relu | gelu_erf | gelu_tanh, or none.
std::optional<ActivationGrad> activation_of(const std::optional<std::string>& name) {
  if (!name) return std::nullopt;
  if (*name == "relu") return ActivationGrad::relu;
  if (*name == "gelu_erf") return ActivationGrad::gelu_erf;
  if (*name == "gelu_tanh") return ActivationGrad::gelu_tanh;
  throw std::invalid_argument("activation: expected relu, gelu_erf, gelu_tanh or None, got '" + *name + "'");
}

template <class T>
py::tuple linear_backward_impl(const py::array& dy_arr, const py::array& x_arr, const py::array& w_arr,
                               bool has_bias, const std::optional<std::vector<py::ssize_t>>& dx_shape,
                               std::optional<ActivationGrad> act, const std::optional<py::array>& saved_arr) {
  const int64_t rows = dy_arr.shape(0), out_f = dy_arr.shape(1);
  const int64_t in_f = w_arr.shape(1);
  if (w_arr.shape(0) != out_f) {
    throw std::invalid_argument("weight: expected " + std::to_string(out_f) + " rows (dy's columns), got shape " +
                                shape_str(w_arr));
  }
  if (x_arr.shape(0) != rows || x_arr.shape(1) != in_f) {
    throw std::invalid_argument("x: expected shape (" + std::to_string(rows) + ", " + std::to_string(in_f) +
                                "), got " + shape_str(x_arr));
  }
  checked_mul(checked_mul(rows, in_f, "dx"), static_cast<int64_t>(sizeof(T)), "dx bytes");
  if (act.has_value() != saved_arr.has_value()) {
    throw std::invalid_argument("saved: expected an array exactly when activation is given");
  }
  std::optional<py::array_t<T, py::array::c_style>> saved;
  if (saved_arr) {
    if (saved_arr->ndim() != 2 || saved_arr->shape(0) != rows || saved_arr->shape(1) != in_f) {
      throw std::invalid_argument("saved: expected shape (" + std::to_string(rows) + ", " + std::to_string(in_f) +
                                  ") (dx's), got " + shape_str(*saved_arr));
    }
    saved = c_input<T>(*saved_arr);
  }
  auto dy = c_input<T>(dy_arr);
  auto x = c_input<T>(x_arr);
  auto w = c_input<T>(w_arr);
  // dx in the caller's (..., in) shape when given (the same C-order memory as (rows, in)), so
  // the result is not a reshaped view (autograd would copy a view before storing it as a grad).
  std::vector<py::ssize_t> dx_dims{static_cast<py::ssize_t>(rows), static_cast<py::ssize_t>(in_f)};
  if (dx_shape) {
    int64_t n = 1;
    for (py::ssize_t d : *dx_shape) n = d < 0 ? -1 : checked_mul(n, static_cast<int64_t>(d), "dx_shape");
    if (dx_shape->empty() || dx_shape->back() != in_f || n != rows * in_f) {
      throw std::invalid_argument("dx_shape: expected a shape (..., " + std::to_string(in_f) + ") of " +
                                  std::to_string(rows * in_f) + " elements");
    }
    dx_dims = *dx_shape;
  }
  auto dx = new_output<T>(dx_dims);
  auto dw = new_output<T>({static_cast<py::ssize_t>(out_f), static_cast<py::ssize_t>(in_f)});
  py::object db = py::none();
  T* pdb = nullptr;
  if (has_bias) {
    auto b = new_output<T>({static_cast<py::ssize_t>(out_f)});
    pdb = b.mutable_data();
    db = std::move(b);
  }
  const T* pdy = dy.data();
  const T* px = x.data();
  const T* pw = w.data();
  T* pdx = dx.mutable_data();
  T* pdw = dw.mutable_data();
  {
    py::gil_scoped_release release;
    GemmProblem<T> pdx_p, pdw_p;  // dx = dy W;  dW = dy^T x
    pdx_p.m = rows, pdx_p.n = in_f, pdx_p.k = out_f;
    pdx_p.a = pdy, pdx_p.lda = out_f;
    pdx_p.b = pw, pdx_p.ldb = in_f;
    pdx_p.c = pdx, pdx_p.ldc = in_f;
    pdw_p.m = out_f, pdw_p.n = in_f, pdw_p.k = rows;
    pdw_p.a = pdy, pdw_p.lda = out_f, pdw_p.trans_a = true;
    pdw_p.b = px, pdw_p.ldb = in_f;
    pdw_p.c = pdw, pdw_p.ldc = in_f;
    const bool dx_gemm = rows * in_f > 0 && out_f > 0, dw_gemm = out_f * in_f > 0 && rows > 0;
    // db = column sums of dy = row sums of dW's A (dy^T), summed while that GEMM packs dy^T.
    if (dw_gemm) pdw_p.a_row_sums = pdb;
    // float64 GELU (erf) needs gelu(x) beside x (no vector form): a pass after the GEMM instead.
    const bool act_after = act && *act == ActivationGrad::gelu_erf && std::is_same_v<T, double>;
    const ActivationKernels& ak = SEQBLOCKS_DISPATCH(activation_kernels);
    const ActivationTile<T> tile{act.value_or(ActivationGrad::relu), saved ? saved->data() : nullptr, pdx};
    GemmPost<T> act_post{nullptr, &tile};
    if constexpr (std::is_same_v<T, float>) act_post.fn = ak.backward_tile_f32; else act_post.fn = ak.backward_tile_f64;
    if (act && !act_after) pdx_p.post = &act_post;
    if (rows * in_f > 0 && out_f == 0) std::fill(pdx, pdx + rows * in_f, T(0));
    if (out_f * in_f > 0 && rows == 0) std::fill(pdw, pdw + out_f * in_f, T(0));
    // dx and dW have equal work: at two threads one each, the first done helping (gemm/gemm.h, gemm_pair)
    if constexpr (std::is_same_v<T, float>) {
      kernels().gemm_pair_f32(dx_gemm ? &pdx_p : nullptr, dw_gemm ? &pdw_p : nullptr, num_threads());
    } else {
      kernels().gemm_pair_f64(dx_gemm ? &pdx_p : nullptr, dw_gemm ? &pdw_p : nullptr, num_threads());
    }
    const int64_t n = rows * in_f;
    if (act && (act_after || !dx_gemm) && n > 0) {  // (dx = 0 without a GEMM: the epilogue never ran)
      std::vector<T> aux(act_after ? static_cast<size_t>(n) : 0);
      if constexpr (std::is_same_v<T, double>) {
        if (act_after) kernels().unary_f64(UnaryOp::gelu_erf, saved->data(), aux.data(), n, num_threads());
        ak.backward_f64(*act, pdx, saved->data(), aux.data(), pdx, n, num_threads());
      } else {
        ak.backward_f32(*act, pdx, saved->data(), nullptr, pdx, n, num_threads());
      }
    }
    if (pdb != nullptr && !dw_gemm) {  // (no rows: zeros; no input features: no dW product)
      const ElementwiseKernels& k = SEQBLOCKS_DISPATCH(elementwise_kernels);
      if constexpr (std::is_same_v<T, float>) {
        k.sum_axis_f32(pdy, pdb, 1, rows, out_f, num_threads());
      } else {
        k.sum_axis_f64(pdy, pdb, 1, rows, out_f, num_threads());
      }
    }
  }
  return py::make_tuple(std::move(dx), std::move(dw), std::move(db));
}

}  // namespace
}  // namespace seqblocks

SEQBLOCKS_BINDINGS(linear_pair) {
  using namespace seqblocks;
  namespace py = pybind11;
  m.def(
      "linear_backward",
      [](const py::array& dy, const py::array& x, const py::array& weight, bool has_bias,
         const std::optional<std::vector<py::ssize_t>>& dx_shape, const std::optional<std::string>& activation,
         const std::optional<py::array>& saved) {
        for (auto [arr, name] : {std::pair{&dy, "grad_output"}, std::pair{&x, "x"}, std::pair{&weight, "weight"}}) {
          if (arr->ndim() != 2) {
            throw std::invalid_argument(std::string(name) + ": expected a 2-D array, got shape " + shape_str(*arr));
          }
        }
        const DType t = float_dtype_of(dy, "grad_output");
        expect_dtype(x, t, "x", "grad_output");
        expect_dtype(weight, t, "weight", "grad_output");
        const std::optional<ActivationGrad> act = activation_of(activation);
        if (saved) expect_dtype(*saved, t, "saved", "grad_output");
        return t == DType::f32 ? linear_backward_impl<float>(dy, x, weight, has_bias, dx_shape, act, saved)
                               : linear_backward_impl<double>(dy, x, weight, has_bias, dx_shape, act, saved);
      },
      py::arg("grad_output").noconvert(), py::arg("x").noconvert(), py::arg("weight").noconvert(),
      py::arg("has_bias"), py::arg("dx_shape") = py::none(), py::arg("activation") = py::none(),
      py::arg("saved") = py::none(),
      "(dx, dweight, dbias or None) of y = x @ weight.T + bias for dy (rows, out), x (rows, in), weight (out, in);"
      " dx in dx_shape (..., in) when given; with activation (relu | gelu_erf | gelu_tanh) and saved (rows, in) "
      "(what that activation's forward saved: relu's output, gelu's input) dx act'(saved) instead of dx");
}
