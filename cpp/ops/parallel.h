// Work splitting for the coarse OpenMP regions of the op families in this directory: thread `tid`
// of `nt` gets a contiguous slice of [0, n), slice starts aligned to `align` elements, so the
// slice boundaries (and with them every per-element result) depend only on n, not on timing.
#pragma once

#include <algorithm>
#include <cstdint>

namespace seqblocks {

static inline void thread_slice(int64_t n, int nt, int tid, int64_t align, int64_t* lo, int64_t* hi) {
  const int64_t blocks = (n + align - 1) / align;
  const int64_t per = blocks / nt, extra = blocks % nt;
  const int64_t b0 = tid * per + std::min<int64_t>(tid, extra);
  const int64_t b1 = b0 + per + (tid < extra ? 1 : 0);
  *lo = std::min(n, b0 * align);
  *hi = std::min(n, b1 * align);
}

// Threads worth starting for `work` elements of streaming work (about 32K elements each), at most nt.
static inline int threads_for(int64_t work, int nt) {
  const int64_t useful = std::max<int64_t>(1, work / 32768);
  return static_cast<int>(std::min<int64_t>(nt, useful));
}

}  // namespace seqblocks
