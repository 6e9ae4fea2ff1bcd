// Additive (Bahdanau) attention scores, forward and backward, fused: the (B, Lq, S, H)
// pre-activation tanh(qp_i + kp_j) is never stored; the backward recomputes it.
//
//   scores[b,i,j] = sum_h w_h tanh(qp[b,i,h] + kp[b,j,h])      qp (B, Lq, H), kp (B, S, H), w (H,)
//   t = tanh(qp_i + kp_j),  g_h = ds_ij w_h (1 - t_h^2):
//   dqp_i = sum_j g,  dkp_j = sum_i g,  dw_h = sum_{b,i,j} ds_ij t_h
//
// Threads: the forward splits the rows (b, i) by thread id; the backward splits b (the thread
// owns dqp[b], dkp[b] and a partial dw[b], summed over b in order afterwards), so results are
// bit-identical for any thread count.
#pragma once

#include <cstdint>

#include "runtime/isa.h"

namespace seqblocks {

struct AdditiveScoreKernels {
  void (*forward_f32)(const float* qp, const float* kp, const float* w, float* scores, int64_t b, int64_t lq,
                      int64_t s, int64_t h, int nthreads);
  void (*forward_f64)(const double* qp, const double* kp, const double* w, double* scores, int64_t b, int64_t lq,
                      int64_t s, int64_t h, int nthreads);
  // dw_partial: (B, H) scratch; dw = sum over b of it.
  void (*backward_f32)(const float* ds, const float* qp, const float* kp, const float* w, float* dqp, float* dkp,
                       float* dw_partial, int64_t b, int64_t lq, int64_t s, int64_t h, int nthreads);
  void (*backward_f64)(const double* ds, const double* qp, const double* kp, const double* w, double* dqp,
                       double* dkp, double* dw_partial, int64_t b, int64_t lq, int64_t s, int64_t h, int nthreads);
};

template <class Isa>
const AdditiveScoreKernels& additive_score_kernels();

}  // namespace seqblocks
