// Activation pairs. Forward of tanh, sigmoid and gelu is the vectorized math of cpp/math/
// (kernels().unary_*); relu forward and every backward are here, fused, one pass:
//
//   relu     y = max(x, 0) (NaN propagates)   dx = dy if not (y <= 0) else 0   (saved: y)
//   tanh                                       dx = dy (1 - y^2)                (saved: y)
//   sigmoid                                    dx = dy (y - y^2)                (saved: y)
//   gelu_erf  y = x Phi(x)                     dx = dy (Phi(x) + x phi(x))      (saved: x)
//             Phi(x) = gelu(x) / x, with gelu(x) passed in `aux` (the binding computes it with the
//             math kernel into dx's buffer; aux may alias dx), Phi(x) = 1/2 + x / sqrt(2 pi) for
//             |x| < 2^-20 (error O(x^3)); phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
//   gelu_tanh y = 1/2 x (1 + t), t = tanh(u), u = k (x + c x^3), k = sqrt(2/pi), c = 0.044715
//             dx = dy (1 + t) (1/2 + 1/2 k x (1 - t) (1 + 3 c x^2)),
//             1 + t = 2 / (1 + e) and 1 - t = 2 e / (1 + e) with e = exp(-2u) for u >= 0 (swapped for
//             u < 0): no cancellation; x is clamped to [-20, 20] first (the derivative is exactly 0
//             or 1 beyond, in both precisions), so x^3 never overflows.
// All arrays have n elements, C order.
#pragma once

#include <cstdint>

#include "runtime/isa.h"

namespace seqblocks {

enum class ActivationGrad : int { relu = 0, tanh, sigmoid, gelu_erf, gelu_tanh };

// Where backward_tile finds f's input for a tile of the GEMM it follows: the tile at c has its
// saved values at saved + (c - c0) (saved laid out as the GEMM's C). gelu_erf in float64 needs
// aux (gelu(x)) and is not offered as a tile: the caller runs backward_f64 after the GEMM.
template <class T>
struct ActivationTile {
  ActivationGrad kind;
  const T* saved;
  const T* c0;
};

struct ActivationKernels {
  void (*relu_forward_f32)(const float* x, float* y, int64_t n, int nthreads);
  void (*relu_forward_f64)(const double* x, double* y, int64_t n, int nthreads);
  // dx = dy * f'(saved); aux: gelu(x) for gelu_erf (may alias dx), unused otherwise.
  void (*backward_f32)(ActivationGrad kind, const float* dy, const float* saved, const float* aux, float* dx,
                       int64_t n, int nthreads);
  void (*backward_f64)(ActivationGrad kind, const double* dy, const double* saved, const double* aux,
                       double* dx, int64_t n, int nthreads);
  // The same as a GEMM epilogue (GemmPost::fn, ctx an ActivationTile): dy -> dy f'(saved) in
  // place on finished tiles of the GEMM that produces dy, on the GEMM's thread.
  void (*backward_tile_f32)(float* c, int64_t ldc, int64_t rows, int64_t cols, const void* ctx);
  void (*backward_tile_f64)(double* c, int64_t ldc, int64_t rows, int64_t cols, const void* ctx);
};

template <class Isa>
const ActivationKernels& activation_kernels();

}  // namespace seqblocks
