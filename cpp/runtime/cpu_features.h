// CPU feature detection from CPUID + XGETBV (the OS must also save the wider registers).
#pragma once

#include <string>

namespace seqblocks {

struct CpuFeatures {
  std::string vendor;
  std::string brand;
  bool sse42 = false;
  bool avx = false;
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512dq = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool os_saves_ymm = false;  // XCR0 bits 1-2
  bool os_saves_zmm = false;  // XCR0 bits 5-7

  bool has_avx2_fma() const { return avx2 && fma && os_saves_ymm; }
  bool has_avx512() const {
    return has_avx2_fma() && avx512f && avx512dq && avx512bw && avx512vl && os_saves_zmm;
  }
};

// Detected once, on first call; thread-safe (function-local static).
const CpuFeatures& cpu_features();

}  // namespace seqblocks
