// Fused in-place optimizer steps: PyTorch's single-tensor SGD and Adam/AdamW, one pass over the
// arrays, operations in PyTorch's order (alpha-adds as fused multiply-adds, as its CPU kernels).
//
// SGD:  g = (maximize ? -grad : grad) + wd * p
//       if momentum != 0:  buf = first_step ? g : momentum * buf + (1 - dampening) * g
//                          g   = nesterov ? g + momentum * buf : buf
//       p = p - lr * g
// Adam: g = maximize ? -grad : grad
//       if wd != 0:  decoupled (AdamW): p = p * (1 - lr * wd)   else: g = g + wd * p
//       m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g^2
//       if amsgrad: vmax = max(vmax, v) and v_hat = vmax, else v_hat = v
//       p = p - (lr / (1 - beta1^step)) * m / (sqrt(v_hat) / sqrt(1 - beta2^step) + eps)
// Scalar coefficients are computed in double and rounded to T once, as PyTorch passes Python floats.
#pragma once

#include <cstdint>

#include "runtime/isa.h"

namespace seqblocks {

struct SgdHyper {
  double lr = 0, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false, maximize = false, first_step = false;
};

struct AdamHyper {
  int64_t step = 1;
  double lr = 0, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
  bool amsgrad = false, maximize = false, decoupled_weight_decay = false;
};

struct OptimKernels {
  // buf may be null when momentum == 0.
  void (*sgd_f32)(float* p, const float* g, float* buf, int64_t n, const SgdHyper& h, int nthreads);
  void (*sgd_f64)(double* p, const double* g, double* buf, int64_t n, const SgdHyper& h, int nthreads);
  // vmax may be null unless amsgrad.
  void (*adam_f32)(float* p, const float* g, float* m, float* v, float* vmax, int64_t n, const AdamHyper& h,
                   int nthreads);
  void (*adam_f64)(double* p, const double* g, double* m, double* v, double* vmax, int64_t n,
                   const AdamHyper& h, int nthreads);
};

template <class Isa>
const OptimKernels& optim_kernels();

}  // namespace seqblocks
