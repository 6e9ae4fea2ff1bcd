// Element-wise math driver: y[i] = f(x[i]) for the functions of cpp/math/{exp,tanh_sigmoid,gelu}.h.
//
// The op is switched on once; each function runs a full-width loop (four registers interleaved,
// so their dependency chains overlap) and one masked tail (load_tail/store_tail never touch
// memory past n). x == y is allowed: every element is read before its own slot is written and
// no slot is read after another is written. Large arrays are split into contiguous chunks, one
// per thread, in one OpenMP region; each thread flushes denormals (FTZ/DAZ) for itself.
// Every lane is computed by the same instructions whatever its position, so results are
// bit-identical for every thread count and chunking.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "math/exp.h"
#include "math/gelu.h"
#include "math/tanh_sigmoid.h"
#include "runtime/denormals.h"
#include "runtime/kernel_table.h"
#include "simd/interleaved.h"
#include "simd/vec.h"

#ifdef _OPENMP
#include <omp.h>
#endif

// Inline every call in the function body, however large (the interleaved kernels must be
// inlined to keep their register packs in registers).
#if defined(__GNUC__)
#define SEQBLOCKS_FLATTEN __attribute__((flatten))
#else
#define SEQBLOCKS_FLATTEN
#endif

namespace seqblocks {
namespace math {

// Elements per thread below which fewer threads are used. A warm OpenMP team starts a region
// in ~1-2 us; threads that went to sleep take longer. Measured (AVX-512, float, best of 300):
// exp 16K elements 5.5 us on 1 thread vs 4.2 us on 2, 32K 10.6 vs 6.9; GELU (erf) 8K 5.9 vs
// 3.9 us. So a thread gets at least ~4-8 us of work: 16K elements of exp, 8K of the costlier
// functions (float; double costs ~3x per element, so these are conservative for it).
static constexpr int64_t kUnaryMinPerThread = 16384;
static constexpr int64_t kUnaryMinPerThreadCostly = 8192;

// y = f(x) on [0, n): the main loop hands Block registers at a time to f_block, the same function
// instantiated on Vec<Interleaved<Isa, Block>, T> (its Block dependency chains interleaved
// instruction by instruction: these kernels are long chains, and the out-of-order window alone
// overlaps too few of them); the rest goes through f one register at a time, the last one
// masked. Both compute each lane with the same operations, so results do not depend on the
// position.
template <class Isa, class T, int Block, class FBlock, class F>
SEQBLOCKS_FLATTEN inline void unary_range_interleaved(FBlock f_block, F f, const T* x, T* y, int64_t n) {
  using V = Vec<Isa, T>;
  using VB = Vec<Interleaved<Isa, Block>, T>;
  constexpr int64_t w = V::width;
  int64_t i = 0;
  for (; i + Block * w <= n; i += Block * w) {
    typename VB::reg v;
    for (int j = 0; j < Block; ++j) v.v[j] = V::load(x + i + j * w);
    v = f_block(v);
    for (int j = 0; j < Block; ++j) V::store(y + i + j * w, v.v[j]);
  }
  for (; i + w <= n; i += w) V::store(y + i, f(V::load(x + i)));
  if (i < n) {
    const int rem = static_cast<int>(n - i);
    V::store_tail(y + i, f(V::load_tail(x + i, rem)), rem);
  }
}

// body(i0, i1) on contiguous chunks [i0, i1) of [0, n), one per thread, in one parallel region
// (no region at all when one thread suffices). Chunk boundaries are multiples of 64 elements.
template <class Body>
inline void parallel_chunks(int64_t n, int nthreads, int64_t min_per_thread, Body body) {
  const int64_t by_size = n / min_per_thread;
  const int nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(nthreads, by_size)));
  if (nt <= 1) {
    DenormalsFlushed guard;
    body(int64_t(0), n);
    return;
  }
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    DenormalsFlushed guard;
#ifdef _OPENMP
    const int tid = omp_get_thread_num();
    const int team = omp_get_num_threads();
#else
    const int tid = 0, team = 1;
#endif
    const int64_t blocks = (n + 63) / 64;
    const int64_t i0 = std::min(n, blocks * tid / team * 64);
    const int64_t i1 = std::min(n, blocks * (tid + 1) / team * 64);
    if (i1 > i0) body(i0, i1);
  }
}

template <class Isa, class T, int Block, class FBlock, class F>
inline void unary_parallel_interleaved(FBlock f_block, F f, const T* x, T* y, int64_t n, int nthreads,
                                       int64_t min_per_thread) {
  parallel_chunks(n, nthreads, min_per_thread, [&](int64_t i0, int64_t i1) {
    unary_range_interleaved<Isa, T, Block>(f_block, f, x + i0, y + i0, i1 - i0);
  });
}

