// Bindings for cross-entropy over the rows of a 2-D (rows, C) array of logits (the Python layer
// moves C last, flattens the rest and applies the reduction to the per-row losses returned here):
// validate (targets in range before any work), allocate outputs, release the GIL, call.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "bindings/common.h"
#include "bindings/output_cache.h"
#include "bindings/registry.h"
#include "ops/cross_entropy.h"
#include "runtime/threads.h"

namespace seqblocks {
namespace {

template <class T>
using CArray = py::array_t<T, py::array::c_style | py::array::forcecast>;

struct Operands {
  py::array x, target, q, w;  // target or q is an empty object when absent
};

void check_rows_matrix(const py::array& a, const char* name, int64_t rows, int64_t C, DType t) {
  if (float_dtype_of(a, name) != t) {
    throw py::type_error(std::string(name) + ": expected the dtype of input, got " + std::string(py::str(a.dtype())));
  }
  if (a.ndim() != 2 || a.shape(0) != rows || a.shape(1) != C) {
    throw std::invalid_argument(std::string(name) + ": expected shape (" + std::to_string(rows) + ", " +
                                std::to_string(C) + "), got " + shape_str(a));
  }
}

void check_vector(const py::array& a, const char* name, int64_t n, DType t) {
  if (float_dtype_of(a, name) != t) {
    throw py::type_error(std::string(name) + ": expected the dtype of input, got " + std::string(py::str(a.dtype())));
  }
  if (a.ndim() != 1 || a.shape(0) != n) {
    throw std::invalid_argument(std::string(name) + ": expected shape (" + std::to_string(n) + ",), got " +
                                shape_str(a));
  }
}

// Checks the operands shared by forward and backward; returns the dtype of x.
DType check_operands(const py::array& x, const py::object& target, const py::object& q, const py::object& weight,
                     int64_t ignore_index) {
  if (x.ndim() != 2) throw std::invalid_argument("input: expected a 2-D array (rows, C), got shape " + shape_str(x));
  const DType t = float_dtype_of(x, "input");
  const int64_t rows = x.shape(0), C = x.shape(1);
  if (C < 1) throw std::invalid_argument("input: expected C >= 1 classes, got shape " + shape_str(x));
  if (target.is_none() == q.is_none()) {
    throw std::invalid_argument("target: expected exactly one of class indices or probabilities");
  }
  if (!weight.is_none()) check_vector(py::cast<py::array>(weight), "weight", C, t);
  if (!q.is_none()) check_rows_matrix(py::cast<py::array>(q), "target", rows, C, t);
  if (!target.is_none()) {
    py::array ta = py::cast<py::array>(target);
    if (!ta.dtype().is(py::dtype::of<int64_t>())) {
      throw py::type_error("target: expected class indices of dtype int64, got " + std::string(py::str(ta.dtype())));
    }
    if (ta.ndim() != 1 || ta.shape(0) != rows) {
      throw std::invalid_argument("target: expected shape (" + std::to_string(rows) + ",), got " + shape_str(ta));
    }
    auto tc = CArray<int64_t>::ensure(ta);
    const int64_t* tp = tc.data();
    for (int64_t i = 0; i < rows; ++i) {
      if ((tp[i] < 0 || tp[i] >= C) && tp[i] != ignore_index) {
        throw py::index_error("target: expected class indices in [0, " + std::to_string(C) + ") or ignore_index=" +
                              std::to_string(ignore_index) + ", got " + std::to_string(tp[i]) + " at (" +
                              std::to_string(i) + ",)");
      }
    }
  }
  return t;
}

template <class T>
py::tuple forward(const py::array& x_arr, const py::object& target, const py::object& q_obj,
                  const py::object& w_obj, int64_t ignore_index, double smoothing, bool needs_grad) {
  CArray<T> x = CArray<T>::ensure(x_arr);
  const int64_t rows = x.shape(0), C = x.shape(1);
  CArray<int64_t> tgt;
  CArray<T> q, w;
  CrossEntropyForwardArgs<T> a;
  if (!target.is_none()) {
    tgt = CArray<int64_t>::ensure(target);
    a.target = tgt.data();
  } else {
    q = CArray<T>::ensure(q_obj);
    a.q = q.data();
  }
  if (!w_obj.is_none()) {
    w = CArray<T>::ensure(w_obj);
    a.w = w.data();
  }
  CArray<double> loss({rows});
  py::object mx = py::none(), ls = py::none(), qw = py::none();
  a.x = x.data();
  a.ignore_index = ignore_index;
  a.smoothing = smoothing;
  a.rows = rows;
  a.C = C;
  a.row_loss = loss.mutable_data();
  if (needs_grad) {
    auto m = new_output<T, py::array::c_style | py::array::forcecast>({rows});
    auto l = new_output<T, py::array::c_style | py::array::forcecast>({rows});
    a.row_max = m.mutable_data();
    a.row_logsum = l.mutable_data();
    mx = m;
    ls = l;
    if (a.q) {
      auto aq = new_output<T, py::array::c_style | py::array::forcecast>({rows});
      a.row_qw = aq.mutable_data();
      qw = aq;
    }
  }
  {
    py::gil_scoped_release release;
    a.nthreads = num_threads();
    const CrossEntropyKernels& kt = SEQBLOCKS_DISPATCH(cross_entropy_kernels);
    if constexpr (std::is_same_v<T, float>) {
      kt.forward_f32(a);
    } else {
      kt.forward_f64(a);
    }
  }
  return py::make_tuple(loss, mx, ls, qw);
}

template <class T>
py::array backward(const py::array& x_arr, const py::object& target, const py::object& q_obj,
                   const py::object& w_obj, int64_t ignore_index, double smoothing, const py::array& mx_arr,
                   const py::array& ls_arr, const py::object& qw_obj, const py::object& grad_rows_obj,
                   double grad_scale, DType t) {
  CArray<T> x = CArray<T>::ensure(x_arr);
  const int64_t rows = x.shape(0), C = x.shape(1);
  check_vector(mx_arr, "row_max", rows, t);
  check_vector(ls_arr, "row_logsum", rows, t);
  CrossEntropyBackwardArgs<T> a;
  CArray<int64_t> tgt;
  CArray<T> q, w, qw, gr;
  CArray<T> mx = CArray<T>::ensure(mx_arr), ls = CArray<T>::ensure(ls_arr);
  if (!target.is_none()) {
    tgt = CArray<int64_t>::ensure(target);
    a.target = tgt.data();
  } else {
    if (qw_obj.is_none()) throw std::invalid_argument("row_qw: expected an array with probability targets");
    check_vector(py::cast<py::array>(qw_obj), "row_qw", rows, t);
    q = CArray<T>::ensure(q_obj);
    qw = CArray<T>::ensure(qw_obj);
    a.q = q.data();
    a.row_qw = qw.data();
  }
  if (!w_obj.is_none()) {
    w = CArray<T>::ensure(w_obj);
    a.w = w.data();
  }
  if (!grad_rows_obj.is_none()) {
    check_vector(py::cast<py::array>(grad_rows_obj), "grad_output", rows, t);
    gr = CArray<T>::ensure(grad_rows_obj);
    a.grad_rows = gr.data();
  }
  auto dx = new_output<T, py::array::c_style | py::array::forcecast>({rows, C});
  a.x = x.data();
  a.ignore_index = ignore_index;
  a.smoothing = smoothing;
  a.rows = rows;
  a.C = C;
  a.row_max = mx.data();
  a.row_logsum = ls.data();
  a.grad_scale = grad_scale;
  a.dx = dx.mutable_data();
  {
    py::gil_scoped_release release;
    a.nthreads = num_threads();
    const CrossEntropyKernels& kt = SEQBLOCKS_DISPATCH(cross_entropy_kernels);
    if constexpr (std::is_same_v<T, float>) {
      kt.backward_f32(a);
    } else {
      kt.backward_f64(a);
    }
  }
  return std::move(dx);
}

void check_smoothing(double smoothing) {
  if (!(smoothing >= 0.0 && smoothing <= 1.0)) {
    throw std::invalid_argument("label_smoothing: expected a float in [0, 1], got " + std::to_string(smoothing));
  }
}

}  // namespace
}  // namespace seqblocks

