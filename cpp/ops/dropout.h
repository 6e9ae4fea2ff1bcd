// Dropout with a counter-based mask: element i (C order) is kept iff u_i >= p, where
//   u_i = (splitmix64(seed + i * 0x9E3779B97F4A7C15 mod 2^64) >> 40) * 2^-24,
//   splitmix64(z): z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB;
//                  z ^= z >> 31                                    (the SplitMix64 finalizer)
// and y_i = x_i * f_i with f_i = T(1 / (1 - p)) if kept else 0 (f = 0 everywhere for p = 1).
// The mask depends on (seed, i) only, so it is the same on every ISA, thread count and backend,
// and backward (dx = dy * f) recomputes it instead of storing it.
#pragma once

#include <cstdint>

#include "runtime/isa.h"

namespace seqblocks {

struct DropoutKernels {
  // y[i] = x[i] * f_i for i < n (x may equal y); 0 <= p <= 1.
  void (*apply_f32)(const float* x, float* y, int64_t n, double p, uint64_t seed, int nthreads);
  void (*apply_f64)(const double* x, double* y, int64_t n, double p, uint64_t seed, int nthreads);
};

template <class Isa>
const DropoutKernels& dropout_kernels();

}  // namespace seqblocks
