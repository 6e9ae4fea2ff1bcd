// Residual add fused with layer norm over the last dimension of (rows, k) matrices (the Python
// layer flattens the trailing normalized_shape dims into k):
//
//   s = x + r                      (the new residual stream, returned: pre-norm blocks need it)
//   y = layer_norm(s) * w + b      (formulas in layer_norm.h; mean and rstd kept for backward)
//   backward, dy (and ds, the gradient reaching s from elsewhere, or none):
//   dx = dr = layer_norm_backward(dy; s, mean, rstd, w) + ds,   dw, db as layer norm's
//
// The forward adds a few rows into s and normalizes them while they are in cache (one pass over
// x and r); the backward runs layer norm's deterministic backward kernel on s, then adds ds. So
// y, s, mean, rstd and every gradient are bit-identical to layer norm of (x + r) for any thread
// count. s, y and r may be one array (inference in place: every element is read before it is
// written, row by row).
#pragma once

#include <cstdint>

#include "ops/layer_norm.h"
#include "runtime/isa.h"

namespace seqblocks {

template <class T>
struct AddLayerNormForwardArgs {
  const T* x = nullptr;     // (rows, k)
  const T* r = nullptr;     // (rows, k) residual
  const T* w = nullptr;     // (k,) or null
  const T* b = nullptr;     // (k,) or null
  T* s = nullptr;           // (rows, k) x + r
  T* y = nullptr;           // (rows, k)
  T* mean = nullptr;        // (rows,) or null (inference)
  T* rstd = nullptr;        // (rows,) or null
  int64_t rows = 0, k = 0;  // k >= 1
  double eps = 1e-5;
  int nthreads = 1;
};

struct AddLayerNormKernels {
  void (*forward_f32)(const AddLayerNormForwardArgs<float>&);
  void (*forward_f64)(const AddLayerNormForwardArgs<double>&);
  // dx += ds over n elements (the backward's last step).
  void (*accumulate_f32)(float* dx, const float* ds, int64_t n, int nthreads);
  void (*accumulate_f64)(double* dx, const double* ds, int64_t n, int nthreads);
};

template <class Isa>
const AddLayerNormKernels& add_layer_norm_kernels();

}  // namespace seqblocks