SEQBLOCKS_BINDINGS(cross_entropy) {
  using namespace seqblocks;
  namespace py = pybind11;
  m.def(
      "cross_entropy_forward",
      [](const py::array& x, const py::object& target, const py::object& q, const py::object& weight,
         int64_t ignore_index, double smoothing, bool needs_grad) {
        check_smoothing(smoothing);
        const DType t = check_operands(x, target, q, weight, ignore_index);
        return t == DType::f32 ? forward<float>(x, target, q, weight, ignore_index, smoothing, needs_grad)
                               : forward<double>(x, target, q, weight, ignore_index, smoothing, needs_grad);
      },
      py::arg("input").noconvert(), py::arg("target"), py::arg("probs"), py::arg("weight"), py::arg("ignore_index"),
      py::arg("label_smoothing"), py::arg("needs_grad"),
      "(row_loss float64 (rows,), row_max, row_logsum, row_qw) for input (rows, C) and class indices "
      "target (rows,) int64 or probabilities (rows, C); the workspace arrays are None unless needs_grad");
  m.def(
      "cross_entropy_backward",
      [](const py::array& x, const py::object& target, const py::object& q, const py::object& weight,
         int64_t ignore_index, double smoothing, const py::array& row_max, const py::array& row_logsum,
         const py::object& row_qw, const py::object& grad_rows, double grad_scale) {
        check_smoothing(smoothing);
        const DType t = check_operands(x, target, q, weight, ignore_index);
        return t == DType::f32 ? backward<float>(x, target, q, weight, ignore_index, smoothing, row_max, row_logsum,
                                                 row_qw, grad_rows, grad_scale, t)
                               : backward<double>(x, target, q, weight, ignore_index, smoothing, row_max,
                                                  row_logsum, row_qw, grad_rows, grad_scale, t);
      },
      py::arg("input").noconvert(), py::arg("target"), py::arg("probs"), py::arg("weight"), py::arg("ignore_index"),
      py::arg("label_smoothing"), py::arg("row_max").noconvert(), py::arg("row_logsum").noconvert(),
      py::arg("row_qw"), py::arg("grad_rows"), py::arg("grad_scale"),
      "dinput (rows, C); dL/dloss of row i is grad_scale * grad_rows[i] (grad_rows None: 1)");
}
