// Flush-to-zero / denormals-are-zero for the duration of a kernel, per thread (MXCSR is a
// per-thread register, so every thread of a parallel region installs its own guard).
// The caller's MXCSR is restored on exit.
#pragma once

#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#endif

namespace seqblocks {

class DenormalsFlushed {
 public:
#if defined(__SSE__) || defined(__x86_64__)
  DenormalsFlushed() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | kFtz | kDaz); }
  ~DenormalsFlushed() { _mm_setcsr(saved_); }

 private:
  static constexpr unsigned kFtz = 0x8000;  // bit 15: flush results to zero
  static constexpr unsigned kDaz = 0x0040;  // bit 6: treat denormal inputs as zero
  unsigned saved_;
#endif
 public:
  DenormalsFlushed(const DenormalsFlushed&) = delete;
  DenormalsFlushed& operator=(const DenormalsFlushed&) = delete;
};

}  // namespace seqblocks
