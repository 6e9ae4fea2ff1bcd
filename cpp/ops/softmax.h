// Softmax and log-softmax over the last, contiguous dimension of a (rows, n) matrix, forward and
// backward (the Python layer moves any other dim last). Also the row helpers (namespace rowops)
// shared with layer_norm and cross_entropy: a vectorized exp, tail masks, the row max, prefetch of
// the next row, streaming stores and the thread split.
//
//   m = max_j x_j,  s = sum_j exp(x_j - m)
//   softmax:      y_j = exp(x_j - m) / s          dx_j = y_j * (dy_j - sum_k dy_k y_k)
//   log_softmax:  y_j = (x_j - m) - log(s)        dx_j = dy_j - exp(y_j) * sum_k dy_k
//
// Rows are split across the threads of one OpenMP region; a row is never split, so results are
// bit-identical for any thread count.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "runtime/isa.h"
#include "simd/vec.h"

#if defined(__SSE__) || defined(__x86_64__)
#include <immintrin.h>
#endif

namespace seqblocks {

struct SoftmaxKernels {
  // x, y: (rows, n) row-major. log selects log_softmax.
  void (*forward_f32)(const float* x, float* y, int64_t rows, int64_t n, bool log, int nthreads);
  void (*forward_f64)(const double* x, double* y, int64_t rows, int64_t n, bool log, int nthreads);
  // dy, y (the forward's output), dx: (rows, n).
  void (*backward_f32)(const float* dy, const float* y, float* dx, int64_t rows, int64_t n, bool log,
                       int nthreads);
  void (*backward_f64)(const double* dy, const double* y, double* dx, int64_t rows, int64_t n, bool log,
                       int nthreads);
};

template <class Isa>
const SoftmaxKernels& softmax_kernels();

namespace rowops {

// [begin, end) of the t-th of nt near-equal parts of [0, total).
static inline void split_range(int64_t total, int nt, int t, int64_t* begin, int64_t* end) {
  *begin = total * t / nt;
  *end = total * (t + 1) / nt;
}

// Threads worth starting for `work` element-operations (small problems run on one thread).
static inline int threads_for(int64_t work, int64_t rows, int nthreads) {
  constexpr int64_t kMinWorkPerThread = 16384;
  int64_t nt = work / kMinWorkPerThread;
  if (nt > nthreads) nt = nthreads;
  if (nt > rows) nt = rows;
  return nt < 1 ? 1 : static_cast<int>(nt);
}

// Prefetch the cache lines holding count elements from p (into L1; the next row is fetched
// while the current one is computed, as the hardware prefetcher stops at page boundaries).
template <class T>
inline void prefetch_lines(const T* p, int64_t count) {
  for (int64_t i = 0; i < count; i += 64 / static_cast<int64_t>(sizeof(T))) __builtin_prefetch(p + i, 0, 3);
}
template <class T>
inline void prefetch_lines_for_write(T* p, int64_t count) {
  for (int64_t i = 0; i < count; i += 64 / static_cast<int64_t>(sizeof(T))) __builtin_prefetch(p + i, 1, 3);
}

// Non-temporal ("streaming") full-vector store for outputs that are written once and not read
// back by the kernel: it skips the read-for-ownership of the destination line (a third of the
// memory traffic of a read-one-write-one pass). p must be aligned to the vector width (see
// stream_head); the writing thread calls stream_fence() before the data is read elsewhere.
template <class Isa, class T>
inline void stream_store(T* p, typename Vec<Isa, T>::reg v) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<Isa, Avx512>) {
    if constexpr (std::is_same_v<T, float>) _mm512_stream_ps(p, v); else _mm512_stream_pd(p, v);
    return;
  }
#endif
#if defined(__AVX2__)
  if constexpr (std::is_same_v<Isa, Avx2>) {
    if constexpr (std::is_same_v<T, float>) _mm256_stream_ps(p, v); else _mm256_stream_pd(p, v);
    return;
  }
#endif
  Vec<Isa, T>::store(p, v);
}

// Elements before p + head is aligned for stream_store (0 <= head < width).
template <class Isa, class T>
inline int stream_head(const T* p) {
  constexpr int64_t bytes = Vec<Isa, T>::width * static_cast<int64_t>(sizeof(T));
  const int64_t mis = static_cast<int64_t>(reinterpret_cast<uintptr_t>(p) % bytes);
  if (mis % static_cast<int64_t>(sizeof(T)) != 0) return -1;  // never aligned: plain stores
  return static_cast<int>(((bytes - mis) % bytes) / static_cast<int64_t>(sizeof(T)));
}

