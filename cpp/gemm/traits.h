// Register- and cache-blocking sizes per ISA and dtype.
//
// Micro-tile: MR rows of C x NR = NV * width columns, held in MR * NV vector accumulators.
// Each k step loads NV vectors of B and broadcasts MR scalars of A, so the tile does MR * NV
// FMAs per (NV loads + MR broadcasts). AVX-512 float: 6 x 4 = 24 accumulators (a 14 x 2 tile,
// 28 accumulators, needs 16 loads per 28 FMAs and measured 5-10% slower even in L1; see the
// Avx512 float entry); AVX2 has 16 ymm -> 6 x 2 = 12.
//
// Cache blocks, following the BLIS analysis mirrored for row-major C:
//   KC: one packed A micro-panel (KC x MR) stays in L1 while it is swept across the whole
//       packed B block.
//   NC: the packed B block (KC x NC) stays in L2 and is re-read once per A micro-panel; it must
//       leave room for the A panels and C rows that stream through L2 past it: on a 1.25 MiB L2
//       (Ice Lake Xeon) a 1.1 MiB block ran ~20% slower than a 576 KiB one (C++ micro-benchmark).
//   MC: the packed A block (MC x KC) only needs to live in L3; MC bounds the buffer and how
//       often B is re-packed (once per MC rows). AVX-512 float: 2016 rows, so that the common
//       1024-row A (8 x 128 tokens) is one block and B is packed once (1008 packed it twice:
//       1024 x 512 -> 2048 linear 1.4% and an encoder layer 1.6% slower at 1 thread).
// (Blocking figures from before the fourteenth session that compared two builds of _core "in one
// process" compared the first build with itself -- CPython returns the module first loaded as
// _core -- and say nothing; builds are compared in separate processes.)
// DOT_MI x DOT_NJ: tile of the unpacked dot-product path (dot_gemm.h), MI x rows by NJ W rows
// -> MI * NJ accumulators + NJ W vectors + one x vector. DOT_NJ_GEMV: W rows per slab when
// m == 1 (streaming-bound; 2 measured ~3% faster than 4 on AVX-512 for W = 2048 x 512).
#pragma once

#include <cstdint>

#include "simd/vec.h"

namespace seqblocks {

template <class Isa, class T>
struct GemmTraits;

template <>
struct GemmTraits<Scalar, float> {
  static constexpr int MR = 4, NV = 4;
  static constexpr int64_t KC = 256, NC = 512, MC = 256;
  static constexpr int DOT_MI = 2, DOT_NJ = 4, DOT_NJ_GEMV = 4;
};
template <>
struct GemmTraits<Scalar, double> {
  static constexpr int MR = 4, NV = 4;
  static constexpr int64_t KC = 256, NC = 256, MC = 256;
  static constexpr int DOT_MI = 2, DOT_NJ = 4, DOT_NJ_GEMV = 4;
};

#if defined(__AVX2__) && defined(__FMA__)
template <>
struct GemmTraits<Avx2, float> {
  static constexpr int MR = 6, NV = 2;
  static constexpr int64_t KC = 384, NC = 672, MC = 960;
  static constexpr int DOT_MI = 2, DOT_NJ = 4, DOT_NJ_GEMV = 4;
};
template <>
struct GemmTraits<Avx2, double> {
  static constexpr int MR = 6, NV = 2;
  static constexpr int64_t KC = 256, NC = 512, MC = 960;
  static constexpr int DOT_MI = 2, DOT_NJ = 4, DOT_NJ_GEMV = 4;
};
#endif

#if defined(__AVX512F__) && defined(__AVX512DQ__)
// AVX-512 float: 6 x 64 tiles (6 broadcasts and 4 B loads per 24 FMAs) and a B block of
// 384 x 384 floats (576 KiB). Measured on an Ice Lake Xeon (1.25 MiB L2), one thread, builds
// alternated in separate processes (5-6 pairs, ratio medians [quartiles]) against the former
// 14 x 32 tile with KC = 512, NC = 640: x @ W^T 518x2048 -> 512 1.13-1.21x, 1024x512 -> 512
// 1.30-1.41x [1.18-1.58], -> 1536 1.11-1.19x, -> 2048 1.15x; matmul 1024^3 1.05x, 2048^3 1.18x;
// the 14 x 32 tile with 384 x 384 blocks alone gained 0.98-1.12x. C++ micro-benchmark of the
// tiles: all in L1, 6 x 64 160-168 GFLOP/s against 144-154 for 14 x 32 (FMA probe 177-180);
// over a 1.1 MiB B block 6 x 64 fell to 128 (576 KiB: 161): the B block must leave room in L2
// for the A and C lines that stream past it.
template <>
struct GemmTraits<Avx512, float> {
  static constexpr int MR = 6, NV = 4;
  static constexpr int64_t KC = 384, NC = 384, MC = 2016;
  static constexpr int DOT_MI = 4, DOT_NJ = 4, DOT_NJ_GEMV = 2;
};
template <>
struct GemmTraits<Avx512, double> {
  static constexpr int MR = 14, NV = 2;
  static constexpr int64_t KC = 256, NC = 512, MC = 1008;
  static constexpr int DOT_MI = 4, DOT_NJ = 4, DOT_NJ_GEMV = 2;
};
#endif

}  // namespace seqblocks
