// Packing buffers for the GEMM driver: one 64-byte aligned block per calling thread, grown on
// demand and reused across calls, so a GEMM allocates (and page-faults) only the first time a
// larger size is needed. It is obtained before the parallel region, so std::bad_alloc is thrown
// on the calling thread, never inside the region; each OpenMP thread then uses its own slice.
// A thread keeps at most one block per (ISA, dtype); it is freed when the thread exits.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

namespace seqblocks {

template <class T>
class GemmWorkspace {
 public:
  static constexpr size_t kAlign = 64;

  GemmWorkspace() = default;
  GemmWorkspace(const GemmWorkspace&) = delete;
  GemmWorkspace& operator=(const GemmWorkspace&) = delete;
  ~GemmWorkspace() { std::free(data_); }

  // Elements rounded up to whole cache lines, so consecutive slices stay aligned.
  static size_t round_up(size_t elems) {
    constexpr size_t per_line = kAlign / sizeof(T);
    return (elems + per_line - 1) / per_line * per_line;
  }

  // A buffer of at least `elems` elements (contents unspecified). Throws std::bad_alloc.
  T* get(size_t elems) {
    if (elems > capacity_) {
      std::free(data_);
      data_ = nullptr;
      capacity_ = 0;
      const size_t n = round_up(elems);
      if (n > SIZE_MAX / sizeof(T)) throw std::bad_alloc();
      void* p = std::aligned_alloc(kAlign, n * sizeof(T));
      if (p == nullptr) throw std::bad_alloc();
      data_ = static_cast<T*>(p);
      capacity_ = n;
    }
    return data_;
  }

 private:
  T* data_ = nullptr;
  size_t capacity_ = 0;
};

// The calling thread's workspace; the Isa parameter keeps each ISA's translation unit apart.
template <class Isa, class T>
static GemmWorkspace<T>& gemm_workspace() {
  static thread_local GemmWorkspace<T> ws;
  return ws;
}

}  // namespace seqblocks