// Streaming stores pay off for outputs larger than the caches a consumer would find them in.
static inline bool stream_worthwhile(int64_t elements, int64_t element_bytes) {
  constexpr int64_t kStreamBytes = int64_t{4} << 20;  // 2x the 2 MiB L2 of current server cores
  return elements * element_bytes >= kStreamBytes;
}

static inline void stream_fence() {
#if defined(__SSE__) || defined(__x86_64__)
  _mm_sfence();
#endif
}

// out[0, n) = value(j, lanes) for consecutive pieces [j, j + lanes): masked pieces (lanes < width)
// at the start up to the first aligned element and at the end, full vectors (lanes == width)
// between. With streaming, the full vectors are written with stream_store; the caller fences.
template <class Isa, class T, class F>
inline void write_row(T* out, int64_t n, bool streaming, F&& value) {
  using V = Vec<Isa, T>;
  constexpr int W = V::width;
  int64_t head = streaming ? stream_head<Isa, T>(out) : -1;
  const bool stream = head >= 0;
  head = stream ? (head < n ? head : n) : 0;
  if (head > 0) V::store_tail(out, value(int64_t{0}, static_cast<int>(head)), static_cast<int>(head));
  int64_t j = head;
  if (stream) {
    for (; j + W <= n; j += W) stream_store<Isa, T>(out + j, value(j, W));
  } else {
    for (; j + W <= n; j += W) V::store(out + j, value(j, W));
  }
  if (j < n) V::store_tail(out + j, value(j, static_cast<int>(n - j)), static_cast<int>(n - j));
}

// Lanes [0, n) active, the rest inactive (0 < n < width).
template <class Isa, class T>
inline typename Vec<Isa, T>::mask tail_mask(int n) {
  using V = Vec<Isa, T>;
  alignas(64) T lanes[V::width];
  for (int i = 0; i < V::width; ++i) lanes[i] = static_cast<T>(i);
  return V::lt(V::load(lanes), V::set1(static_cast<T>(n)));
}

// exp(x) for x <= 88.3 (float) / 709.4 (double) (the callers pass x - max <= 0), within 2 ULP
// (1.0 ULP measured over the whole range on every ISA, tests/test_softmax.py):
// Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2 (ln2 split in a high part exact in a few bits
// and a low part), exp(r) = 1 + r + r^2 q(r), times 2^n (mul_pow2i). q is a degree-4
// polynomial for float (least-squares fit of (e^r - 1 - r) / r^2 for relative error,
// truncation 3e-9 = 0.05 ULP) and the degree-11 Taylor polynomial for double (truncation below
// 0.1 ULP). Inputs are clamped at -87.5 / -709 so that 2^n stays normal; results below the
// smallest normal number are then flushed to 0 by the FTZ mode every kernel runs under
// (DenormalsFlushed). exp(-inf) = 0; NaN propagates.
template <class Isa, class T>
inline typename Vec<Isa, T>::reg exp_approx(typename Vec<Isa, T>::reg x) {
  using V = Vec<Isa, T>;
  using reg = typename V::reg;
  constexpr bool f32 = std::is_same_v<T, float>;
  const T lowest = f32 ? T(-87.5) : T(-709.0);  // keeps 2^n normal (n >= -126 / -1023 -> 0)
  const T log2e = T(1.4426950408889634);
  const T ln2_hi = f32 ? T(0.693359375) : T(6.93147180369123816490e-01);
  const T ln2_lo = f32 ? T(-2.12194440e-4) : T(1.90821492927058770002e-10);
  const reg xc = V::max(V::set1(lowest), x);  // NaN stays NaN (max returns its second operand)
  const reg n = V::round_nearest(V::mul(xc, V::set1(log2e)));
  reg r = V::fnmadd(n, V::set1(ln2_hi), xc);
  r = V::fnmadd(n, V::set1(ln2_lo), r);
  reg p;
  if constexpr (f32) {
    p = V::set1(T(0.0013814190169796348));
    p = V::fmadd(p, r, V::set1(T(0.008368914015591145)));
    p = V::fmadd(p, r, V::set1(T(0.04166840761899948)));
    p = V::fmadd(p, r, V::set1(T(0.1666651964187622)));
    p = V::fmadd(p, r, V::set1(T(0.4999999403953552)));
  } else {
    p = V::set1(T(1.0 / 6227020800.0));
    p = V::fmadd(p, r, V::set1(T(1.0 / 479001600.0)));
    p = V::fmadd(p, r, V::set1(T(1.0 / 39916800.0)));
    p = V::fmadd(p, r, V::set1(T(1.0 / 3628800.0)));
    p = V::fmadd(p, r, V::set1(T(1.0 / 362880.0)));
    p = V::fmadd(p, r, V::set1(T(1.0 / 40320.0)));
    p = V::fmadd(p, r, V::set1(T(1.0 / 5040.0)));
    p = V::fmadd(p, r, V::set1(T(1.0 / 720.0)));
    p = V::fmadd(p, r, V::set1(T(1.0 / 120.0)));
    p = V::fmadd(p, r, V::set1(T(1.0 / 24.0)));
    p = V::fmadd(p, r, V::set1(T(1.0 / 6.0)));
    p = V::fmadd(p, r, V::set1(T(0.5)));
  }
  // exp(r) = 1 + (r + r^2 q(r)): the small terms first so that 1 is added last.
  p = V::fmadd(V::mul(p, r), r, r);
  p = V::add(p, V::set1(T(1)));
  return V::mul_pow2i(p, n);
}

