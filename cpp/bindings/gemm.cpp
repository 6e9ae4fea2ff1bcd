// Bindings for the GEMM family: matmul (2-D and batched 3-D), linear, and a BLAS-style gemm.
// Inputs whose strides describe a row- or column-major matrix are used in place (a transposed
// view costs nothing); anything else is copied to C order first.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "bindings/common.h"
#include "bindings/output_cache.h"
#include "bindings/registry.h"
#include "runtime/dispatch.h"
#include "runtime/threads.h"

namespace seqblocks {
namespace {

// The last two dimensions of a 2-D or 3-D array as a GEMM operand.
template <class T>
struct Operand {
  py::array keep_alive;
  const T* data = nullptr;
  int64_t batch = 1;         // 1 for 2-D
  int64_t batch_stride = 0;  // elements; 0 when broadcast over the batch
  int64_t rows = 0, cols = 0;
  MatrixLayout layout;
};

template <class T>
bool try_describe(const py::array& arr, Operand<T>* op) {
  const int nd = static_cast<int>(arr.ndim());
  const int64_t item = static_cast<int64_t>(sizeof(T));
  if (reinterpret_cast<uintptr_t>(arr.data()) % alignof(T) != 0) return false;
  for (int d = 0; d < nd; ++d) {
    if (arr.strides(d) < 0 || arr.strides(d) % item != 0) return false;
  }
  op->rows = arr.shape(nd - 2);
  op->cols = arr.shape(nd - 1);
  op->batch = nd == 3 ? arr.shape(0) : 1;
  op->batch_stride = (nd == 3 && op->batch > 1) ? arr.strides(0) / item : 0;
  op->data = static_cast<const T*>(arr.data());
  if (arr.size() == 0) {  // never read; NumPy gives empty arrays zero strides
    op->batch_stride = 0;
    op->layout = MatrixLayout{std::max<int64_t>(op->cols, 1), false};
    return true;
  }
  return describe_matrix(op->rows, op->cols, arr.strides(nd - 2) / item, arr.strides(nd - 1) / item,
                         &op->layout);
}

void check_matrix_ndim(const py::array& arr, const char* name) {
  if (arr.ndim() != 2 && arr.ndim() != 3) {
    throw std::invalid_argument(std::string(name) + ": expected a 2-D or 3-D array, got shape " +
                                shape_str(arr));
  }
}

template <class T>
Operand<T> make_operand(const py::array& arr, const char* name) {
  check_matrix_ndim(arr, name);
  Operand<T> op;
  op.keep_alive = arr;
  if (!try_describe(arr, &op)) {
    op.keep_alive = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(arr);
    if (!try_describe(op.keep_alive, &op)) throw std::logic_error("C-ordered copy not describable");
  }
  return op;
}

template <class T>
py::array run_gemm(const py::array& a_arr, const py::array& b_arr, bool trans_a, bool trans_b,
                   T alpha, T beta, const py::object& c_obj, const py::object& bias_obj) {
  // The output size is checked from the shapes alone, before any operand is copied.
  {
    const int64_t a_batch = a_arr.ndim() == 3 ? a_arr.shape(0) : 1;
    const int64_t b_batch = b_arr.ndim() == 3 ? b_arr.shape(0) : 1;
    const int64_t m = a_arr.shape(a_arr.ndim() - (trans_a ? 1 : 2));
    const int64_t n = b_arr.shape(b_arr.ndim() - (trans_b ? 2 : 1));
    const int64_t batch = a_batch == 1 ? b_batch : a_batch;
    const int64_t elements = checked_mul(checked_mul(batch, m, "matmul output"), n,
                                         "matmul output");
    checked_mul(elements, static_cast<int64_t>(sizeof(T)), "matmul output bytes");
  }
  Operand<T> a = make_operand<T>(a_arr, "a");
  Operand<T> b = make_operand<T>(b_arr, "b");

  GemmProblem<T> p;
  p.trans_a = a.layout.trans != trans_a;
  p.trans_b = b.layout.trans != trans_b;
  p.m = trans_a ? a.cols : a.rows;
  p.k = trans_a ? a.rows : a.cols;
  const int64_t kb = trans_b ? b.cols : b.rows;
  p.n = trans_b ? b.rows : b.cols;
  if (p.k != kb) {
    throw std::invalid_argument("matmul: inner dimensions differ: a is " + shape_str(a_arr) +
                                (trans_a ? " (transposed)" : "") + ", b is " + shape_str(b_arr) +
                                (trans_b ? " (transposed)" : "") + "; expected a's " +
                                std::to_string(p.k) + " to equal b's " + std::to_string(kb));
  }
  if (a.batch != b.batch && a.batch != 1 && b.batch != 1) {
    throw std::invalid_argument("matmul: batch dimensions differ and neither is 1: a is " +
                                shape_str(a_arr) + ", b is " + shape_str(b_arr));
  }
  const bool batched = a_arr.ndim() == 3 || b_arr.ndim() == 3;
  p.batch = a.batch == 1 ? b.batch : a.batch;  // a 2-D operand or a batch of 1 broadcasts
  p.a = a.data;
  p.lda = a.layout.ld;
  p.batch_stride_a = a.batch_stride;
  p.b = b.data;
  p.ldb = b.layout.ld;
  p.batch_stride_b = b.batch_stride;
  p.alpha = alpha;
  p.beta = beta;

  const int64_t rows_total = p.batch * p.m;  // overflow checked above
  std::vector<py::ssize_t> shape;
  if (batched) shape.push_back(p.batch);
  shape.push_back(p.m);
  shape.push_back(p.n);
  auto c = new_output<T>(shape);
  p.c = c.mutable_data();
  p.ldc = std::max<int64_t>(p.n, 1);
  p.batch_stride_c = p.m * p.n;

  if (!c_obj.is_none()) {
    auto c_in = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(c_obj);
    if (!c_in || c_in.ndim() != c.ndim() || !std::equal(shape.begin(), shape.end(), c_in.shape())) {
      throw std::invalid_argument("gemm: c must have shape of the product, got " +
                                  (c_in ? shape_str(c_in) : std::string("a non-array")));
    }
    std::copy(c_in.data(), c_in.data() + c.size(), p.c);
  } else {
    p.beta = T(0);
  }
  py::array_t<T, py::array::c_style | py::array::forcecast> bias;
  if (!bias_obj.is_none()) {
    bias = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(bias_obj);
    if (!bias || bias.ndim() != 1 || bias.shape(0) != p.n) {
      throw std::invalid_argument("linear: bias must have shape (" + std::to_string(p.n) +
                                  ",), got " + (bias ? shape_str(bias) : std::string("a non-array")));
    }
    p.bias = bias.data();
  }

  // A 3-D A against a shared 2-D B whose rows are evenly spaced is one tall GEMM.
  if (p.batch > 1 && p.batch_stride_b == 0 && !p.trans_a && p.batch_stride_a == p.m * p.lda) {
    p.m = rows_total;
    p.batch = 1;
  }

  if (rows_total == 0 || p.n == 0) return std::move(c);
  {
    py::gil_scoped_release release;
    p.nthreads = num_threads();
    const KernelTable& kt = kernels();
    if constexpr (std::is_same_v<T, float>) {
      kt.gemm_f32(p);
    } else {
      kt.gemm_f64(p);
    }
  }
  return std::move(c);
}

py::array dispatch_gemm(const py::array& a, const py::array& b, bool trans_a, bool trans_b,
                        double alpha, double beta, const py::object& c, const py::object& bias) {
  check_matrix_ndim(a, "a");
  check_matrix_ndim(b, "b");
  const DType ta = float_dtype_of(a, "a");
  const DType tb = float_dtype_of(b, "b");
  if (ta != tb) {
    throw py::type_error("matmul: a and b must have the same dtype, got " +
                         std::string(py::str(a.dtype())) + " and " + std::string(py::str(b.dtype())));
  }
  if (ta == DType::f32) {
    return run_gemm<float>(a, b, trans_a, trans_b, static_cast<float>(alpha),
                           static_cast<float>(beta), c, bias);
  }
  return run_gemm<double>(a, b, trans_a, trans_b, alpha, beta, c, bias);
}

}  // namespace

}  // namespace seqblocks

