// The per-thread list of ThreadBuffer blocks (gemm/workspace.h): compiled once, without ISA flags.
#include "gemm/workspace.h"

namespace seqblocks {

namespace {
thread_local ThreadBuffer* thread_buffers = nullptr;  // head of this thread's list
}  // namespace

ThreadBuffer::ThreadBuffer() : next_(thread_buffers) {
  if (next_) next_->prev_ = this;
  thread_buffers = this;
}

ThreadBuffer::~ThreadBuffer() {
  if (prev_) prev_->next_ = next_;
  else thread_buffers = next_;
  if (next_) next_->prev_ = prev_;
  std::free(data_);
}

size_t release_thread_buffers() {
  size_t released = 0;
  for (ThreadBuffer* b = thread_buffers; b != nullptr; b = b->next_) {
    std::free(b->data_);
    b->data_ = nullptr;
    released += b->capacity_bytes_;
    b->capacity_bytes_ = 0;
  }
  return released;
}

}  // namespace seqblocks