// 2^x for x < 127.5 (float) / 1023.5 (double; the callers pass scores minus their row maximum,
// about 0 at most): softmax with scores kept in base 2 (the scale
// log2(e) folded into an earlier product), which saves exp_approx's multiply by log2(e) and its
// second reduction step. x = n + f with n = round(x) and f = x - n exact, |f| <= 1/2.
// float: 2^f = 1 + f q(f), q of degree 5 fitted for relative error by tools/fit_exp2.py
// (truncation 2.0e-9 = 0.03 ULP); max error 0.93 ULP of 2^f in float arithmetic with FMA over a
// 2M-point sweep of [-1/2, 1/2] (the same script); the scaling by 2^n is exact.
// double (gradient checks, not speed): exp_approx(x ln 2), whose rounding of x ln 2 costs
// |x| 2^-53 relative. float inputs are clamped at -127: 2^n is then normal or, at the clamp,
// p 2^-127 is subnormal and flushed to 0 by the FTZ mode of DenormalsFlushed (exp_approx
// clamps double inputs itself). 2^-inf = 0; NaN propagates.
// 10 vector operations per register (float), against 13 for exp_approx.
template <class Isa, class T>
inline typename Vec<Isa, T>::reg exp2_approx(typename Vec<Isa, T>::reg x) {
  using V = Vec<Isa, T>;
  using reg = typename V::reg;
  if constexpr (std::is_same_v<T, float>) {
    const reg xc = V::max(V::set1(-127.0f), x);  // NaN stays NaN (max returns its second operand)
    const reg n = V::round_nearest(xc);
    const reg f = V::sub(xc, n);
    reg p = V::set1(0.00015353362f);
    p = V::fmadd(p, f, V::set1(0.0013398875f));
    p = V::fmadd(p, f, V::set1(0.00961843692f));
    p = V::fmadd(p, f, V::set1(0.0555033237f));
    p = V::fmadd(p, f, V::set1(0.240226477f));
    p = V::fmadd(p, f, V::set1(0.693147182f));
    p = V::fmadd(p, f, V::set1(1.0f));
    return V::mul_pow2i(p, n);
  } else {
    return exp_approx<Isa, T>(V::mul(x, V::set1(T(0.6931471805599453))));
  }
}

// max_j x_j over a row of n >= 1 elements. A NaN may be skipped here; the callers still return
// NaN for that row, because exp(NaN - m) makes the sum s NaN.
template <class Isa, class T>
inline T row_max(const T* x, int64_t n) {
  using V = Vec<Isa, T>;
  constexpr int W = V::width;
  const T ninf = -std::numeric_limits<T>::infinity();
  typename V::reg m0 = V::set1(ninf), m1 = V::set1(ninf);
  int64_t j = 0;
  for (; j + 2 * W <= n; j += 2 * W) {
    m0 = V::max(m0, V::load(x + j));
    m1 = V::max(m1, V::load(x + j + W));
  }
  for (; j + W <= n; j += W) m0 = V::max(m0, V::load(x + j));
  m0 = V::max(m0, m1);
  alignas(64) T lanes[W];
  V::store(lanes, m0);
  T m = lanes[0];
  for (int i = 1; i < W; ++i) m = lanes[i] > m ? lanes[i] : m;
  for (; j < n; ++j) m = x[j] > m ? x[j] : m;
  return m;
}

}  // namespace rowops
}  // namespace seqblocks
