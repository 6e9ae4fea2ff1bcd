// Dropout kernels per ISA (see dropout.h): the factors of a block of 64 elements are made by
// the integer hash in plain C++ (vectorized by the compiler where the ISA has 64-bit multiplies),
// then the block is scaled with vector multiplies.
#include <omp.h>

#include <cmath>

#include "ops/dropout.h"
#include "ops/parallel.h"
#include "runtime/denormals.h"
// GCC 12 reports -Wmaybe-uninitialized inside avx512fintrin.h (its `__Y = __Y` idiom for undefined
// registers, GCC bug 105593) wherever Vec<Avx512> is inlined; silenced for those header lines only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "runtime/isa_target.h"
#pragma GCC diagnostic pop

namespace seqblocks {
namespace {

static inline uint64_t splitmix64_mix(uint64_t z) {
  z ^= z >> 30;
  z *= 0xBF58476D1CE4E5B9ull;
  z ^= z >> 27;
  z *= 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

template <class Isa, class T>
void dropout_apply(const T* x, T* y, int64_t n, double p, uint64_t seed, int nthreads) {
  using V = Vec<Isa, T>;
  constexpr int W = V::width;
  constexpr int64_t kBlock = 64;
  // u_i >= p  <=>  (hash >> 40) >= ceil(p * 2^24)   (hash >> 40 is an integer below 2^24)
  const uint64_t threshold = static_cast<uint64_t>(std::ceil(p * 16777216.0));
  const T scale = p >= 1.0 ? T(0) : static_cast<T>(1.0 / (1.0 - p));
  const int nt = threads_for(n, nthreads);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    DenormalsFlushed flush;
    int64_t lo, hi;
    thread_slice(n, omp_get_num_threads(), omp_get_thread_num(), kBlock, &lo, &hi);
    alignas(64) T f[kBlock];
    for (int64_t b = lo; b < hi; b += kBlock) {
      const int64_t len = std::min(kBlock, hi - b);
      uint64_t z = seed + static_cast<uint64_t>(b) * 0x9E3779B97F4A7C15ull;
      for (int64_t j = 0; j < len; ++j, z += 0x9E3779B97F4A7C15ull) {
        f[j] = (splitmix64_mix(z) >> 40) >= threshold ? scale : T(0);
      }
      int64_t j = 0;
      for (; j + W <= len; j += W) V::store(y + b + j, V::mul(V::load(x + b + j), V::load(f + j)));
      if (j < len) {
        const int t = static_cast<int>(len - j);
        V::store_tail(y + b + j, V::mul(V::load_tail(x + b + j, t), V::load_tail(f + j, t)), t);
      }
    }
  }
}

}  // namespace

template <>
const DropoutKernels& dropout_kernels<TargetIsa>() {
  static const DropoutKernels table{
      &dropout_apply<TargetIsa, float>,
      &dropout_apply<TargetIsa, double>,
  };
  return table;
}

}  // namespace seqblocks