// GELU (erf form) in double: libm per element (see gelu_erf_f64), ~25 ns per element, so
// threads pay off much sooner.
static inline void gelu_erf_f64_parallel(const double* x, double* y, int64_t n, int nthreads) {
  parallel_chunks(n, nthreads, 1024, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) y[i] = gelu_erf_f64(x[i]);
  });
}

}  // namespace math

// Registers per interleaved block (see unary_range_interleaved), per ISA, dtype and function.
// More chains hide more latency until the registers run out. Measured on AVX-512 against the
// previous loop (two registers per iteration, not interleaved): gelu_erf 6.9 -> 6.2 ns per 16
// floats (2^15 floats in L2; two interleaved registers: 6.4); on 2^20 floats, A/B medians, 1 / 2
// threads: tanh 0.373 -> 0.362 / 0.184 -> 0.177 ms, sigmoid 0.391 -> 0.369 / 0.192 -> 0.182,
// gelu_tanh 0.803 -> 0.720 / 0.394 -> 0.367, exp (bound by memory) 0.309 -> 0.311 / 0.153 -> 0.157.
// Then 6 and 8 against 4 (Ice Lake Xeon, AVX-512 float, C++ loop without allocation, medians of
// 40-400 alternated ratios): tanh 6 is 1.15x faster in L1, 1.10x at 2^16 and 2^20 floats;
// sigmoid 6 1.13-1.15x in L1, 1.00x at 2^16, 1.12x at 2^20; exp 8 gains in L1 (1.14x) but
// loses at 2^16 (0.79x), and gelu_erf and gelu_tanh lose with 6 or 8 (0.82-0.94x; 8 spills).
template <class Isa, class T>
struct UnaryBlocks {
  static constexpr int exp = 4, tanh = 4, sigmoid = 4, gelu_erf = 4, gelu_tanh = 4;
};
template <>
struct UnaryBlocks<Avx512, float> {
  static constexpr int exp = 4, tanh = 6, sigmoid = 6, gelu_erf = 4, gelu_tanh = 4;
};

template <class Isa, class T>
void unary_apply(UnaryOp op, const T* x, T* y, int64_t n, int nthreads) {
  using reg = typename Vec<Isa, T>::reg;
  using Blocks = UnaryBlocks<Isa, T>;
  // Each function is instantiated twice: on Block interleaved registers (Vec<Interleaved<Isa,
  // Block>, T>) for the main loop and on one register for the rest; both compute every lane with
  // the same operations.
  if (n <= 0) return;
  switch (op) {
    case UnaryOp::exp: {
      using B = Interleaved<Isa, Blocks::exp>;
      math::unary_parallel_interleaved<Isa, T, Blocks::exp>(
          [](typename Vec<B, T>::reg v) { return math::exp<B, T>(v); },
          [](reg v) { return math::exp<Isa, T>(v); }, x, y, n, nthreads, math::kUnaryMinPerThread);
      break;
    }
    case UnaryOp::tanh: {
      using B = Interleaved<Isa, Blocks::tanh>;
      math::unary_parallel_interleaved<Isa, T, Blocks::tanh>(
          [](typename Vec<B, T>::reg v) { return math::tanh<B, T>(v); },
          [](reg v) { return math::tanh<Isa, T>(v); }, x, y, n, nthreads, math::kUnaryMinPerThreadCostly);
      break;
    }
    case UnaryOp::sigmoid: {
      using B = Interleaved<Isa, Blocks::sigmoid>;
      math::unary_parallel_interleaved<Isa, T, Blocks::sigmoid>(
          [](typename Vec<B, T>::reg v) { return math::sigmoid<B, T>(v); },
          [](reg v) { return math::sigmoid<Isa, T>(v); }, x, y, n, nthreads, math::kUnaryMinPerThreadCostly);
      break;
    }
    case UnaryOp::gelu_erf:
      if constexpr (std::is_same_v<T, float>) {
        using B = Interleaved<Isa, Blocks::gelu_erf>;
        math::unary_parallel_interleaved<Isa, T, Blocks::gelu_erf>(
            [](typename Vec<B, T>::reg v) { return math::gelu_erf<B>(v); },
            [](reg v) { return math::gelu_erf<Isa>(v); }, x, y, n, nthreads, math::kUnaryMinPerThreadCostly);
      } else {
        math::gelu_erf_f64_parallel(x, y, n, nthreads);
      }
      break;
    case UnaryOp::gelu_tanh: {
      using B = Interleaved<Isa, Blocks::gelu_tanh>;
      math::unary_parallel_interleaved<Isa, T, Blocks::gelu_tanh>(
          [](typename Vec<B, T>::reg v) { return math::gelu_tanh<B, T>(v); },
          [](reg v) { return math::gelu_tanh<Isa, T>(v); }, x, y, n, nthreads, math::kUnaryMinPerThreadCostly);
      break;
    }
    default:
      break;
  }
}

}  // namespace seqblocks
