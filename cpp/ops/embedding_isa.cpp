// Embedding kernels per ISA (see embedding.h).
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "ops/embedding.h"
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

template <class Isa, class T>
void embedding_forward(const int64_t* idx, int64_t n, const T* weight, int64_t dim, T* out, int nthreads) {
  const int nt = threads_for(n * dim, nthreads);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    int64_t lo, hi;
    thread_slice(n, omp_get_num_threads(), omp_get_thread_num(), 1, &lo, &hi);
    for (int64_t r = lo; r < hi; ++r) {
      std::memcpy(out + r * dim, weight + idx[r] * dim, static_cast<size_t>(dim) * sizeof(T));
    }
  }
}

// acc[0, dim) += row[0, dim)
template <class Isa, class T>
void add_row(T* acc, const T* row, int64_t dim) {
  using V = Vec<Isa, T>;
  constexpr int W = V::width;
  int64_t j = 0;
  for (; j + W <= dim; j += W) V::store(acc + j, V::add(V::load(acc + j), V::load(row + j)));
  if (j < dim) {
    const int t = static_cast<int>(dim - j);
    V::store_tail(acc + j, V::add(V::load_tail(acc + j, t), V::load_tail(row + j, t)), t);
  }
}

// First row v with cost(v) = offsets[v] + v >= target (cost is increasing in v).
static inline int64_t first_row_at(const int64_t* offsets, int64_t num, int64_t target) {
  int64_t lo = 0, hi = num;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (offsets[mid] + mid < target) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

template <class Isa, class T>
void embedding_backward(const int64_t* idx, int64_t n, const T* dy, int64_t num, int64_t dim, int64_t pad,
                        int64_t* order, int64_t* offsets, T* dweight, int nthreads) {
  // Stable counting sort of the positions by index value: order[offsets[v] .. offsets[v + 1]) are
  // the positions r with idx[r] == v, increasing.
  std::fill(offsets, offsets + num + 1, int64_t(0));
  for (int64_t r = 0; r < n; ++r) ++offsets[idx[r] + 1];
  for (int64_t v = 0; v < num; ++v) offsets[v + 1] += offsets[v];
  for (int64_t r = 0; r < n; ++r) order[offsets[idx[r]]++] = r;  // offsets[v] now = old offsets[v + 1]
  for (int64_t v = num; v > 0; --v) offsets[v] = offsets[v - 1];
  offsets[0] = 0;

  const int nt = threads_for(n * dim + num * dim, nthreads);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    DenormalsFlushed flush;
    const int tcount = omp_get_num_threads(), tid = omp_get_thread_num();
    // Rows split by cost (positions + 1 per row), each row owned by one thread.
    const int64_t total = n + num;
    const int64_t v0 = first_row_at(offsets, num, total * tid / tcount);
    const int64_t v1 = first_row_at(offsets, num, total * (tid + 1) / tcount);
    for (int64_t v = v0; v < v1; ++v) {
      T* acc = dweight + v * dim;
      std::fill(acc, acc + dim, T(0));
      if (v == pad) continue;
      for (int64_t k = offsets[v]; k < offsets[v + 1]; ++k) add_row<Isa, T>(acc, dy + order[k] * dim, dim);
    }
  }
}

}  // namespace

template <>
const EmbeddingKernels& embedding_kernels<TargetIsa>() {
  static const EmbeddingKernels table{
      &embedding_forward<TargetIsa, float>,
      &embedding_forward<TargetIsa, double>,
      &embedding_backward<TargetIsa, float>,
      &embedding_backward<TargetIsa, double>,
  };
  return table;
}

}  // namespace seqblocks
