// Scaled dot-product attention, forward and backward, tiled (FlashAttention-2 style): no L x S
// buffer is ever allocated; the forward keeps only two numbers per row (stats, below).
//
// Shapes (row-major): q (N, L, E), k (N, S, E), v (N, S, Ev), out/dout (N, L, Ev), stats (N, L, 2).
// mask (optional, additive, q's dtype): element (n, i, j) at mask[mask_off[n] + i*mask_sl + j*mask_ss]
// (strides may be 0: the Python layer passes a broadcast view of the caller's mask, never a copy
// expanded to N x L x S).
//
//   s_ij = scale * q_i . k_j + mask_ij   (-inf for j > i when causal)
//   m_i = max_j s_ij,  l_i = sum_j exp(s_ij - m_i),  p_ij = exp(s_ij - m_i) / l_i
//   out_i = sum_j p_ij f_ij v_j          (f: dropout factors, 1/(1-p) or 0, keyed by n*L*S + i*S + j)
// A row whose scores are all -inf gives out = 0 (PyTorch: NaN).
// stats_i = (log2(e) m_i, log2 l_i): the kernels work in base 2 (attention_isa.cpp), and the
// backward takes p_ij = 2^((log2(e) s_ij - stats_i0) - stats_i1). Keeping m and l apart (rather
// than lse = m + log l) keeps log l when |m| is near the type's limit (a row masked everywhere
// with finfo.min), where m + log l rounds to m and p would sum to l instead of 1.
//
// Backward, with D_i = dout_i . out_i (= sum_j p_ij f_ij dpd_ij):
//   dv_j = sum_i p_ij f_ij dout_i,  dp_ij = f_ij (dout_i . v_j),  ds_ij = p_ij (dp_ij - D_i),
//   dq_i = scale sum_j ds_ij k_j,   dk_j = scale sum_i ds_ij q_i
//
// Threads: one parallel region per call, work split by thread id: the forward's units are
// (n, query block) tiles, the backward's are whole n (the thread owns dq/dk/dv of its n). Every
// element is computed by the same operations whoever computes it: results are bit-identical for
// any thread count. Small problems run on one thread.
#pragma once

#include <cstdint>

#include "runtime/isa.h"

namespace seqblocks {

// Where matrix n = b * heads + h of an operand starts and its row stride, in elements: element
// (n, i, c) at p[(n / heads) * batch + (n % heads) * head + i * row + c].
struct SdpaLayout {
  int64_t batch = 0, head = 0, row = 0;
  // (N, rows, cols) C-contiguous, with heads = 1.
  static SdpaLayout contiguous(int64_t rows, int64_t cols) { return {rows * cols, 0, cols}; }
};

template <class T>
struct SdpaArgs {
  int64_t n = 0, l = 0, s = 0, e = 0, ev = 0;
  // The layout of every (N, len, features) operand. Besides contiguous arrays, they describe
  // q, k, v read in place from a packed (B, L, 3, H, E) projection, out and dout as (B, L, H, Ev)
  // and dq, dk, dv written into a packed (B, L, 3, H, E) gradient: the layouts around multi-head
  // attention, so that neither direction copies heads apart or together.
  int64_t heads = 1;
  SdpaLayout q_at, k_at, v_at, out_at;
  SdpaLayout dout_at, dq_at, dk_at, dv_at;  // backward
  const T* q = nullptr;
  const T* k = nullptr;
  const T* v = nullptr;
  const T* mask = nullptr;  // null: no mask
  const int64_t* mask_off = nullptr;
  int64_t mask_sl = 0, mask_ss = 0;
  bool causal = false;
  T scale = 1;
  double dropout_p = 0.0;
  uint64_t seed = 0;
  T* out = nullptr;  // forward output (N, L, Ev); backward input
  T* stats = nullptr;  // forward output (N, L, 2), always contiguous; backward input
  const T* dout = nullptr;  // backward
  T* dq = nullptr;
  T* dk = nullptr;
  T* dv = nullptr;
  int nthreads = 1;
};

struct AttentionKernels {
  void (*sdpa_forward_f32)(const SdpaArgs<float>&);
  void (*sdpa_forward_f64)(const SdpaArgs<double>&);
  void (*sdpa_backward_f32)(const SdpaArgs<float>&);
  void (*sdpa_backward_f64)(const SdpaArgs<double>&);
};

template <class Isa>
const AttentionKernels& attention_kernels();

}  // namespace seqblocks
