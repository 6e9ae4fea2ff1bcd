// The output cache of output_cache.h, and seqblocks.empty_cache() (which also frees the calling
// thread's scratch and packing buffers, gemm/workspace.h).
#include "bindings/output_cache.h"

#include <pybind11/stl.h>

#include <cstdlib>
#include <iterator>
#include <map>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "bindings/registry.h"
#include "gemm/workspace.h"

namespace seqblocks {
namespace {

// Each block starts with a header (its capacity) in the first 64 bytes; the caller gets the
// rest. Capacities are rounded up to 64 KiB so that similar sizes share blocks.
constexpr size_t kHeader = 64;
constexpr size_t kGranule = size_t(64) << 10;

struct Cache {
  std::mutex mutex;
  std::multimap<size_t, void*> free_blocks;  // capacity -> block start (header)
  size_t held = 0;
};

Cache& cache() {
  static Cache* c = new Cache();  // never destroyed: arrays may outlive static destruction
  return *c;
}

size_t& capacity_of(void* start) { return *static_cast<size_t*>(start); }

}  // namespace

void* output_cache_take(size_t bytes) {
  const size_t capacity = (bytes + kGranule - 1) / kGranule * kGranule;
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    // The smallest held block that fits, if it wastes at most a quarter of itself; of equal
    // ones the most recently freed (multimap appends equal keys), whose lines are likeliest
    // still in cache.
    auto it = c.free_blocks.lower_bound(capacity);
    if (it != c.free_blocks.end() && it->first <= capacity + capacity / 3) {
      it = std::prev(c.free_blocks.upper_bound(it->first));
      void* start = it->second;
      c.held -= it->first;
      c.free_blocks.erase(it);
      return static_cast<char*>(start) + kHeader;
    }
  }
  void* start = std::aligned_alloc(64, kHeader + capacity);
  if (start == nullptr) throw std::bad_alloc();
  capacity_of(start) = capacity;
  return static_cast<char*>(start) + kHeader;
}

void output_cache_give(void* block) {
  void* start = static_cast<char*>(block) - kHeader;
  const size_t capacity = capacity_of(start);
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    if (c.held + capacity <= kCacheLimitBytes) {
      c.free_blocks.emplace(capacity, start);
      c.held += capacity;
      return;
    }
  }
  std::free(start);
}

size_t output_cache_clear() {
  Cache& c = cache();
  std::multimap<size_t, void*> blocks;
  size_t released;
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    blocks.swap(c.free_blocks);
    released = c.held;
    c.held = 0;
  }
  for (auto& [capacity, start] : blocks) std::free(start);
  return released;
}

size_t output_cache_held() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  return c.held;
}

}  // namespace seqblocks

SEQBLOCKS_BINDINGS(output_cache) {
  using namespace seqblocks;
  m.def(
      "empty",
      [](const std::vector<py::ssize_t>& shape, const py::dtype& dtype) -> py::array {
        for (py::ssize_t d : shape) {
          if (d < 0) throw std::invalid_argument("shape: expected sizes >= 0, got " + std::to_string(d));
        }
        if (dtype.is(py::dtype::of<float>())) return new_output<float>(shape);
        if (dtype.is(py::dtype::of<double>())) return new_output<double>(shape);
        throw py::type_error("dtype: expected float32 or float64, got " + std::string(py::str(dtype)));
      },
      py::arg("shape"), py::arg("dtype"),
      "an uninitialised C-contiguous array, from the output cache when large (for Python-side copies)");
  m.def("output_cache_clear", &output_cache_clear, "free every held output block; returns the bytes released");
  m.def("output_cache_held", &output_cache_held, "bytes of freed output blocks held for reuse");
  m.def("thread_buffers_release", &release_thread_buffers,
        "free the calling thread's scratch and packing buffers (they grow again on their next use); "
        "returns the bytes released");
  m.attr("output_cache_min_bytes") = kMinCachedBytes;
  m.attr("output_cache_limit_bytes") = kCacheLimitBytes;
}
