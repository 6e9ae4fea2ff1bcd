// The register-blocked micro-kernel: one M x (NV * width) tile of C from a packed A micro-panel
// and a B micro-panel, plus the epilogue that merges the tile into C.
//
//   acc[i][v] = sum_{l < kc} A[l][i] * B[l][v*W : v*W+W]        (i < M, v < NV)
//
// A micro-panel of M <= MR rows (the kernel is instantiated for each M): element (i, l) at
// a[l * a_stride + i] -- packed (a_stride = the block's panel height) or a transposed A read in
// place (a_stride = lda) -- or, with kARows, at a[i * a_stride + l]: a row-major A read in
// place (a_stride = lda), used when n is so small that packing A would not be amortised.
// B micro-panel: row l at b + l * ldb, its first n_valid columns valid. Packed panels use
// ldb = NR and are zero-padded to NR columns; B read in place (no packing, !trans_b) uses the
// caller's ldb and, when n_valid is not a multiple of W, masked loads for the last vector
// (kTailB) so nothing past the matrix is read.
//
// Epilogue (per K block of KC): the first block computes C = alpha*acc + beta*C (C is not read
// when beta == 0), later blocks C += alpha*acc, and the last block adds bias[j]. Every element
// sees the same sequence of FMAs whatever the tile position or thread, so the result does not
// depend on how the work was split.
#pragma once

#include <cstdint>
#include <utility>

#include "gemm/traits.h"
#include "runtime/kernel_table.h"
#include "simd/vec.h"

namespace seqblocks {

template <class T>
struct TileEpilogue {
  T alpha, beta;
  const T* bias;  // at the tile's first column, or null
  bool first_k, last_k;
  const GemmPost<T>* post = nullptr;  // applied to the finished tile (last K block), or null
};

// Merges one accumulator vector (columns [col, col + lanes) of a C row) into C.
template <class Isa, class T, bool kPartial>
static inline void epilogue_store(typename Vec<Isa, T>::reg r, T* c, int lanes,
                                  const TileEpilogue<T>& ep, const T* bias) {
  using V = Vec<Isa, T>;
  if (ep.alpha != T(1)) r = V::mul(V::set1(ep.alpha), r);
  if (!ep.first_k) {
    r = V::add(kPartial ? V::load_tail(c, lanes) : V::load(c), r);
  } else if (ep.beta != T(0)) {
    r = V::fmadd(V::set1(ep.beta), kPartial ? V::load_tail(c, lanes) : V::load(c), r);
  }
  if (bias != nullptr) r = V::add(r, kPartial ? V::load_tail(bias, lanes) : V::load(bias));
  if (kPartial) {
    V::store_tail(c, r, lanes);
  } else {
    V::store(c, r);
  }
}

template <class Isa, class T, int M, int NV, bool kTailB, bool kARows>
static void gemm_micro_tile(int64_t kc, const T* __restrict a, int64_t a_stride,
                            const T* __restrict b, int64_t ldb,
                            T* __restrict c, int64_t ldc, int n_valid,
                            const TileEpilogue<T>& ep) {
  using V = Vec<Isa, T>;
  using reg = typename V::reg;
  constexpr int W = V::width;
  // Lanes used in the last vector of the tile (W unless this is the right edge).
  const int last_lanes = n_valid - (NV - 1) * W;

  for (int i = 0; i < M; ++i) __builtin_prefetch(c + i * ldc, 1);

  reg acc[M][NV];
#pragma GCC unroll 16
  for (int i = 0; i < M; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = V::zero();
  }

#pragma GCC unroll 2
  for (int64_t l = 0; l < kc; ++l) {
    reg bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      bv[v] = (kTailB && v == NV - 1) ? V::load_tail(b + v * W, last_lanes) : V::load(b + v * W);
    }
#pragma GCC unroll 16
    for (int i = 0; i < M; ++i) {
      const reg av = V::set1(kARows ? a[i * a_stride] : a[i]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = V::fmadd(av, bv[v], acc[i][v]);
    }
    a += kARows ? 1 : a_stride;
    b += ldb;
  }

  const T* bias = ep.last_k ? ep.bias : nullptr;
  // Common cases first, with the same arithmetic as epilogue_store but no per-vector tests, so
  // that the accumulators stay in registers (the generic loop spilled them to the stack), which
  // matters for the short k of attention tiles (k = 64: 18% of a 64^3 product's micro-kernel
  // time was outside its k loop).
  if (bias == nullptr && last_lanes == W && (!ep.first_k || ep.beta == T(0) || ep.beta == T(1))) {
    const reg alpha = V::set1(ep.alpha);
    if (ep.first_k && ep.beta == T(0)) {  // C = alpha acc
#pragma GCC unroll 16
      for (int i = 0; i < M; ++i) {
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) V::store(c + i * ldc + v * W, V::mul(alpha, acc[i][v]));
      }
    } else {  // C = C + alpha acc, rounded twice as in epilogue_store (not one FMA)
      const bool scaled = ep.alpha != T(1);
#pragma GCC unroll 16
      for (int i = 0; i < M; ++i) {
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) {
          T* cv = c + i * ldc + v * W;
          V::store(cv, V::add(V::load(cv), scaled ? V::mul(alpha, acc[i][v]) : acc[i][v]));
        }
      }
    }
  } else {
#pragma GCC unroll 16
    for (int i = 0; i < M; ++i) {
      T* crow = c + i * ldc;
#pragma GCC unroll 4
      for (int v = 0; v < NV - 1; ++v) {
        epilogue_store<Isa, T, false>(acc[i][v], crow + v * W, W, ep, bias ? bias + v * W : nullptr);
      }
      constexpr int v = NV - 1;
      if (last_lanes == W) {
        epilogue_store<Isa, T, false>(acc[i][v], crow + v * W, W, ep, bias ? bias + v * W : nullptr);
      } else {
        epilogue_store<Isa, T, true>(acc[i][v], crow + v * W, last_lanes, ep,
                                     bias ? bias + v * W : nullptr);
      }
    }
  }
  if (ep.last_k && ep.post != nullptr) ep.post->fn(c, ldc, M, n_valid, ep.post->ctx);  // tile still in L1
}

