// Residual add + layer norm kernels, forward and the backward's accumulation (formulas in
// add_layer_norm.h). Compiled once per ISA; layer norm itself is this ISA's layer norm kernel.
#include "ops/add_layer_norm.h"

#include <omp.h>

#include <algorithm>
#include <type_traits>

#include "ops/softmax.h"  // rowops: range split, threads_for
#include "runtime/denormals.h"
#include "runtime/isa_target.h"

namespace seqblocks {
namespace {

// z = a + b over (n,).
template <class Isa, class T>
void add_into(const T* a, const T* b, T* z, int64_t n) {
  using V = Vec<Isa, T>;
  constexpr int W = V::width;
  int64_t j = 0;
  for (; j + W <= n; j += W) V::store(z + j, V::add(V::load(a + j), V::load(b + j)));
  if (j < n) {
    const int rem = static_cast<int>(n - j);
    V::store_tail(z + j, V::add(V::load_tail(a + j, rem), V::load_tail(b + j, rem)), rem);
  }
}

// Rows added and normalized together: enough to amortize the call, few enough to stay in L1/L2.
static inline int64_t chunk_rows(int64_t k) {
  const int64_t rows = 16384 / (k > 0 ? k : 1);
  return rows < 1 ? 1 : (rows > 64 ? 64 : rows);
}

template <class Isa, class T>
void add_layer_norm_forward(const AddLayerNormForwardArgs<T>& a) {
  const int64_t rows = a.rows, k = a.k;
  const int nt = rowops::threads_for(rows * k, rows, a.nthreads);
  const LayerNormKernels& ln = layer_norm_kernels<Isa>();
  const int64_t chunk = chunk_rows(k);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    DenormalsFlushed ftz;
    const int team = omp_get_num_threads(), t = omp_get_thread_num();
    int64_t r0, r1;
    rowops::split_range(rows, team, t, &r0, &r1);
    for (int64_t c0 = r0; c0 < r1; c0 += chunk) {
      const int64_t c1 = std::min(r1, c0 + chunk);
      add_into<Isa, T>(a.x + c0 * k, a.r + c0 * k, a.s + c0 * k, (c1 - c0) * k);
      LayerNormForwardArgs<T> la;
      la.x = a.s + c0 * k;
      la.w = a.w;
      la.b = a.b;
      la.y = a.y + c0 * k;
      la.mean = a.mean ? a.mean + c0 : nullptr;
      la.rstd = a.rstd ? a.rstd + c0 : nullptr;
      la.rows = c1 - c0;
      la.k = k;
      la.eps = a.eps;
      la.nthreads = 1;  // inside this thread's rows: layer norm opens no region of its own
      if constexpr (std::is_same_v<T, float>) {
        ln.forward_f32(la);
      } else {
        ln.forward_f64(la);
      }
    }
  }
}

template <class Isa, class T>
void accumulate(T* dx, const T* ds, int64_t n, int nthreads) {
  const int nt = rowops::threads_for(n, n, nthreads);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    DenormalsFlushed ftz;
    int64_t j0, j1;
    rowops::split_range(n, omp_get_num_threads(), omp_get_thread_num(), &j0, &j1);
    add_into<Isa, T>(dx + j0, ds + j0, dx + j0, j1 - j0);
  }
}

}  // namespace

template <>
const AddLayerNormKernels& add_layer_norm_kernels<TargetIsa>() {
  static const AddLayerNormKernels table = {
      &add_layer_norm_forward<TargetIsa, float>,
      &add_layer_norm_forward<TargetIsa, double>,
      &accumulate<TargetIsa, float>,
      &accumulate<TargetIsa, double>,
  };
  return table;
}

}  // namespace seqblocks
