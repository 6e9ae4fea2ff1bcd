// Linear layer with a fused activation (the first half of a Transformer feed-forward block):
//
//   z = x W^T + b,   y = act(z),   act = relu | gelu (erf form) | gelu (tanh form)
//
// x (rows, in), W (out, in), b (out) or null, y (rows, out); pre (rows, out) or null receives z
// too (GELU's backward needs z; ReLU's needs only y). The activation is the GEMM's epilogue
// (GemmPost): each finished tile of z is activated while it is still in L1, so y is written once
// and never read back. The activation math is that of cpp/math (<= 4 ulp, as the separate op), so
// y equals linear followed by the activation op exactly.
// Backward needs no kernel of its own: dz = dy act'(saved) (ops/activation.h), then the linear
// pair's backward (dx = dz W, dW = dz^T x, db = column sums of dz).
#pragma once

#include <cstdint>

#include "runtime/isa.h"

namespace seqblocks {

enum class LinearAct : int { relu = 0, gelu_erf, gelu_tanh };

struct LinearActKernels {
  void (*forward_f32)(LinearAct act, const float* x, const float* w, const float* b, float* y, float* pre,
                      int64_t rows, int64_t in, int64_t out, int nthreads);
  void (*forward_f64)(LinearAct act, const double* x, const double* w, const double* b, double* y, double* pre,
                      int64_t rows, int64_t in, int64_t out, int nthreads);
};

template <class Isa>
const LinearActKernels& linear_act_kernels();

}  // namespace seqblocks
