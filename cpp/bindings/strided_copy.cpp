// _core.strided_copy(dst, src): dst[...] = src for float arrays of up to 4 dimensions whose last
// dimension is contiguous, any other strides (views of transposes and slices). The layout changes
// around attention -- (B, L, H D) <-> (B, H, L, D), the q/k/v slices of a packed projection --
// are row copies of D elements; NumPy's general strided copy runs them at ~3 GB/s, this at memory
// speed on every thread. Rows are split evenly over the threads.
#include <omp.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>

#include "bindings/common.h"
#include "bindings/registry.h"
#include "ops/parallel.h"
#include "runtime/threads.h"

namespace seqblocks {
namespace {

struct View4 {
  char* data;
  int64_t shape[4];
  int64_t stride[3];  // bytes, of the first three dimensions (the last is contiguous)
};

View4 view4(const py::array& a, const char* name) {
  if (a.ndim() < 1 || a.ndim() > 4) {
    throw std::invalid_argument(std::string(name) + ": expected 1 to 4 dimensions, got shape " + shape_str(a));
  }
  const py::ssize_t pad = 4 - a.ndim();
  View4 v{static_cast<char*>(const_cast<void*>(a.data())), {1, 1, 1, 1}, {0, 0, 0}};
  for (py::ssize_t d = 0; d < a.ndim(); ++d) v.shape[pad + d] = a.shape(d);
  for (py::ssize_t d = 0; d + 1 < a.ndim(); ++d) v.stride[pad + d] = a.strides(d);
  if (a.shape(a.ndim() - 1) > 1 && a.strides(a.ndim() - 1) != a.itemsize()) {
    throw std::invalid_argument(std::string(name) + ": expected a contiguous last dimension, got strides of " +
                                shape_str(a));
  }
  return v;
}

// [first, last) byte addresses a view touches (strides may be negative).
std::pair<const char*, const char*> byte_range(const View4& v, size_t row_bytes) {
  const char* lo = v.data;
  const char* hi = v.data + row_bytes;
  for (int d = 0; d < 3; ++d) {
    const int64_t span = (v.shape[d] - 1) * v.stride[d];
    (span < 0 ? lo : hi) += span;
  }
  return {lo, hi};
}

void strided_copy(py::array& dst, const py::array& src) {
  const DType t = float_dtype_of(dst, "dst");
  if (float_dtype_of(src, "src") != t) {
    throw py::type_error("src: expected the dtype of dst (" + std::string(py::str(dst.dtype())) + "), got " +
                         std::string(py::str(src.dtype())));
  }
  if (!dst.writeable()) throw std::invalid_argument("dst: expected a writable array");
  if (dst.ndim() != src.ndim() || !std::equal(dst.shape(), dst.shape() + dst.ndim(), src.shape())) {
    throw std::invalid_argument("src: expected the shape of dst " + shape_str(dst) + ", got " + shape_str(src));
  }
  const View4 d = view4(dst, "dst"), s = view4(src, "src");
  const int64_t rows = d.shape[0] * d.shape[1] * d.shape[2];
  const size_t row_bytes = static_cast<size_t>(d.shape[3]) * static_cast<size_t>(dst.itemsize());
  if (rows == 0 || row_bytes == 0) return;
  const auto [d_lo, d_hi] = byte_range(d, row_bytes);
  const auto [s_lo, s_hi] = byte_range(s, row_bytes);
  if (d_lo < s_hi && s_lo < d_hi) {
    throw std::invalid_argument("dst: expected memory apart from src's, got overlapping arrays");
  }
  py::gil_scoped_release release;
  const int nt = threads_for(rows * d.shape[3], num_threads());
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    int64_t lo, hi;
    thread_slice(rows, omp_get_num_threads(), omp_get_thread_num(), 1, &lo, &hi);
    for (int64_t r = lo; r < hi; ++r) {
      const int64_t i2 = r % d.shape[2], i1 = r / d.shape[2] % d.shape[1], i0 = r / (d.shape[2] * d.shape[1]);
      std::memcpy(d.data + i0 * d.stride[0] + i1 * d.stride[1] + i2 * d.stride[2],
                  s.data + i0 * s.stride[0] + i1 * s.stride[1] + i2 * s.stride[2], row_bytes);
    }
  }
}

}  // namespace
}  // namespace seqblocks

SEQBLOCKS_BINDINGS(strided_copy) {
  using namespace seqblocks;
  m.def("strided_copy", &strided_copy, py::arg("dst").noconvert(), py::arg("src").noconvert(),
        "dst[...] = src for float arrays of 1 to 4 dimensions with a contiguous last dimension");
}
