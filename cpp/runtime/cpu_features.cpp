#include "runtime/cpu_features.h"

#include <cstdint>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace seqblocks {
namespace {

#if defined(__x86_64__) || defined(__i386__)
void cpuid(uint32_t leaf, uint32_t subleaf, uint32_t regs[4]) {
  __cpuid_count(leaf, subleaf, regs[0], regs[1], regs[2], regs[3]);
}

uint64_t xgetbv0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

// Sizes of the data/unified caches of levels 1-3 from a deterministic-cache-parameters leaf
// (subleaf i describes one cache; type 0 ends the list): ways x partitions x line size x sets.
void detect_caches(uint32_t leaf, CpuFeatures& f) {
  uint32_t r[4];
  for (uint32_t i = 0; i < 16; ++i) {
    cpuid(leaf, i, r);
    const uint32_t type = r[0] & 0x1F;  // 1 data, 2 instruction, 3 unified
    if (type == 0) break;
    if (type == 2) continue;
    const uint32_t level = (r[0] >> 5) & 0x7;
    const int64_t ways = ((r[1] >> 22) & 0x3FF) + 1, partitions = ((r[1] >> 12) & 0x3FF) + 1,
                  line = (r[1] & 0xFFF) + 1, sets = static_cast<int64_t>(r[2]) + 1;
    const int64_t bytes = ways * partitions * line * sets;
    if (level == 1) f.l1d_bytes = bytes;
    if (level == 2) f.l2_bytes = bytes;
    if (level == 3) f.l3_bytes = bytes;
  }
}

CpuFeatures detect() {
  CpuFeatures f;
  uint32_t r[4];
  cpuid(0, 0, r);
  const uint32_t max_leaf = r[0];
  char vendor[13] = {};
  std::memcpy(vendor + 0, &r[1], 4);
  std::memcpy(vendor + 4, &r[3], 4);
  std::memcpy(vendor + 8, &r[2], 4);
  f.vendor = vendor;

  if (max_leaf >= 1) {
    cpuid(1, 0, r);
    const int base_family = (r[0] >> 8) & 0xF, base_model = (r[0] >> 4) & 0xF;
    f.family = base_family == 0xF ? base_family + static_cast<int>((r[0] >> 20) & 0xFF) : base_family;
    f.model = base_family == 0x6 || base_family == 0xF ? base_model + (static_cast<int>((r[0] >> 16) & 0xF) << 4)
                                                       : base_model;
    f.stepping = r[0] & 0xF;
    f.sse42 = (r[2] >> 20) & 1;
    f.fma = (r[2] >> 12) & 1;
    f.f16c = (r[2] >> 29) & 1;
    const bool osxsave = (r[2] >> 27) & 1;
    f.avx = (r[2] >> 28) & 1;
    if (osxsave) {
      const uint64_t xcr0 = xgetbv0();
      f.os_saves_ymm = (xcr0 & 0x6) == 0x6;
      f.os_saves_zmm = (xcr0 & 0xE6) == 0xE6;
    }
  }
  if (max_leaf >= 7) {
    cpuid(7, 0, r);
    f.avx2 = (r[1] >> 5) & 1;
    f.avx512f = (r[1] >> 16) & 1;
    f.avx512dq = (r[1] >> 17) & 1;
    f.avx512bw = (r[1] >> 30) & 1;
    f.avx512vl = (r[1] >> 31) & 1;
  }
  cpuid(0x80000000u, 0, r);
  const uint32_t max_ext_leaf = r[0];
  if (f.vendor == "GenuineIntel" && max_leaf >= 4) {
    detect_caches(4, f);
  } else if (f.vendor == "AuthenticAMD" && max_ext_leaf >= 0x8000001Du) {
    cpuid(0x80000001u, 0, r);
    if ((r[2] >> 22) & 1) detect_caches(0x8000001Du, f);  // topology extensions
  }
  if (max_ext_leaf >= 0x80000004u) {
    char brand[49] = {};
    for (uint32_t i = 0; i < 3; ++i) {
      cpuid(0x80000002u + i, 0, r);
      std::memcpy(brand + 16 * i, r, 16);
    }
    f.brand = brand;
    const auto first = f.brand.find_first_not_of(' ');
    f.brand = first == std::string::npos ? std::string() : f.brand.substr(first);
  }
  return f;
}
#else
CpuFeatures detect() { return CpuFeatures{}; }
#endif

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

}  // namespace seqblocks
