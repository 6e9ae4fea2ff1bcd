// PLACEHOLDER (to be replaced by the vectorized math kernels).
#pragma once

#include <cmath>
#include <cstdint>

#include "runtime/kernel_table.h"
#include "simd/vec.h"

namespace seqblocks {

template <class Isa, class T>
void unary_apply(UnaryOp op, const T* x, T* y, int64_t n, int nthreads) {
  (void)nthreads;
  for (int64_t i = 0; i < n; ++i) {
    const T v = x[i];
    switch (op) {
      case UnaryOp::exp: y[i] = std::exp(v); break;
      case UnaryOp::tanh: y[i] = std::tanh(v); break;
      case UnaryOp::sigmoid: y[i] = T(1) / (T(1) + std::exp(-v)); break;
      case UnaryOp::gelu_erf: y[i] = T(0.5) * v * std::erfc(-v / std::sqrt(T(2))); break;
      case UnaryOp::gelu_tanh:
        y[i] = T(0.5) * v * (T(1) + std::tanh(T(0.7978845608028654) * (v + T(0.044715) * v * v * v)));
        break;
      default: break;
    }
  }
}

}  // namespace seqblocks
