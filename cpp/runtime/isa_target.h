// Included only by the per-ISA translation units (*_isa.cpp), which CMake compiles once per ISA
// with -DSEQBLOCKS_TARGET=scalar|avx2|avx512 and that ISA's flags. Defines TargetIsa.
#pragma once

#include "runtime/isa.h"
#include "simd/vec.h"

#ifndef SEQBLOCKS_TARGET
#error "SEQBLOCKS_TARGET must be defined (scalar, avx2 or avx512): compile this file per ISA"
#endif

#define SEQBLOCKS_TARGET_scalar 0
#define SEQBLOCKS_TARGET_avx2 1
#define SEQBLOCKS_TARGET_avx512 2
#define SEQBLOCKS_TARGET_ID_(t) SEQBLOCKS_TARGET_##t
#define SEQBLOCKS_TARGET_ID(t) SEQBLOCKS_TARGET_ID_(t)

namespace seqblocks {
#if SEQBLOCKS_TARGET_ID(SEQBLOCKS_TARGET) == 2
using TargetIsa = Avx512;
#elif SEQBLOCKS_TARGET_ID(SEQBLOCKS_TARGET) == 1
using TargetIsa = Avx2;
#else
using TargetIsa = Scalar;
#endif
}  // namespace seqblocks
