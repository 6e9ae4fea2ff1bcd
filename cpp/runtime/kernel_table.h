// The table of kernels one ISA provides. cpp/runtime/isa_instance.cpp is compiled once per ISA
// (with that ISA's compiler flags) and fills one table; dispatch.cpp picks a table at run time.
#pragma once

#include <cstdint>

namespace seqblocks {

// Row-major batched GEMM:  C[i] (m x n) = alpha * op(A[i]) (m x k) @ op(B[i]) (k x n)
//                                          + beta * C[i] (+ bias broadcast over rows)
// for i in [0, batch). op(A) = A stored m x k with row stride lda, or, if trans_a, A stored
// k x m (row stride lda) and transposed. Same for B (k x n, or n x k if trans_b).
// beta == 0 means C is write-only (never read, so garbage or NaN in C does not propagate).
// bias (length n, may be null) is added after scaling, as in y = x @ W^T + b.
// An in-place operation on finished elements of C (a fused epilogue, e.g. an activation):
// fn(c, ldc, rows, cols, ctx) is called exactly once for every element of C, on rectangles of
// it, after the bias is added; `c` points into C, so ctx can locate a companion array with the
// same layout by c's offset from C's start. Called from the GEMM's threads (no allocation, no
// exceptions).
template <class T>
struct GemmPost {
  void (*fn)(T* c, int64_t ldc, int64_t rows, int64_t cols, const void* ctx);
  const void* ctx;
};

template <class T>
struct GemmProblem {
  int64_t m = 0, n = 0, k = 0;
  int64_t batch = 1;
  const T* a = nullptr;
  int64_t lda = 0, batch_stride_a = 0;
  bool trans_a = false;
  const T* b = nullptr;
  int64_t ldb = 0, batch_stride_b = 0;
  bool trans_b = false;
  T* c = nullptr;
  int64_t ldc = 0, batch_stride_c = 0;
  T alpha = 1, beta = 0;
  const T* bias = nullptr;
  const GemmPost<T>* post = nullptr;  // or null; batches: c offsets count from C[0]
  // Or null (batch 1 only): receives the m row sums of op(A), sum over l of op(A)[i][l], in the
  // order of gemm/pack.h (kRowSumGroup) -- a linear map's bias gradient beside its weight
  // gradient dW = dy^T x, summed while dy^T is packed rather than in a second pass over dy.
  T* a_row_sums = nullptr;
  int nthreads = 1;
};

// Element-wise math functions; see cpp/math/ for the formulas and error bounds.
enum class UnaryOp : int { exp = 0, tanh, sigmoid, gelu_erf, gelu_tanh, count };

struct KernelTable {
  const char* isa;
  void (*gemm_f32)(const GemmProblem<float>&);
  void (*gemm_f64)(const GemmProblem<double>&);
  // Two independent GEMMs of equal work, one per thread when nthreads == 2 (the first to finish
  // helps with the other's blocks), else one after the other (gemm/gemm.h, gemm_pair); either
  // may be null.
  void (*gemm_pair_f32)(const GemmProblem<float>*, const GemmProblem<float>*, int nthreads);
  void (*gemm_pair_f64)(const GemmProblem<double>*, const GemmProblem<double>*, int nthreads);
  // y[i] = f(x[i]) for i < n; x and y may be the same pointer.
  void (*unary_f32)(UnaryOp op, const float* x, float* y, int64_t n, int nthreads);
  void (*unary_f64)(UnaryOp op, const double* x, double* y, int64_t n, int nthreads);
};

// One per compiled ISA, defined in isa_instance.cpp.
const KernelTable& kernel_table_scalar();
const KernelTable& kernel_table_avx2();
const KernelTable& kernel_table_avx512();

}  // namespace seqblocks
