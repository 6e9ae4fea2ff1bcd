// Register- and cache-blocking sizes per ISA and dtype.
//
// Micro-tile: MR rows of C x NR = NV * width columns, held in MR * NV vector accumulators.
// Each k step loads NV vectors of B and broadcasts MR scalars of A, so the tile does MR * NV
// FMAs per (NV loads + MR broadcasts). The tile is as large as the register file allows
// (accumulators + NV B vectors + one broadcast): AVX-512 has 32 zmm -> 14 x 2 = 28
// accumulators; AVX2 has 16 ymm -> 6 x 2 = 12.
//
// Cache blocks, sized for the machine this was tuned on (2 cores of a Xeon with 48 KiB L1d
// and 2 MiB L2 per core), following the BLIS analysis mirrored for row-major C:
//   KC: one packed A micro-panel (KC x MR) stays in L1 while it is swept across the whole
//       packed B block, so KC * MR * sizeof(T) ~ half of L1.
//   NC: the packed B block (KC x NC) stays in L2 and is re-read once per A micro-panel, so
//       KC * NC * sizeof(T) ~ half of L2.
//   MC: the packed A block (MC x KC) only needs to live in L3; MC bounds the buffer and how
//       often B is re-packed (once per MC rows). AVX-512 float: 2016 rows (3 MiB), so that the
//       common 1024-row A (8 x 128 tokens) is one block and B is packed once (1008 packed it
//       twice: 1024 x 512 -> 2048 linear 1.4% and an encoder layer 1.6% slower at 1 thread).
// (On that machine KC = 192, 256 and 384 measured within noise of each other for float32. On an
// Emerald Rapids Xeon, AVX-512 float KC = 512 (a 28 KiB A micro-panel) measured 1.3-1.6% faster
// than 384 for the 512-deep products of d_model = 512 layers, which then take one K block.)
// On an Ice Lake Xeon (family 6 model 106: 48 KiB L1d, 1.25 MiB L2, so a 512 x 640 float B block
// of 1.25 MiB no longer fits half of L2), NC = 256, 320, 384 and 640 measured within noise of each
// other on the layer shapes (one process loading the same build with each NC: 0.96-1.18 against
// NC = 640 either way, and 640 against itself 0.94-1.03), and neither a software prefetch of the B panel 4-16 rows ahead nor a
// 9 x 3 tile (fewer broadcasts per FMA: 14% faster with everything in L1) gained more than 0-3%
// in the whole product; the float kernel there reaches ~0.87-0.96x MKL (docs/benchmarks.md).
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
// alternated in separate processes (6 pairs, ratio medians [quartiles]) against the 14 x 32 tile
// with KC = 512, NC = 640: x @ W^T 518x2048 -> 512 1.21x [1.16-1.37], 1024x512 -> 512 1.41x
// [1.18-1.58], 1024x512 -> 1536 1.19x [1.14-1.24], 1024x512 -> 2048 1.15x [1.05-1.32]; the 14 x 32
// tile with the same blocks gained 0.98-1.12x. With everything in L1 the 6 x 64 tile runs ~10 %
// faster than 14 x 32 (C++ micro-benchmark: 160-168 against 144-154 GFLOP/s, FMA probe 177-180),
// and with a 1 MiB B block both fall to ~110: the B block must leave room in L2 for the A and C
// lines that stream past it. (In-process A/B of two _core builds is not possible: CPython hands
// back the first module loaded under the name _core, so the earlier "no difference" findings for
// NC, B prefetch and 9 x 48 tiles compared one build with itself.)
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
