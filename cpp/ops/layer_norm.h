// Layer normalization over the last dimension of a (rows, k) matrix (the Python layer flattens
// the trailing normalized_shape dims into k), forward and backward.
//
//   mean = sum_j x_j / k,  var = sum_j (x_j - mean)^2 / k,  rstd = 1 / sqrt(var + eps)
//   xhat = (x - mean) * rstd,  y = xhat * w + b                (w, b: (k,), optional)
//   backward, g = dy * w:  dx = rstd * (g - sum(g)/k - xhat * sum(g * xhat)/k)
//                          dw = sum over rows of dy * xhat,  db = sum over rows of dy
//
// dw and db are reduced deterministically: rows are cut into blocks whose size depends only on
// `rows` (never on the thread count); each block's partial sums are accumulated in row order by
// the one thread that owns it, and the partials are added in block order. So every output is
// bit-identical for any thread count.
#pragma once

#include <cstdint>

#include "runtime/isa.h"

namespace seqblocks {

template <class T>
struct LayerNormForwardArgs {
  const T* x = nullptr;     // (rows, k)
  const T* w = nullptr;     // (k,) or null
  const T* b = nullptr;     // (k,) or null
  T* y = nullptr;           // (rows, k)
  T* mean = nullptr;        // (rows,) or null (inference: not stored)
  T* rstd = nullptr;        // (rows,) or null
  int64_t rows = 0, k = 0;  // k >= 1
  double eps = 1e-5;
  int nthreads = 1;
};

template <class T>
struct LayerNormBackwardArgs {
  const T* dy = nullptr;    // (rows, k)
  const T* x = nullptr;     // (rows, k)
  const T* mean = nullptr;  // (rows,)
  const T* rstd = nullptr;  // (rows,)
  const T* w = nullptr;     // (k,) or null
  T* dx = nullptr;          // (rows, k)
  T* dw = nullptr;          // (k,) or null (not wanted)
  T* db = nullptr;          // (k,) or null (not wanted)
  int64_t rows = 0, k = 0;  // k >= 1
  int nthreads = 1;
};

struct LayerNormKernels {
  void (*forward_f32)(const LayerNormForwardArgs<float>&);
  void (*forward_f64)(const LayerNormForwardArgs<double>&);
  // May throw std::bad_alloc (scratch for the dw/db partials), before any thread starts.
  void (*backward_f32)(const LayerNormBackwardArgs<float>&);
  void (*backward_f64)(const LayerNormBackwardArgs<double>&);
};

template <class Isa>
const LayerNormKernels& layer_norm_kernels();

// Rows per block of the dw/db reduction: a function of `rows` only, at most 64 blocks.
static inline int64_t layer_norm_block_rows(int64_t rows) {
  const int64_t per = (rows + 63) / 64;
  return per < 16 ? 16 : per;
}

}  // namespace seqblocks
