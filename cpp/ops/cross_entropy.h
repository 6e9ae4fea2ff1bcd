// Cross-entropy over the rows of a (rows, C) matrix of logits: fused log-softmax + negative
// log-likelihood, forward and backward (the Python layer moves C last and applies the reduction).
//
// Per row, with m = max_c x_c, s = sum_c exp(x_c - m), lse = m + log s, w = weight (ones if
// null), W = sum_c w_c, eps = label smoothing:
//   class index t (a row is skipped, loss 0 and gradient 0, iff t == ignore_index):
//     loss = (1 - eps) w_t (lse - x_t) + (eps / C) sum_c w_c (lse - x_c)
//          = (1 - eps) w_t (log s - (x_t - m)) + (eps / C) (W log s - sum_c w_c (x_c - m))
//     dx_c = scale * (p_c ((1 - eps) w_t + (eps / C) W) - (eps / C) w_c - [c == t] (1 - eps) w_t)
//   probabilities q (q' = (1 - eps) q + eps / C):
//     loss = sum_c w_c q'_c (lse - x_c) = A log s - sum_c w_c q'_c (x_c - m),  A = sum_c w_c q'_c
//     dx_c = scale * (p_c A - w_c q'_c)
// with p_c = exp((x_c - m) - log s) and scale = dL/dloss of the row. The forward keeps m and
// log s per row for the backward (and A for probability targets).
//
// Rows are split across the threads of one region and never split themselves; the per-row
// losses are returned in double and reduced by the caller in a fixed order, so the results do
// not depend on the thread count.
#pragma once

#include <cstdint>

#include "runtime/isa.h"

namespace seqblocks {

template <class T>
struct CrossEntropyForwardArgs {
  const T* x = nullptr;             // (rows, C)
  const int64_t* target = nullptr;  // (rows,) class indices in [0, C) or ignore_index; null for q
  const T* q = nullptr;             // (rows, C) class probabilities; null for class indices
  const T* w = nullptr;             // (C,) or null
  int64_t ignore_index = -100;
  double smoothing = 0.0;
  int64_t rows = 0, C = 0;          // C >= 1
  double* row_loss = nullptr;       // (rows,) out
  T* row_max = nullptr;             // (rows,) out, or null (inference)
  T* row_logsum = nullptr;          // (rows,) out, or null
  T* row_qw = nullptr;              // (rows,) out for q (A above), or null
  int nthreads = 1;
};

template <class T>
struct CrossEntropyBackwardArgs {
  const T* x = nullptr;             // (rows, C)
  const int64_t* target = nullptr;  // as in the forward
  const T* q = nullptr;
  const T* w = nullptr;
  int64_t ignore_index = -100;
  double smoothing = 0.0;
  int64_t rows = 0, C = 0;
  const T* row_max = nullptr;       // (rows,) from the forward
  const T* row_logsum = nullptr;    // (rows,)
  const T* row_qw = nullptr;        // (rows,) for q
  const T* grad_rows = nullptr;     // (rows,) dL/dloss per row ("none"), or null: all 1
  double grad_scale = 1.0;          // scale = grad_scale * grad_rows[i]
  T* dx = nullptr;                  // (rows, C) out
  int nthreads = 1;
};

struct CrossEntropyKernels {
  void (*forward_f32)(const CrossEntropyForwardArgs<float>&);
  void (*forward_f64)(const CrossEntropyForwardArgs<double>&);
  void (*backward_f32)(const CrossEntropyBackwardArgs<float>&);
  void (*backward_f64)(const CrossEntropyBackwardArgs<double>&);
};

template <class Isa>
const CrossEntropyKernels& cross_entropy_kernels();

}  // namespace seqblocks
