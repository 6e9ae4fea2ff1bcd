// Bindings for the embedding pair. Indices arrive as a flat int64 array (the Python layer
// converts any integer dtype); every index is checked against [0, num_embeddings) before any
// output is written.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "bindings/common.h"
#include "bindings/ops_args.h"
#include "bindings/output_cache.h"
#include "bindings/registry.h"
#include "ops/embedding.h"
#include "runtime/threads.h"

namespace seqblocks {
namespace {

using IndexArray = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

IndexArray checked_indices(const py::array& arr, int64_t num) {
  if (!arr.dtype().is(py::dtype::of<int64_t>())) {
    throw py::type_error("indices: expected dtype int64, got " + std::string(py::str(arr.dtype())));
  }
  if (arr.ndim() != 1) throw std::invalid_argument("indices: expected a 1-D array, got shape " + shape_str(arr));
  IndexArray idx = IndexArray::ensure(arr);
  const int64_t* p = idx.data();
  const int64_t n = static_cast<int64_t>(idx.size());
  int64_t bad = -1;
  {
    py::gil_scoped_release release;
    for (int64_t r = 0; r < n; ++r) {
      if (p[r] < 0 || p[r] >= num) {
        bad = r;
        break;
      }
    }
  }
  if (bad >= 0) {
    throw py::index_error("indices: expected values in [0, " + std::to_string(num) + ") (weight has " +
                          std::to_string(num) + " rows), got " + std::to_string(p[bad]));
  }
  return idx;
}

template <class T>
py::array forward_impl(const py::array& idx_arr, const py::array& w_arr) {
  const int64_t num = w_arr.shape(0), dim = w_arr.shape(1);
  IndexArray idx = checked_indices(idx_arr, num);
  const int64_t n = static_cast<int64_t>(idx.size());
  checked_mul(checked_mul(n, dim, "embedding output"), static_cast<int64_t>(sizeof(T)), "embedding output bytes");
  auto w = c_input<T>(w_arr);
  auto out = new_output<T>({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(dim)});
  if (n * dim == 0) return std::move(out);
  const int64_t* pi = idx.data();
  const T* pw = w.data();
  T* po = out.mutable_data();
  {
    py::gil_scoped_release release;
    const EmbeddingKernels& k = SEQBLOCKS_DISPATCH(embedding_kernels);
    if constexpr (std::is_same_v<T, float>) {
      k.forward_f32(pi, n, pw, dim, po, num_threads());
    } else {
      k.forward_f64(pi, n, pw, dim, po, num_threads());
    }
  }
  return std::move(out);
}

template <class T>
py::array backward_impl(const py::array& dy_arr, const py::array& idx_arr, int64_t num, int64_t pad) {
  if (num < 0) throw std::invalid_argument("num_embeddings: expected >= 0, got " + std::to_string(num));
  if (pad >= num) {
    throw std::invalid_argument("padding_idx: expected -1 (none) or a row in [0, " + std::to_string(num) +
                                "), got " + std::to_string(pad));
  }
  IndexArray idx = checked_indices(idx_arr, num);
  const int64_t n = static_cast<int64_t>(idx.size());
  if (dy_arr.ndim() != 2 || dy_arr.shape(0) != n) {
    throw std::invalid_argument("grad_output: expected shape (" + std::to_string(n) + ", dim), got " +
                                shape_str(dy_arr));
  }
  const int64_t dim = dy_arr.shape(1);
  checked_mul(checked_mul(num, dim, "dweight"), static_cast<int64_t>(sizeof(T)), "dweight bytes");
  auto dy = c_input<T>(dy_arr);
  auto dw = new_output<T>({static_cast<py::ssize_t>(num), static_cast<py::ssize_t>(dim)});
  if (num * dim == 0) return std::move(dw);
  std::vector<int64_t> order(static_cast<size_t>(n)), offsets(static_cast<size_t>(num + 1));
  const int64_t* pi = idx.data();
  const T* pdy = dy.data();
  T* pdw = dw.mutable_data();
  {
    py::gil_scoped_release release;
    const EmbeddingKernels& k = SEQBLOCKS_DISPATCH(embedding_kernels);
    if constexpr (std::is_same_v<T, float>) {
      k.backward_f32(pi, n, pdy, num, dim, pad, order.data(), offsets.data(), pdw, num_threads());
    } else {
      k.backward_f64(pi, n, pdy, num, dim, pad, order.data(), offsets.data(), pdw, num_threads());
    }
  }
  return std::move(dw);
}

}  // namespace
}  // namespace seqblocks

SEQBLOCKS_BINDINGS(embedding) {
  using namespace seqblocks;
  namespace py = pybind11;
  m.def(
      "embedding_forward",
      [](const py::array& indices, const py::array& weight) {
        if (weight.ndim() != 2) throw std::invalid_argument("weight: expected a 2-D array, got shape " + shape_str(weight));
        return float_dtype_of(weight, "weight") == DType::f32 ? forward_impl<float>(indices, weight)
                                                               : forward_impl<double>(indices, weight);
      },
      py::arg("indices").noconvert(), py::arg("weight").noconvert(),
      "out (n, dim) = weight[indices] for int64 indices (n,) in [0, num_embeddings)");
  m.def(
      "embedding_backward",
      [](const py::array& dy, const py::array& indices, int64_t num_embeddings, int64_t padding_idx) {
        return float_dtype_of(dy, "grad_output") == DType::f32
                   ? backward_impl<float>(dy, indices, num_embeddings, padding_idx)
                   : backward_impl<double>(dy, indices, num_embeddings, padding_idx);
      },
      py::arg("grad_output").noconvert(), py::arg("indices").noconvert(), py::arg("num_embeddings"),
      py::arg("padding_idx"),
      "dweight (num_embeddings, dim): deterministic scatter-add of dy rows by index; padding row zero (-1: none)");
}
