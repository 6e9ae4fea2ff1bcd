// Packing buffers for the GEMM driver: one 64-byte aligned block per calling thread, grown on
// demand and reused across calls, so a GEMM allocates (and page-faults) only the first time a
// larger size is needed. It is obtained before the parallel region, so std::bad_alloc is thrown
// on the calling thread, never inside the region; each OpenMP thread then uses its own slice.
// A thread keeps at most one block per (ISA, dtype); it is freed when the thread exits, or by
// release_thread_buffers() on that thread (seqblocks.empty_cache()).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

namespace seqblocks {

// A block of memory owned by one thread and linked into that thread's list of such blocks, so
// the thread can free all of its blocks at once between calls (cpp/gemm/workspace.cpp). The
// list head is a plain thread_local pointer (nothing to destroy at thread exit, whatever the
// order of the thread's destructors).
class ThreadBuffer {
 public:
  ThreadBuffer();
  ~ThreadBuffer();
  ThreadBuffer(const ThreadBuffer&) = delete;
  ThreadBuffer& operator=(const ThreadBuffer&) = delete;

 protected:
  void* data_ = nullptr;
  size_t capacity_bytes_ = 0;

 private:
  ThreadBuffer* prev_ = nullptr;
  ThreadBuffer* next_ = nullptr;
  friend size_t release_thread_buffers();
};

// Frees every ThreadBuffer block of the calling thread (they grow again on their next use) and
// returns the bytes released. Only between calls: no kernel of this thread may be running.
size_t release_thread_buffers();

template <class T>
class GemmWorkspace : public ThreadBuffer {
 public:
  static constexpr size_t kAlign = 64;

  // Elements rounded up to whole cache lines, so consecutive slices stay aligned.
  static size_t round_up(size_t elems) {
    constexpr size_t per_line = kAlign / sizeof(T);
    return (elems + per_line - 1) / per_line * per_line;
  }

  // A buffer of at least `elems` elements (contents unspecified). Throws std::bad_alloc.
  T* get(size_t elems) {
    if (elems > capacity_bytes_ / sizeof(T)) {
      std::free(data_);
      data_ = nullptr;
      capacity_bytes_ = 0;
      const size_t n = round_up(elems);
      if (n > SIZE_MAX / sizeof(T)) throw std::bad_alloc();
      void* p = std::aligned_alloc(kAlign, n * sizeof(T));
      if (p == nullptr) throw std::bad_alloc();
      data_ = p;
      capacity_bytes_ = n * sizeof(T);
    }
    return static_cast<T*>(data_);
  }
};

// The calling thread's workspace; the Isa parameter keeps each ISA's translation unit apart.
template <class Isa, class T>
static GemmWorkspace<T>& gemm_workspace() {
  static thread_local GemmWorkspace<T> ws;
  return ws;
}

}  // namespace seqblocks