template <class T>
using MicroTileFn = void (*)(int64_t, const T*, int64_t, const T*, int64_t, T*, int64_t, int,
                             const TileEpilogue<T>&);

template <class Isa, class T, int NV, bool kTailB, bool kARows, int... Ms>
static inline MicroTileFn<T> pick_micro_tile_m(int m, std::integer_sequence<int, Ms...>) {
  static constexpr MicroTileFn<T> table[] = {&gemm_micro_tile<Isa, T, Ms + 1, NV, kTailB, kARows>...};
  return table[m - 1];
}

template <class Isa, class T, bool kTailB, bool kARows, int... NVs>
static inline MicroTileFn<T> pick_micro_tile_nv(int m, int nv, std::integer_sequence<int, NVs...>) {
  constexpr int MR = GemmTraits<Isa, T>::MR;
  static constexpr MicroTileFn<T> (*table[])(int, std::make_integer_sequence<int, MR>) = {
      &pick_micro_tile_m<Isa, T, NVs + 1, kTailB, kARows>...};
  return table[nv - 1](m, std::make_integer_sequence<int, MR>{});
}

// The kernel for an m x n_valid tile (1 <= m <= MR, 1 <= n_valid <= NR); masked_b selects
// masked loads for a partial last vector of an unpacked B, a_rows a row-major unpacked A.
template <class Isa, class T>
static inline MicroTileFn<T> pick_micro_tile(int m, int n_valid, bool masked_b, bool a_rows) {
  constexpr int W = Vec<Isa, T>::width;
  constexpr int NV = GemmTraits<Isa, T>::NV;
  using NVs = std::make_integer_sequence<int, NV>;
  const int nv = (n_valid + W - 1) / W;
  const bool tail = masked_b && (n_valid % W != 0);
  if (a_rows) {
    return tail ? pick_micro_tile_nv<Isa, T, true, true>(m, nv, NVs{})
                : pick_micro_tile_nv<Isa, T, false, true>(m, nv, NVs{});
  }
  return tail ? pick_micro_tile_nv<Isa, T, true, false>(m, nv, NVs{})
              : pick_micro_tile_nv<Isa, T, false, false>(m, nv, NVs{});
}

}  // namespace seqblocks
