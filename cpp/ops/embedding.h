// Embedding: row gather and its deterministic scatter-add gradient.
//
//   forward   out[r, :] = weight[idx[r], :]                    idx (n,), weight (num, dim), out (n, dim)
//   backward  dweight[v, :] = sum over r with idx[r] == v of dy[r, :], in increasing r
//             (0 for rows never indexed and for the padding row)
//
// Backward groups the positions of each index value with a stable counting sort (one pass to
// count, a prefix sum, one pass to place), then threads take disjoint ranges of weight rows,
// balanced by the number of positions, and each row is summed in position order: the result is
// bit-identical for every thread count. Indices must be in [0, num) (the binding checks them
// before anything is written).
#pragma once

#include <cstdint>

#include "runtime/isa.h"

namespace seqblocks {

struct EmbeddingKernels {
  void (*forward_f32)(const int64_t* idx, int64_t n, const float* weight, int64_t dim, float* out, int nthreads);
  void (*forward_f64)(const int64_t* idx, int64_t n, const double* weight, int64_t dim, double* out,
                      int nthreads);
  // pad < 0: no padding row. `order` (n) and `offsets` (num + 1) are scratch space.
  void (*backward_f32)(const int64_t* idx, int64_t n, const float* dy, int64_t num, int64_t dim, int64_t pad,
                       int64_t* order, int64_t* offsets, float* dweight, int nthreads);
  void (*backward_f64)(const int64_t* idx, int64_t n, const double* dy, int64_t num, int64_t dim, int64_t pad,
                       int64_t* order, int64_t* offsets, double* dweight, int nthreads);
};

template <class Isa>
const EmbeddingKernels& embedding_kernels();

}  // namespace seqblocks
