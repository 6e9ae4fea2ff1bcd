// Residual add with broadcasting and deterministic axis sums, per ISA (see elementwise.h).
#include <omp.h>

#include <algorithm>
#include <vector>

#include "ops/elementwise.h"
#include "ops/parallel.h"
#include "runtime/denormals.h"
// GCC 12 reports -Wmaybe-uninitialized inside avx512fintrin.h (its `__Y = __Y` idiom for undefined
// registers, GCC bug 105593) wherever Vec<Avx512> is inlined; silenced for those header lines only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "runtime/isa_target.h"
#pragma GCC diagnostic pop

namespace seqblocks {
namespace {

// y[0, n) = a[0, n) + b[0, n)
template <class Isa, class T>
void add_vector(const T* a, const T* b, T* y, int64_t n) {
  using V = Vec<Isa, T>;
  constexpr int W = V::width;
  int64_t i = 0;
  for (; i + W <= n; i += W) V::store(y + i, V::add(V::load(a + i), V::load(b + i)));
  if (i < n) {
    const int t = static_cast<int>(n - i);
    V::store_tail(y + i, V::add(V::load_tail(a + i, t), V::load_tail(b + i, t)), t);
  }
}

// y[0, n) = a[0, n) + s
template <class Isa, class T>
void add_scalar(const T* a, T s, T* y, int64_t n) {
  using V = Vec<Isa, T>;
  constexpr int W = V::width;
  const typename V::reg sv = V::set1(s);
  int64_t i = 0;
  for (; i + W <= n; i += W) V::store(y + i, V::add(V::load(a + i), sv));
  if (i < n) {
    const int t = static_cast<int>(n - i);
    V::store_tail(y + i, V::add(V::load_tail(a + i, t), sv), t);
  }
}

// a, y: (outer, mid, inner); b: (outer, inner) in mode 0, (mid,) in mode 1.
// The flat range is split among threads; each slice walks the rows it covers, a row being
// `inner` elements with a vector of b (mode 0, inner > 1) or a run sharing one element of b
// (mode 0 with inner == 1: b[o] over mid elements; mode 1: b[m] over inner elements).
template <class Isa, class T>
void add_broadcast(const T* a, const T* b, T* y, int mode, int64_t outer, int64_t mid, int64_t inner,
                   int nthreads) {
  const int64_t total = outer * mid * inner;
  if (total == 0) return;
  const bool vector_rows = mode == 0 && inner > 1;
  const int64_t row_len = (mode == 0 && inner == 1) ? mid : inner;
  const int nt = threads_for(total, nthreads);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    DenormalsFlushed flush;
    int64_t lo, hi;
    thread_slice(total, omp_get_num_threads(), omp_get_thread_num(), 64, &lo, &hi);
    while (lo < hi) {
      const int64_t r = lo / row_len, c = lo % row_len;
      const int64_t end = std::min(hi, (r + 1) * row_len);
      if (vector_rows) {
        add_vector<Isa, T>(a + lo, b + (r / mid) * inner + c, y + lo, end - lo);
      } else {
        add_scalar<Isa, T>(a + lo, mode == 0 ? b[r] : b[r % mid], y + lo, end - lo);
      }
      lo = end;
    }
  }
}

// sum of x[0, n): four vector accumulators (lane j of accumulator q sums the elements
// i == q*W + j mod 4W), combined in a fixed order, then the scalar tail.
template <class Isa, class T>
T sum_contiguous(const T* x, int64_t n) {
  using V = Vec<Isa, T>;
  constexpr int W = V::width;
  typename V::reg s0 = V::zero(), s1 = V::zero(), s2 = V::zero(), s3 = V::zero();
  int64_t i = 0;
  for (; i + 4 * W <= n; i += 4 * W) {
    s0 = V::add(s0, V::load(x + i));
    s1 = V::add(s1, V::load(x + i + W));
    s2 = V::add(s2, V::load(x + i + 2 * W));
    s3 = V::add(s3, V::load(x + i + 3 * W));
  }
  for (; i + W <= n; i += W) s0 = V::add(s0, V::load(x + i));
  if (i < n) s1 = V::add(s1, V::load_tail(x + i, static_cast<int>(n - i)));
  // Lanes added in index order, so the rounding is the same on every call and easy to state.
  alignas(64) T lanes[W];
  V::store(lanes, V::add(V::add(s0, s1), V::add(s2, s3)));
  T s = lanes[0];
  for (int j = 1; j < W; ++j) s += lanes[j];
  return s;
}

// out[0, inner) = sum over r < rows of x[r * inner + i]: blocks of 4 vectors of columns kept in
// registers while the rows stream by; each column is summed in row order.
template <class Isa, class T>
void sum_columns(const T* x, int64_t rows, int64_t inner, T* out) {
  using V = Vec<Isa, T>;
  constexpr int W = V::width;
  int64_t c = 0;
  for (; c + 4 * W <= inner; c += 4 * W) {
    typename V::reg s0 = V::zero(), s1 = V::zero(), s2 = V::zero(), s3 = V::zero();
    const T* p = x + c;
    for (int64_t r = 0; r < rows; ++r, p += inner) {
      s0 = V::add(s0, V::load(p));
      s1 = V::add(s1, V::load(p + W));
      s2 = V::add(s2, V::load(p + 2 * W));
      s3 = V::add(s3, V::load(p + 3 * W));
    }
    V::store(out + c, s0);
    V::store(out + c + W, s1);
    V::store(out + c + 2 * W, s2);
    V::store(out + c + 3 * W, s3);
  }
  for (; c < inner; c += W) {
    const int t = static_cast<int>(std::min<int64_t>(W, inner - c));
    typename V::reg s = V::zero();
    const T* p = x + c;
    if (t == W) {
      for (int64_t r = 0; r < rows; ++r, p += inner) s = V::add(s, V::load(p));
      V::store(out + c, s);
    } else {
      for (int64_t r = 0; r < rows; ++r, p += inner) s = V::add(s, V::load_tail(p, t));
      V::store_tail(out + c, s, t);
    }
  }
}

// out (outer, inner) = sum over m of x (outer, mid, inner), deterministic (see elementwise.h).
template <class Isa, class T>
void sum_axis(const T* x, T* out, int64_t outer, int64_t mid, int64_t inner, int nthreads) {
  const int64_t out_size = outer * inner;
  if (out_size == 0) return;
  if (mid == 0) {
    std::fill(out, out + out_size, T(0));
    return;
  }
  // Rows of the middle axis per chunk: about 16K elements, a function of the shape only.
  const int64_t chunk = std::max<int64_t>(1, 16384 / inner);
  const int64_t nchunks = (mid + chunk - 1) / chunk;
  const int64_t units = outer * nchunks;
  std::vector<T> partial(nchunks > 1 ? static_cast<size_t>(units * inner) : 0);
  T* dst = nchunks > 1 ? partial.data() : out;  // dst (outer, nchunks, inner)
  const int nt = static_cast<int>(std::min<int64_t>(threads_for(outer * mid * inner, nthreads), units));
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    DenormalsFlushed flush;
    int64_t lo, hi;
    thread_slice(units, omp_get_num_threads(), omp_get_thread_num(), 1, &lo, &hi);
    for (int64_t u = lo; u < hi; ++u) {
      const int64_t o = u / nchunks, ch = u % nchunks;
      const int64_t m0 = ch * chunk, rows = std::min(mid, m0 + chunk) - m0;
      const T* src = x + (o * mid + m0) * inner;
      if (inner == 1) {
        dst[u] = sum_contiguous<Isa, T>(src, rows);
      } else {
        sum_columns<Isa, T>(src, rows, inner, dst + u * inner);
      }
    }
  }
  if (nchunks == 1) return;
  const int nt2 = threads_for(units * inner, nthreads);
#pragma omp parallel num_threads(nt2) if (nt2 > 1)
  {
    DenormalsFlushed flush;
    int64_t lo, hi;
    thread_slice(out_size, omp_get_num_threads(), omp_get_thread_num(), 16, &lo, &hi);
    for (int64_t e = lo; e < hi; ++e) {
      const int64_t o = e / inner, i = e % inner;
      const T* p = dst + o * nchunks * inner + i;
      T s = p[0];
      for (int64_t ch = 1; ch < nchunks; ++ch) s += p[ch * inner];
      out[e] = s;
    }
  }
}

}  // namespace

template <>
const ElementwiseKernels& elementwise_kernels<TargetIsa>() {
  static const ElementwiseKernels table{
      &add_broadcast<TargetIsa, float>,
      &add_broadcast<TargetIsa, double>,
      &sum_axis<TargetIsa, float>,
      &sum_axis<TargetIsa, double>,
  };
  return table;
}

}  // namespace seqblocks
