// PLACEHOLDER (to be replaced by the packed, blocked GEMM): straightforward triple loop.
#pragma once

#include <cstdint>

#include "runtime/denormals.h"
#include "runtime/kernel_table.h"
#include "simd/vec.h"

namespace seqblocks {

template <class Isa, class T>
void gemm(const GemmProblem<T>& p) {
  DenormalsFlushed flush;
  for (int64_t bi = 0; bi < p.batch; ++bi) {
    const T* a = p.a + bi * p.batch_stride_a;
    const T* b = p.b + bi * p.batch_stride_b;
    T* c = p.c + bi * p.batch_stride_c;
    for (int64_t i = 0; i < p.m; ++i) {
      for (int64_t j = 0; j < p.n; ++j) {
        T acc = 0;
        for (int64_t l = 0; l < p.k; ++l) {
          const T av = p.trans_a ? a[l * p.lda + i] : a[i * p.lda + l];
          const T bv = p.trans_b ? b[j * p.ldb + l] : b[l * p.ldb + j];
          acc += av * bv;
        }
        T out = p.alpha * acc;
        if (p.beta != T(0)) out += p.beta * c[i * p.ldc + j];
        if (p.bias) out += p.bias[j];
        c[i * p.ldc + j] = out;
      }
    }
  }
}

}  // namespace seqblocks
