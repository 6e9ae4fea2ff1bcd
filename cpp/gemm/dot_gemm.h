// Unpacked GEMM for skinny problems whose operands are both contiguous along K:
// !trans_a and trans_b, i.e. y = x @ W^T with x (m x k) and W (n x k) row-major, as in
// `linear` during an RNN step (m = batch rows, often 1..64; W = out x in).
//
//   C[i][j] = alpha * dot(x[i, :], W[j, :]) + beta * C[i][j] + bias[j]
//
// Each output is a dot product of two contiguous rows, so no packing is needed: a tile of
// MI x rows and NJ W rows keeps MI * NJ vector accumulators, streams k in vectors, and reduces
// each accumulator horizontally at the end. Tiles walk all of x for one NJ-row slab of W, so
// every weight row is read from memory once and reused from L1 for all m rows; x (m x k) stays
// in L1/L2. For m = 1 this is a GEMV and bound by the bandwidth from L3/memory, so the first
// tile of each slab prefetches a slab ahead (kDotGemvPrefetchSlabs; this keeps more lines in
// flight than the hardware prefetcher alone does for NJ interleaved row streams).
#pragma once

#include <cstdint>
#include <utility>

#include "gemm/traits.h"
#include "simd/vec.h"

#if defined(__AVX512F__) && defined(__AVX512DQ__)
#include <immintrin.h>
#endif

