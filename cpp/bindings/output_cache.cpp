// The output cache of output_cache.h, and seqblocks.empty_cache().
#include "bindings/output_cache.h"

#include <cstdlib>
#include <map>
#include <mutex>
#include <new>

#include "bindings/registry.h"

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
    // The smallest held block that fits, if it wastes at most a quarter of itself.
    auto it = c.free_blocks.lower_bound(capacity);
    if (it != c.free_blocks.end() && it->first <= capacity + capacity / 3) {
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
  m.def("output_cache_clear", &output_cache_clear, "free every held output block; returns the bytes released");
  m.def("output_cache_held", &output_cache_held, "bytes of freed output blocks held for reuse");
  m.attr("output_cache_min_bytes") = kMinCachedBytes;
  m.attr("output_cache_limit_bytes") = kCacheLimitBytes;
}
