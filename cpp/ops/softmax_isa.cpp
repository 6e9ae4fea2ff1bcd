// Softmax / log-softmax kernels over the last dimension, forward and backward side by side
// (formulas in softmax.h). Compiled once per ISA.
#include "ops/softmax.h"

#include <omp.h>

#include <cmath>

#include "runtime/denormals.h"
#include "runtime/isa_target.h"

namespace seqblocks {
namespace {

using rowops::exp_approx;
using rowops::prefetch_lines;
using rowops::tail_mask;

// One row of the forward. x, y: (n,), n >= 1.
//   softmax:     e = exp(x - m) stored in y, s = sum e, then y = e * (1/s) (in L1)
//   log_softmax: s = sum exp(x - m), then y = (x - m) - log s
// next_x: the next row, prefetched during the exp pass (compute-bound), or null. y is written with
// ordinary stores: the backward reads it again, and streaming it out of the caches costs more
// (measured) than the read-for-ownership it saves.
template <class Isa, class T>
void softmax_row_forward(const T* x, T* y, int64_t n, bool log, const T* next_x) {
  using V = Vec<Isa, T>;
  using reg = typename V::reg;
  constexpr int W = V::width;
  const T m = rowops::row_max<Isa, T>(x, n);
  const reg vm = V::set1(m);
  reg s0 = V::zero(), s1 = V::zero();
  int64_t j = 0;
  const int rem = static_cast<int>(n % W);
  const int64_t full = n - rem;
  T* e_out = log ? nullptr : y;
  for (; j + 2 * W <= full; j += 2 * W) {
    if (next_x) prefetch_lines(next_x + j, 2 * W);
    const reg e0 = exp_approx<Isa, T>(V::sub(V::load(x + j), vm));
    const reg e1 = exp_approx<Isa, T>(V::sub(V::load(x + j + W), vm));
    if (e_out) {
      V::store(e_out + j, e0);
      V::store(e_out + j + W, e1);
    }
    s0 = V::add(s0, e0);
    s1 = V::add(s1, e1);
  }
  for (; j < full; j += W) {
    const reg e = exp_approx<Isa, T>(V::sub(V::load(x + j), vm));
    if (e_out) V::store(e_out + j, e);
    s0 = V::add(s0, e);
  }
  if (rem) {
    const reg e = V::select(tail_mask<Isa, T>(rem), exp_approx<Isa, T>(V::sub(V::load_tail(x + j, rem), vm)),
                            V::zero());
    if (e_out) V::store_tail(e_out + j, e, rem);
    s1 = V::add(s1, e);
  }
  const T sum = V::hsum(V::add(s0, s1));
  if (!log) {
    const reg inv = V::set1(T(1) / sum);
    rowops::write_row<Isa, T>(y, n, false, [&](int64_t at, int lanes) {
      return V::mul(lanes == W ? V::load(y + at) : V::load_tail(y + at, lanes), inv);
    });
    return;
  }
  // (x - m) - log s, not x - (m + log s): m + log s would lose log s when |m| is large.
  const reg logs = V::set1(std::log(sum));
  rowops::write_row<Isa, T>(y, n, false, [&](int64_t at, int lanes) {
    return V::sub(V::sub(lanes == W ? V::load(x + at) : V::load_tail(x + at, lanes), vm), logs);
  });
}

// One row of the backward. dy, y, dx: (n,).
//   softmax:     c = sum dy*y,  dx = y * (dy - c)
//   log_softmax: c = sum dy,    dx = dy - exp(y) * c
// next_dy, next_y: the next row (prefetched during the second pass), or null.
template <class Isa, class T>
void softmax_row_backward(const T* dy, const T* y, T* dx, int64_t n, bool log, const T* next_dy, const T* next_y,
                          bool streaming) {
  using V = Vec<Isa, T>;
  using reg = typename V::reg;
  constexpr int W = V::width;
  const int rem = static_cast<int>(n % W);
  const int64_t full = n - rem;
  reg c0 = V::zero(), c1 = V::zero();
  int64_t j = 0;
  if (!log) {
    for (; j + 2 * W <= full; j += 2 * W) {
      c0 = V::fmadd(V::load(dy + j), V::load(y + j), c0);
      c1 = V::fmadd(V::load(dy + j + W), V::load(y + j + W), c1);
    }
    for (; j < full; j += W) c0 = V::fmadd(V::load(dy + j), V::load(y + j), c0);
    if (rem) c1 = V::fmadd(V::load_tail(dy + j, rem), V::load_tail(y + j, rem), c1);
  } else {
    for (; j + 2 * W <= full; j += 2 * W) {
      c0 = V::add(c0, V::load(dy + j));
      c1 = V::add(c1, V::load(dy + j + W));
    }
    for (; j < full; j += W) c0 = V::add(c0, V::load(dy + j));
    if (rem) c1 = V::add(c1, V::load_tail(dy + j, rem));
  }
  const reg c = V::set1(V::hsum(V::add(c0, c1)));
  rowops::write_row<Isa, T>(dx, n, streaming, [&](int64_t at, int lanes) {
    const bool full_vec = lanes == W;
    if (full_vec && next_dy) {
      prefetch_lines(next_dy + at, W);
      prefetch_lines(next_y + at, W);
    }
    const reg d = full_vec ? V::load(dy + at) : V::load_tail(dy + at, lanes);
    const reg yv = full_vec ? V::load(y + at) : V::load_tail(y + at, lanes);
    return log ? V::fnmadd(exp_approx<Isa, T>(yv), c, d) : V::mul(yv, V::sub(d, c));
  });
}

// x, y: (rows, n).
template <class Isa, class T>
void softmax_forward(const T* x, T* y, int64_t rows, int64_t n, bool log, int nthreads) {
  if (rows <= 0 || n <= 0) return;
  const int nt = rowops::threads_for(rows * n, rows, nthreads);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    DenormalsFlushed ftz;
    int64_t begin, end;
    rowops::split_range(rows, omp_get_num_threads(), omp_get_thread_num(), &begin, &end);
    for (int64_t r = begin; r < end; ++r) {
      softmax_row_forward<Isa, T>(x + r * n, y + r * n, n, log, r + 1 < end ? x + (r + 1) * n : nullptr);
    }
  }
}

// dy, y, dx: (rows, n).
template <class Isa, class T>
void softmax_backward(const T* dy, const T* y, T* dx, int64_t rows, int64_t n, bool log, int nthreads) {
  if (rows <= 0 || n <= 0) return;
  const int nt = rowops::threads_for(rows * n, rows, nthreads);
  const bool streaming = rowops::stream_worthwhile(rows * n, sizeof(T));
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    DenormalsFlushed ftz;
    int64_t begin, end;
    rowops::split_range(rows, omp_get_num_threads(), omp_get_thread_num(), &begin, &end);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t next = r + 1 < end ? (r + 1) * n : -1;
      softmax_row_backward<Isa, T>(dy + r * n, y + r * n, dx + r * n, n, log, next < 0 ? nullptr : dy + next,
                                   next < 0 ? nullptr : y + next, streaming);
    }
    rowops::stream_fence();
  }
}

}  // namespace

template <>
const SoftmaxKernels& softmax_kernels<TargetIsa>() {
  static const SoftmaxKernels table = {
      &softmax_forward<TargetIsa, float>,
      &softmax_forward<TargetIsa, double>,
      &softmax_backward<TargetIsa, float>,
      &softmax_backward<TargetIsa, double>,
  };
  return table;
}

}  // namespace seqblocks