namespace seqblocks {

// out[q] = horizontal sum of r[q], q < 4. The generic version reduces each register alone;
// the AVX-512 ones fold the four registers together (log2(width) stages of 2 permutes + 1 add
// for all four sums instead of log2(width) shuffle+add pairs for each).
template <class Isa, class T>
struct DotReduce4 {
  using V = Vec<Isa, T>;
  static inline void run(const typename V::reg* r, T* out) {
    for (int q = 0; q < 4; ++q) out[q] = V::hsum(r[q]);
  }
};

#if defined(__AVX512F__) && defined(__AVX512DQ__)
// Each stage adds two two-source permutes, halving the lanes per register and doubling the
// registers per vector (permutex2var avoids the intrinsics whose GCC 12 headers trip
// -Wuninitialized through _mm512_undefined_*).
template <>
struct DotReduce4<Avx512, float> {
  static inline void run(const __m512* r, float* out) {
    const __m512i lo_half = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
    const __m512i hi_half = _mm512_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    // s01 = (r0 folded to 8 lanes, r1 folded to 8 lanes), s23 likewise.
    const __m512 s01 = _mm512_add_ps(_mm512_permutex2var_ps(r[0], lo_half, r[1]),
                                     _mm512_permutex2var_ps(r[0], hi_half, r[1]));
    const __m512 s23 = _mm512_add_ps(_mm512_permutex2var_ps(r[2], lo_half, r[3]),
                                     _mm512_permutex2var_ps(r[2], hi_half, r[3]));
    // t = (r0, r1, r2, r3) folded to 4 lanes each.
    const __m512i lo_q = _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
    const __m512i hi_q = _mm512_setr_epi32(4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
    const __m512 t = _mm512_add_ps(_mm512_permutex2var_ps(s01, lo_q, s23),
                                   _mm512_permutex2var_ps(s01, hi_q, s23));
    // u = each folded to 2 lanes (first 8 lanes), then v = each folded to 1 lane.
    const __m512i lo_p = _mm512_setr_epi32(0, 1, 4, 5, 8, 9, 12, 13, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m512i hi_p = _mm512_setr_epi32(2, 3, 6, 7, 10, 11, 14, 15, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m512 u = _mm512_add_ps(_mm512_permutex2var_ps(t, lo_p, t), _mm512_permutex2var_ps(t, hi_p, t));
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m512 v = _mm512_add_ps(_mm512_permutex2var_ps(u, even, u), _mm512_permutex2var_ps(u, odd, u));
    _mm512_mask_storeu_ps(out, 0xF, v);  // (a cast to __m128 trips the same warning)
  }
};

template <>
struct DotReduce4<Avx512, double> {
  static inline void run(const __m512d* r, double* out) {
    const __m512i lo_half = _mm512_setr_epi64(0, 1, 2, 3, 8, 9, 10, 11);
    const __m512i hi_half = _mm512_setr_epi64(4, 5, 6, 7, 12, 13, 14, 15);
    const __m512d s01 = _mm512_add_pd(_mm512_permutex2var_pd(r[0], lo_half, r[1]),
                                      _mm512_permutex2var_pd(r[0], hi_half, r[1]));
    const __m512d s23 = _mm512_add_pd(_mm512_permutex2var_pd(r[2], lo_half, r[3]),
                                      _mm512_permutex2var_pd(r[2], hi_half, r[3]));
    const __m512i lo_q = _mm512_setr_epi64(0, 1, 4, 5, 8, 9, 12, 13);
    const __m512i hi_q = _mm512_setr_epi64(2, 3, 6, 7, 10, 11, 14, 15);
    const __m512d t = _mm512_add_pd(_mm512_permutex2var_pd(s01, lo_q, s23),
                                    _mm512_permutex2var_pd(s01, hi_q, s23));
    const __m512i even = _mm512_setr_epi64(0, 2, 4, 6, 0, 0, 0, 0);
    const __m512i odd = _mm512_setr_epi64(1, 3, 5, 7, 0, 0, 0, 0);
    const __m512d v = _mm512_add_pd(_mm512_permutex2var_pd(t, even, t), _mm512_permutex2var_pd(t, odd, t));
    _mm512_mask_storeu_pd(out, 0xF, v);
  }
};
#endif

template <class Isa, class T, int MI, int NJ>
static void dot_tile(int64_t k, const T* __restrict x, int64_t ldx, const T* __restrict w,
                     int64_t ldw, T* __restrict c, int64_t ldc, T alpha, T beta,
                     const T* __restrict bias, const T* prefetch_w) {
  using V = Vec<Isa, T>;
  using reg = typename V::reg;
  constexpr int W = V::width;
  constexpr int NJ4 = (NJ + 3) / 4 * 4;

  reg acc[MI][NJ4];
#pragma GCC unroll 8
  for (int i = 0; i < MI; ++i) {
#pragma GCC unroll 8
    for (int j = 0; j < NJ4; ++j) acc[i][j] = V::zero();
  }
  int64_t l = 0;
  for (; l + W <= k; l += W) {
    reg wv[NJ];
#pragma GCC unroll 8
    for (int j = 0; j < NJ; ++j) wv[j] = V::load(w + j * ldw + l);
    if (prefetch_w != nullptr) {
#pragma GCC unroll 8
      for (int j = 0; j < NJ; ++j) __builtin_prefetch(prefetch_w + j * ldw + l, 0, 3);
    }
#pragma GCC unroll 8
    for (int i = 0; i < MI; ++i) {
      const reg xv = V::load(x + i * ldx + l);
#pragma GCC unroll 8
      for (int j = 0; j < NJ; ++j) acc[i][j] = V::fmadd(xv, wv[j], acc[i][j]);
    }
  }
  if (l < k) {
    const int rem = static_cast<int>(k - l);
    reg wv[NJ];
#pragma GCC unroll 8
    for (int j = 0; j < NJ; ++j) wv[j] = V::load_tail(w + j * ldw + l, rem);
#pragma GCC unroll 8
    for (int i = 0; i < MI; ++i) {
      const reg xv = V::load_tail(x + i * ldx + l, rem);
#pragma GCC unroll 8
      for (int j = 0; j < NJ; ++j) acc[i][j] = V::fmadd(xv, wv[j], acc[i][j]);
    }
  }

  for (int i = 0; i < MI; ++i) {
    T sums[NJ4];
    for (int j = 0; j < NJ4; j += 4) DotReduce4<Isa, T>::run(&acc[i][j], &sums[j]);
    T* crow = c + i * ldc;
    for (int j = 0; j < NJ; ++j) {
      T r = alpha * sums[j];
      if (beta != T(0)) r += beta * crow[j];
      if (bias != nullptr) r += bias[j];
      crow[j] = r;
    }
  }
}

template <class T>
using DotTileFn = void (*)(int64_t, const T*, int64_t, const T*, int64_t, T*, int64_t, T, T,
                           const T*, const T*);

template <class Isa, class T, int NJ, int... Ms>
static inline DotTileFn<T> pick_dot_tile_m(int mi, std::integer_sequence<int, Ms...>) {
  static constexpr DotTileFn<T> table[] = {&dot_tile<Isa, T, Ms + 1, NJ>...};
  return table[mi - 1];
}

template <class Isa, class T, int... Ns>
static inline DotTileFn<T> pick_dot_tile(int mi, int nj, std::integer_sequence<int, Ns...>) {
  constexpr int MI = GemmTraits<Isa, T>::DOT_MI;
  static constexpr DotTileFn<T> (*table[])(int, std::make_integer_sequence<int, MI>) = {
      &pick_dot_tile_m<Isa, T, Ns + 1>...};
  return table[nj - 1](mi, std::make_integer_sequence<int, MI>{});
}

// How far ahead (in slabs) a GEMV prefetches W. Measured for W = 2048 x 512 float32 from L3 at
// 1 thread: 1, 2 and 4 slabs within 1% of each other, 16 slabs 14% slower (lines evicted before use).
constexpr int64_t kDotGemvPrefetchSlabs = 2;

// C[0:m, 0:n] for x (m x k, row stride ldx) and W (n x k, row stride ldw); c, bias at column 0.
// `reverse` walks the slabs of W from the last to the first (see gemm_dot in gemm.h); every
// output is the same dot product either way, so the results are bit-identical.
template <class Isa, class T>
static void dot_gemm(int64_t m, int64_t n, int64_t k, const T* x, int64_t ldx, const T* w,
                     int64_t ldw, T* c, int64_t ldc, T alpha, T beta, const T* bias,
                     bool reverse = false) {
  constexpr int MI = GemmTraits<Isa, T>::DOT_MI;
  constexpr int NJ = GemmTraits<Isa, T>::DOT_NJ;
  // A GEMV (m == 1) is bound by streaming W; it may prefer narrower slabs (fewer interleaved
  // row streams) than the register-bound small-m case.
  const int slab = m == 1 ? GemmTraits<Isa, T>::DOT_NJ_GEMV : NJ;
  const int64_t ahead = m == 1 ? kDotGemvPrefetchSlabs : 1;  // slabs between a load and its prefetch
  const int64_t slabs = (n + slab - 1) / slab;
  for (int64_t q = 0; q < slabs; ++q) {
    const int64_t j0 = (reverse ? slabs - 1 - q : q) * slab;
    const int nj = static_cast<int>(n - j0 < slab ? n - j0 : slab);
    const T* wj = w + j0 * ldw;
    const T* bj = bias ? bias + j0 : nullptr;
    // The slab `ahead` steps further along the walk, if it is a whole one.
    const int64_t pf = reverse ? j0 - ahead * slab : j0 + ahead * slab;
    const T* prefetch = pf >= 0 && pf + slab <= n ? w + pf * ldw : nullptr;
    for (int64_t i0 = 0; i0 < m; i0 += MI) {
      const int mi = static_cast<int>(m - i0 < MI ? m - i0 : MI);
      pick_dot_tile<Isa, T>(mi, nj, std::make_integer_sequence<int, NJ>{})(
          k, x + i0 * ldx, ldx, wj, ldw, c + i0 * ldc + j0, ldc, alpha, beta, bj,
          i0 == 0 ? prefetch : nullptr);
    }
  }
}

}  // namespace seqblocks
