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
using rowops::prefetch_lines_for_write;
using rowops::tail_mask;

// The cache lines of count elements at a, b (read) and c (write), once per 64 bytes.
template <class T>
inline void prefetch_row_triple(const T* a, const T* b, T* c, int count) {
  prefetch_lines(a, count);
  prefetch_lines(b, count);
  prefetch_lines_for_write(c, count);
}

// One row of the forward. x, y: (n,), n >= 1.
//   softmax:     y = exp(x - m) (stored, summed into s), then y *= 1/s
//   log_softmax: s = sum exp(x - m), then y = (x - m) - log s
// next_x/next_y: the next row (prefetched during the exp pass, which is compute-bound), or null.
template <class Isa, class T>
void softmax_row_forward(const T* x, T* y, int64_t n, bool log, const T* next_x, T* next_y) {
  using V = Vec<Isa, T>;
  using reg = typename V::reg;
  constexpr int W = V::width;
  const T m = rowops::row_max<Isa, T>(x, n);
  const reg vm = V::set1(m);
  reg s0 = V::zero(), s1 = V::zero();
  int64_t j = 0;
  const int rem = static_cast<int>(n % W);
  const int64_t full = n - rem;
  if (!log) {
    for (; j + 2 * W <= full; j += 2 * W) {
      if (next_x) {
        prefetch_lines(next_x + j, 2 * W);
        prefetch_lines_for_write(next_y + j, 2 * W);
      }
      const reg e0 = exp_approx<Isa, T>(V::sub(V::load(x + j), vm));
      const reg e1 = exp_approx<Isa, T>(V::sub(V::load(x + j + W), vm));
      V::store(y + j, e0);
      V::store(y + j + W, e1);
      s0 = V::add(s0, e0);
      s1 = V::add(s1, e1);
    }
    for (; j < full; j += W) {
      const reg e = exp_approx<Isa, T>(V::sub(V::load(x + j), vm));
      V::store(y + j, e);
      s0 = V::add(s0, e);
    }
    if (rem) {
      const reg e = V::select(tail_mask<Isa, T>(rem), exp_approx<Isa, T>(V::sub(V::load_tail(x + j, rem), vm)),
                              V::zero());
      V::store_tail(y + j, e, rem);
      s1 = V::add(s1, e);
    }
    const reg inv = V::set1(T(1) / V::hsum(V::add(s0, s1)));
    for (j = 0; j < full; j += W) V::store(y + j, V::mul(V::load(y + j), inv));
    if (rem) V::store_tail(y + j, V::mul(V::load_tail(y + j, rem), inv), rem);
    return;
  }
  for (; j + 2 * W <= full; j += 2 * W) {
    if (next_x) {
      prefetch_lines(next_x + j, 2 * W);
      prefetch_lines_for_write(next_y + j, 2 * W);
    }
    s0 = V::add(s0, exp_approx<Isa, T>(V::sub(V::load(x + j), vm)));
    s1 = V::add(s1, exp_approx<Isa, T>(V::sub(V::load(x + j + W), vm)));
  }
  for (; j < full; j += W) s0 = V::add(s0, exp_approx<Isa, T>(V::sub(V::load(x + j), vm)));
  if (rem) {
    s1 = V::add(s1, V::select(tail_mask<Isa, T>(rem),
                              exp_approx<Isa, T>(V::sub(V::load_tail(x + j, rem), vm)), V::zero()));
  }
  // (x - m) - log s, not x - (m + log s): m + log s would lose log s when |m| is large.
  const reg logs = V::set1(std::log(V::hsum(V::add(s0, s1))));
  for (j = 0; j < full; j += W) V::store(y + j, V::sub(V::sub(V::load(x + j), vm), logs));
  if (rem) V::store_tail(y + j, V::sub(V::sub(V::load_tail(x + j, rem), vm), logs), rem);
}

// One row of the backward. dy, y, dx: (n,).
//   softmax:     c = sum dy*y,  dx = y * (dy - c)
//   log_softmax: c = sum dy,    dx = dy - exp(y) * c
// next_dy, next_y, next_dx: the next row (prefetched during the second pass), or null.
template <class Isa, class T>
void softmax_row_backward(const T* dy, const T* y, T* dx, int64_t n, bool log, const T* next_dy, const T* next_y,
                          T* next_dx) {
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
    const reg c = V::set1(V::hsum(V::add(c0, c1)));
    for (j = 0; j < full; j += W) {
      if (next_dy) prefetch_row_triple(next_dy + j, next_y + j, next_dx + j, W);
      V::store(dx + j, V::mul(V::load(y + j), V::sub(V::load(dy + j), c)));
    }
    if (rem) {
      V::store_tail(dx + j, V::mul(V::load_tail(y + j, rem), V::sub(V::load_tail(dy + j, rem), c)), rem);
    }
    return;
  }
  for (; j + 2 * W <= full; j += 2 * W) {
    c0 = V::add(c0, V::load(dy + j));
    c1 = V::add(c1, V::load(dy + j + W));
  }
  for (; j < full; j += W) c0 = V::add(c0, V::load(dy + j));
  if (rem) c1 = V::add(c1, V::load_tail(dy + j, rem));
  const reg c = V::set1(V::hsum(V::add(c0, c1)));
  for (j = 0; j < full; j += W) {
    if (next_dy) prefetch_row_triple(next_dy + j, next_y + j, next_dx + j, W);
    V::store(dx + j, V::fnmadd(exp_approx<Isa, T>(V::load(y + j)), c, V::load(dy + j)));
  }
  if (rem) {
    V::store_tail(dx + j, V::fnmadd(exp_approx<Isa, T>(V::load_tail(y + j, rem)), c, V::load_tail(dy + j, rem)),
                  rem);
  }
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
      const bool more = r + 1 < end;
      softmax_row_forward<Isa, T>(x + r * n, y + r * n, n, log, more ? x + (r + 1) * n : nullptr,
                                  more ? y + (r + 1) * n : nullptr);
    }
  }
}

// dy, y, dx: (rows, n).
template <class Isa, class T>
void softmax_backward(const T* dy, const T* y, T* dx, int64_t rows, int64_t n, bool log, int nthreads) {
  if (rows <= 0 || n <= 0) return;
  const int nt = rowops::threads_for(rows * n, rows, nthreads);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    DenormalsFlushed ftz;
    int64_t begin, end;
    rowops::split_range(rows, omp_get_num_threads(), omp_get_thread_num(), &begin, &end);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t next = r + 1 < end ? (r + 1) * n : -1;
      softmax_row_backward<Isa, T>(dy + r * n, y + r * n, dx + r * n, n, log, next < 0 ? nullptr : dy + next,
                                   next < 0 ? nullptr : y + next, next < 0 ? nullptr : dx + next);
    }
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