SEQBLOCKS_BINDINGS(gemm) {
  using namespace seqblocks;
  namespace py = pybind11;
  m.def(
      "matmul",
      [](const py::array& a, const py::array& b) {
        return dispatch_gemm(a, b, false, false, 1.0, 0.0, py::none(), py::none());
      },
      py::arg("a").noconvert(), py::arg("b").noconvert(),
      "a @ b for 2-D or 3-D arrays (a 2-D operand or a batch of 1 is broadcast over the batch)");
  m.def(
      "linear",
      [](const py::array& x, const py::array& weight, const py::object& bias) {
        if (x.ndim() != 2) throw std::invalid_argument("linear: x must be 2-D, got " + shape_str(x));
        if (weight.ndim() != 2) {
          throw std::invalid_argument("linear: weight must be 2-D, got " + shape_str(weight));
        }
        return dispatch_gemm(x, weight, false, true, 1.0, 0.0, py::none(), bias);
      },
      py::arg("x").noconvert(), py::arg("weight").noconvert(), py::arg("bias") = py::none(),
      "x @ weight.T + bias for x (rows, in), weight (out, in), bias (out,)");
  m.def(
      "gemm",
      [](const py::array& a, const py::array& b, const py::object& c, double alpha, double beta,
         bool trans_a, bool trans_b) {
        if (a.ndim() != 2 || b.ndim() != 2) {
          throw std::invalid_argument("gemm: a and b must be 2-D, got " + shape_str(a) + " and " +
                                      shape_str(b));
        }
        return dispatch_gemm(a, b, trans_a, trans_b, alpha, beta, c, py::none());
      },
      py::arg("a").noconvert(), py::arg("b").noconvert(), py::arg("c") = py::none(),
      py::arg("alpha") = 1.0, py::arg("beta") = 0.0, py::arg("trans_a") = false,
      py::arg("trans_b") = false, "alpha * op(a) @ op(b) + beta * c");
}
