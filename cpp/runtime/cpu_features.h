// CPU feature detection from CPUID + XGETBV (the OS must also save the wider registers), and
// the processor's identity and data-cache sizes, so that a benchmark can say which machine it ran
// on (a KVM guest's brand string often names no model).
#pragma once

#include <cstdint>
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
  // Display family and model (CPUID leaf 1 with the extended fields folded in, as the vendors'
  // manuals define them: e.g. family 6 model 106 is an Ice Lake Xeon), stepping; 0 if unknown.
  int family = 0, model = 0, stepping = 0;
  // Per-core L1 data and L2 cache and the L3 cache, in bytes, from the deterministic cache
  // parameters (CPUID leaf 4 on Intel, 0x8000001D on AMD); 0 if the CPU does not report them.
  int64_t l1d_bytes = 0, l2_bytes = 0, l3_bytes = 0;

  bool has_avx2_fma() const { return avx2 && fma && os_saves_ymm; }
  bool has_avx512() const {
    return has_avx2_fma() && avx512f && avx512dq && avx512bw && avx512vl && os_saves_zmm;
  }
};

// Detected once, on first call; thread-safe (function-local static).
const CpuFeatures& cpu_features();

}  // namespace seqblocks
