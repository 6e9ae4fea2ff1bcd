// Residual add with broadcasting and the axis sums its backward needs (also the bias gradient of
// the linear pair). Shapes are canonical 3-D views (outer, mid, inner) of C-contiguous arrays:
//
//   add, mode 0:  y[o, m, i] = a[o, m, i] + b[o, i]     (b broadcast over the middle axis)
//   add, mode 1:  y[o, m, i] = a[o, m, i] + b[m]        (b broadcast over the outer and inner axes)
//   sum_axis:     out[o, i]  = sum over m of x[o, m, i]
//
// Every broadcast pattern of b against a reduces to one add call and one sum_axis call per
// broadcast run (python/seqblocks/ops/elementwise.py builds the views).
//
// sum_axis is deterministic: the middle axis is cut into chunks whose size depends only on the
// shape; each chunk's partial sum is computed by one thread (vector lanes in a fixed order) and
// the partials are added in chunk order, so results are identical for every thread count. The
// chunking also bounds the rounding error (a two-level sum: chunk length + number of chunks).
#pragma once

#include <cstdint>

#include "runtime/isa.h"

namespace seqblocks {

struct ElementwiseKernels {
  void (*add_f32)(const float* a, const float* b, float* y, int mode, int64_t outer, int64_t mid,
                  int64_t inner, int nthreads);
  void (*add_f64)(const double* a, const double* b, double* y, int mode, int64_t outer, int64_t mid,
                  int64_t inner, int nthreads);
  void (*sum_axis_f32)(const float* x, float* out, int64_t outer, int64_t mid, int64_t inner, int nthreads);
  void (*sum_axis_f64)(const double* x, double* out, int64_t outer, int64_t mid, int64_t inner,
                       int nthreads);
};

template <class Isa>
const ElementwiseKernels& elementwise_kernels();

}  // namespace seqblocks
