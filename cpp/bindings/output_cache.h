// Output arrays of the bindings. A large output is a fresh allocation of megabytes on every call
// (a layer's activations, its gradients, an RNN's workspace), and fresh memory from the OS is
// page-faulted in and zeroed by the kernel before our kernel writes it: measured, about 9% of a
// MultiheadAttention forward + backward at B=8 L=128 E=512 on 2 threads. So blocks of outputs of
// at least kMinCachedBytes are kept when NumPy frees the array (its base is a capsule that hands
// the block back) and reused by later outputs of a similar size, up to kCacheLimitBytes held in
// all; smaller outputs are plain NumPy arrays. The arrays are ordinary C-contiguous, writable
// NumPy arrays that do not own their data (so ndarray.resize() refuses them).
// seqblocks.empty_cache() frees every held block. The cache is guarded by a mutex; blocks are
// taken and returned with the GIL held (binding code and array deallocation).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "bindings/common.h"

namespace seqblocks {

constexpr size_t kMinCachedBytes = size_t(256) << 10;  // below: plain NumPy allocation
constexpr size_t kCacheLimitBytes = size_t(1) << 30;   // held (free) blocks, in all

// A block of at least `bytes` (64-byte aligned), from the cache or new; std::bad_alloc if none.
void* output_cache_take(size_t bytes);
// Back to the cache (or freed past the limit).
void output_cache_give(void* block);
// Frees every held block; returns the bytes released.
size_t output_cache_clear();
// Bytes currently held (free) in the cache.
size_t output_cache_held();

// A new C-contiguous array of `shape` for a kernel to write (contents unspecified).
template <class T, int Flags = py::array::forcecast>
py::array_t<T, Flags> new_output(const std::vector<py::ssize_t>& shape) {
  int64_t n = 1;
  for (py::ssize_t d : shape) n = checked_mul(n, static_cast<int64_t>(d), "output size");
  const int64_t bytes = checked_mul(n, static_cast<int64_t>(sizeof(T)), "output bytes");
  if (static_cast<size_t>(bytes) < kMinCachedBytes) return py::array_t<T, Flags>(shape);
  void* block = output_cache_take(static_cast<size_t>(bytes));
  py::capsule owner(block, [](void* p) { output_cache_give(p); });
  std::vector<py::ssize_t> strides(shape.size());
  py::ssize_t stride = sizeof(T);
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = stride;
    stride *= shape[i];
  }
  return py::array_t<T, Flags>(shape, strides, static_cast<T*>(block), owner);
}

}  // namespace seqblocks
