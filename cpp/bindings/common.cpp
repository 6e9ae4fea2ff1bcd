#include "bindings/common.h"

#include <algorithm>

namespace seqblocks {

std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) {
    if (i) s += ", ";
    s += std::to_string(a.shape(i));
  }
  if (a.ndim() == 1) s += ",";
  return s + ")";
}

DType float_dtype_of(const py::array& a, const char* arg) {
  if (a.dtype().is(py::dtype::of<float>())) return DType::f32;
  if (a.dtype().is(py::dtype::of<double>())) return DType::f64;
  throw py::type_error(std::string(arg) + ": expected dtype float32 or float64, got " +
                       std::string(py::str(a.dtype())));
}

int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) {
    throw std::invalid_argument(std::string(what) + ": size " + std::to_string(a) + " x " +
                                std::to_string(b) + " overflows int64");
  }
  return r;
}

bool describe_matrix(int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride,
                     MatrixLayout* out) {
  // Strides are in elements. Dimensions of extent 1 may carry any stride.
  const bool unit_cols = cols <= 1 || col_stride == 1;
  const bool unit_rows = rows <= 1 || row_stride == 1;
  if (unit_cols && (rows <= 1 || row_stride >= std::max<int64_t>(cols, 1))) {
    out->trans = false;
    out->ld = rows <= 1 ? std::max<int64_t>(cols, 1) : row_stride;
    return true;
  }
  if (unit_rows && (cols <= 1 || col_stride >= std::max<int64_t>(rows, 1))) {
    out->trans = true;
    out->ld = cols <= 1 ? std::max<int64_t>(rows, 1) : col_stride;
    return true;
  }
  return false;
}

}  // namespace seqblocks
