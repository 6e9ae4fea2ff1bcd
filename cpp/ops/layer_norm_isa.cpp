// Layer norm kernels, forward and backward side by side (formulas in layer_norm.h).
// Compiled once per ISA.
#include "ops/layer_norm.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/softmax.h"  // rowops: tail masks, prefetch, range split
#include "runtime/denormals.h"
#include "runtime/isa_target.h"

namespace seqblocks {
namespace {

using rowops::prefetch_lines;
using rowops::tail_mask;

// sum_j x_j over (n,).
template <class Isa, class T>
T row_sum(const T* x, int64_t n) {
  using V = Vec<Isa, T>;
  constexpr int W = V::width;
  typename V::reg s0 = V::zero(), s1 = V::zero();
  int64_t j = 0;
  for (; j + 2 * W <= n; j += 2 * W) {
    s0 = V::add(s0, V::load(x + j));
    s1 = V::add(s1, V::load(x + j + W));
  }
  for (; j + W <= n; j += W) s0 = V::add(s0, V::load(x + j));
  if (j < n) s1 = V::add(s1, V::load_tail(x + j, static_cast<int>(n - j)));
  return V::hsum(V::add(s0, s1));
}

// sum_j (x_j - mean)^2 over (n,).
template <class Isa, class T>
T row_sum_sq_dev(const T* x, int64_t n, T mean) {
  using V = Vec<Isa, T>;
  constexpr int W = V::width;
  const typename V::reg vm = V::set1(mean);
  typename V::reg s0 = V::zero(), s1 = V::zero();
  int64_t j = 0;
  for (; j + 2 * W <= n; j += 2 * W) {
    const auto d0 = V::sub(V::load(x + j), vm);
    const auto d1 = V::sub(V::load(x + j + W), vm);
    s0 = V::fmadd(d0, d0, s0);
    s1 = V::fmadd(d1, d1, s1);
  }
  for (; j + W <= n; j += W) {
    const auto d = V::sub(V::load(x + j), vm);
    s0 = V::fmadd(d, d, s0);
  }
  if (j < n) {
    const int rem = static_cast<int>(n - j);
    const auto d = V::select(tail_mask<Isa, T>(rem), V::sub(V::load_tail(x + j, rem), vm), V::zero());
    s1 = V::fmadd(d, d, s1);
  }
  return V::hsum(V::add(s0, s1));
}

// y = (x - mean) * rstd * w + b over one row; next_x: the next row to prefetch, or null.
template <class Isa, class T, bool HasW, bool HasB>
void normalize_row(const T* x, const T* w, const T* b, T* y, int64_t k, T mean, T rstd, const T* next_x,
                   bool streaming) {
  using V = Vec<Isa, T>;
  constexpr int W = V::width;
  const auto vm = V::set1(mean), vr = V::set1(rstd);
  rowops::write_row<Isa, T>(y, k, streaming, [&](int64_t at, int lanes) {
    const bool full = lanes == W;
    if (full && next_x) prefetch_lines(next_x + at, W);
    const auto a = V::mul(V::sub(full ? V::load(x + at) : V::load_tail(x + at, lanes), vm), vr);
    if constexpr (HasW && HasB) {
      return V::fmadd(a, full ? V::load(w + at) : V::load_tail(w + at, lanes),
                      full ? V::load(b + at) : V::load_tail(b + at, lanes));
    } else if constexpr (HasW) {
      return V::mul(a, full ? V::load(w + at) : V::load_tail(w + at, lanes));
    } else if constexpr (HasB) {
      return V::add(a, full ? V::load(b + at) : V::load_tail(b + at, lanes));
    } else {
      return a;
    }
  });
}

template <class Isa, class T, bool HasW, bool HasB>
void forward_rows(const LayerNormForwardArgs<T>& a, int64_t begin, int64_t end) {
  const int64_t k = a.k;
  const bool streaming = rowops::stream_worthwhile(a.rows * k, sizeof(T));
  for (int64_t r = begin; r < end; ++r) {
    const T* x = a.x + r * k;
    const T mean = row_sum<Isa, T>(x, k) / static_cast<T>(k);
    const T var = row_sum_sq_dev<Isa, T>(x, k, mean) / static_cast<T>(k);
    const T rstd = static_cast<T>(1) / std::sqrt(var + static_cast<T>(a.eps));
    if (a.mean) {
      a.mean[r] = mean;
      a.rstd[r] = rstd;
    }
    const bool more = r + 1 < end;
    normalize_row<Isa, T, HasW, HasB>(x, a.w, a.b, a.y + r * k, k, mean, rstd, more ? x + k : nullptr, streaming);
  }
}

template <class Isa, class T>
void layer_norm_forward(const LayerNormForwardArgs<T>& a) {
  if (a.rows <= 0 || a.k <= 0) return;
  const int nt = rowops::threads_for(a.rows * a.k, a.rows, a.nthreads);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    DenormalsFlushed ftz;
    int64_t begin, end;
    rowops::split_range(a.rows, omp_get_num_threads(), omp_get_thread_num(), &begin, &end);
    if (a.w && a.b) {
      forward_rows<Isa, T, true, true>(a, begin, end);
    } else if (a.w) {
      forward_rows<Isa, T, true, false>(a, begin, end);
    } else if (a.b) {
      forward_rows<Isa, T, false, true>(a, begin, end);
    } else {
      forward_rows<Isa, T, false, false>(a, begin, end);
    }
    rowops::stream_fence();  // y may have been written with streaming stores
  }
}

// One row of the backward. With g = dy * w (or dy) and xhat = (x - mean) * rstd:
//   pass 1: sg = sum g, sgx = sum g * xhat; pw += dy * xhat, pb += dy (the block's partials)
//   pass 2: dx = g * rstd - (rstd * sg / k) - xhat * (rstd * sgx / k)
template <class Isa, class T, bool HasW, bool Partials>
void backward_row(const T* dy, const T* x, const T* w, T* dx, int64_t k, T mean, T rstd, T* pw, T* pb,
                  const T* next_dy, const T* next_x, bool streaming) {
  using V = Vec<Isa, T>;
  using reg = typename V::reg;
  constexpr int W = V::width;
  const reg vm = V::set1(mean), vr = V::set1(rstd);
  const int rem = static_cast<int>(k % W);
  const int64_t full = k - rem;
  reg sg = V::zero(), sgx = V::zero();
  int64_t j = 0;
  for (; j < full; j += W) {
    const reg d = V::load(dy + j);
    const reg xh = V::mul(V::sub(V::load(x + j), vm), vr);
    const reg g = HasW ? V::mul(d, V::load(w + j)) : d;
    sg = V::add(sg, g);
    sgx = V::fmadd(g, xh, sgx);
    if constexpr (Partials) {
      V::store(pw + j, V::fmadd(d, xh, V::load(pw + j)));
      V::store(pb + j, V::add(V::load(pb + j), d));
    }
  }
  if (rem) {
    const reg d = V::load_tail(dy + j, rem);  // inactive lanes 0, so g and dy * xhat are 0 there
    const reg xh = V::mul(V::sub(V::load_tail(x + j, rem), vm), vr);
    const reg g = HasW ? V::mul(d, V::load_tail(w + j, rem)) : d;
    sg = V::add(sg, g);
    sgx = V::fmadd(g, xh, sgx);
    if constexpr (Partials) {
      V::store_tail(pw + j, V::fmadd(d, xh, V::load_tail(pw + j, rem)), rem);
      V::store_tail(pb + j, V::add(V::load_tail(pb + j, rem), d), rem);
    }
  }
  const T inv_k = static_cast<T>(1) / static_cast<T>(k);
  const reg c1 = V::set1(-rstd * V::hsum(sg) * inv_k);
  const reg c2 = V::set1(rstd * V::hsum(sgx) * inv_k);
  // dx is only written: streaming stores for large outputs.
  rowops::write_row<Isa, T>(dx, k, streaming, [&](int64_t at, int lanes) {
    const bool full = lanes == W;
    if (full && next_dy) {
      prefetch_lines(next_dy + at, W);
      prefetch_lines(next_x + at, W);
    }
    const reg d = full ? V::load(dy + at) : V::load_tail(dy + at, lanes);
    const reg xh = V::mul(V::sub(full ? V::load(x + at) : V::load_tail(x + at, lanes), vm), vr);
    const reg g = HasW ? V::mul(d, full ? V::load(w + at) : V::load_tail(w + at, lanes)) : d;
    return V::fnmadd(xh, c2, V::fmadd(g, vr, c1));
  });
}

template <class Isa, class T, bool HasW, bool Partials>
void backward_blocks(const LayerNormBackwardArgs<T>& a, int64_t block_rows, T* partials, int64_t nblocks,
                     int64_t first, int64_t last) {
  const int64_t k = a.k;
  for (int64_t blk = first; blk < last; ++blk) {
    T* pw = Partials ? partials + blk * k : nullptr;
    T* pb = Partials ? partials + (nblocks + blk) * k : nullptr;
    if constexpr (Partials) {
      for (int64_t j = 0; j < k; ++j) pw[j] = pb[j] = T(0);
    }
    const int64_t r0 = blk * block_rows;
    const int64_t r1 = std::min(a.rows, r0 + block_rows);
    for (int64_t r = r0; r < r1; ++r) {
      const bool more = r + 1 < r1;
      const int64_t o = r * k;
      backward_row<Isa, T, HasW, Partials>(a.dy + o, a.x + o, a.w, a.dx + o, k, a.mean[r], a.rstd[r], pw, pb,
                                           more ? a.dy + o + k : nullptr, more ? a.x + o + k : nullptr,
                                           rowops::stream_worthwhile(a.rows * k, sizeof(T)));
    }
  }
}

// out[j] = sum over blocks (in block order) of part[blk * k + j], for j in [j0, j1).
template <class Isa, class T>
void sum_partials(const T* part, int64_t nblocks, int64_t k, int64_t j0, int64_t j1, T* out) {
  using V = Vec<Isa, T>;
  constexpr int W = V::width;
  int64_t j = j0;
  for (; j + W <= j1; j += W) {
    typename V::reg s = V::load(part + j);
    for (int64_t blk = 1; blk < nblocks; ++blk) s = V::add(s, V::load(part + blk * k + j));
    V::store(out + j, s);
  }
  for (; j < j1; ++j) {
    T s = part[j];
    for (int64_t blk = 1; blk < nblocks; ++blk) s += part[blk * k + j];
    out[j] = s;
  }
}

template <class Isa, class T>
void layer_norm_backward(const LayerNormBackwardArgs<T>& a) {
  const int64_t k = a.k;
  if (k <= 0) return;
  const bool partials_wanted = a.dw || a.db;
  if (a.rows <= 0) {
    for (int64_t j = 0; j < k; ++j) {
      if (a.dw) a.dw[j] = T(0);
      if (a.db) a.db[j] = T(0);
    }
    return;
  }
  const int64_t block_rows = layer_norm_block_rows(a.rows);
  const int64_t nblocks = (a.rows + block_rows - 1) / block_rows;
  std::vector<T> partials(partials_wanted ? static_cast<size_t>(2 * nblocks * k) : 0);  // may throw: before the region
  T* part = partials.data();
  int nt = rowops::threads_for(a.rows * k, a.rows, a.nthreads);
  if (nt > nblocks) nt = static_cast<int>(nblocks);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    DenormalsFlushed ftz;
    const int t = omp_get_thread_num(), team = omp_get_num_threads();
    int64_t first, last;
    rowops::split_range(nblocks, team, t, &first, &last);
    if (a.w && partials_wanted) {
      backward_blocks<Isa, T, true, true>(a, block_rows, part, nblocks, first, last);
    } else if (a.w) {
      backward_blocks<Isa, T, true, false>(a, block_rows, part, nblocks, first, last);
    } else if (partials_wanted) {
      backward_blocks<Isa, T, false, true>(a, block_rows, part, nblocks, first, last);
    } else {
      backward_blocks<Isa, T, false, false>(a, block_rows, part, nblocks, first, last);
    }
    rowops::stream_fence();  // dx was written with streaming stores
    if (partials_wanted) {
#pragma omp barrier
      // Columns split in whole vectors; each column's blocks are added in block order.
      constexpr int W = Vec<Isa, T>::width;
      const int64_t vecs = (k + W - 1) / W;
      int64_t v0, v1;
      rowops::split_range(vecs, team, t, &v0, &v1);
      const int64_t j0 = v0 * W, j1 = std::min(k, v1 * W);
      if (a.dw && j0 < j1) sum_partials<Isa, T>(part, nblocks, k, j0, j1, a.dw);
      if (a.db && j0 < j1) sum_partials<Isa, T>(part + nblocks * k, nblocks, k, j0, j1, a.db);
    }
  }
}

}  // namespace

template <>
const LayerNormKernels& layer_norm_kernels<TargetIsa>() {
  static const LayerNormKernels table = {
      &layer_norm_forward<TargetIsa, float>,
      &layer_norm_forward<TargetIsa, double>,
      &layer_norm_backward<TargetIsa, float>,
      &layer_norm_backward<TargetIsa, double>,
  };
  return table;
}

}  // namespace seqblocks
