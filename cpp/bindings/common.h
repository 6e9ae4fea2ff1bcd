// Shared argument handling for the bindings: dtype checks, layout description, overflow-checked
// sizes. Every failure is a C++ exception that pybind11 maps to a Python exception:
// std::invalid_argument -> ValueError, pybind11::type_error -> TypeError,
// std::bad_alloc -> MemoryError.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace seqblocks {
namespace py = pybind11;

enum class DType { f32, f64 };

std::string shape_str(const py::array& a);

// float32 or float64, else TypeError naming the argument.
DType float_dtype_of(const py::array& a, const char* arg);

// a * b, or std::invalid_argument naming `what` if it overflows int64.
int64_t checked_mul(int64_t a, int64_t b, const char* what);

// A 2-D matrix (rows x cols) as the GEMM sees it: a pointer, a leading dimension and whether it
// is stored transposed (column-major). Built from the last two dimensions of an array whose
// strides allow it without a copy; returns false when a copy is needed.
struct MatrixLayout {
  int64_t ld = 0;
  bool trans = false;
};
bool describe_matrix(int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride,
                     MatrixLayout* out);

}  // namespace seqblocks
