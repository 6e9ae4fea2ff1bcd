// Packing of GEMM operands into the micro-kernel's panel layouts.
//
// A block (mc x kc of op(A)) -> micro-panels of h <= MR rows (the last may have fewer), each
// kc x h:
//   dst[p * h * kc + l * h + i] = op(A)[p * h + i][l]
// B block (kc x nc of op(B)) -> ceil(nc / NR) micro-panels of NR columns, each kc x NR:
//   dst[q * NR * kc + l * NR + j] = op(B)[l][q * NR + j], zero for columns past nc.
// op(A)[i][l] is a[i * lda + l], or a[l * lda + i] when transposed; op(B)[l][j] is
// b[l * ldb + j], or b[j * ldb + l] when transposed. The pointers point at the block's (0, 0).
#pragma once

#include <algorithm>
#include <cstdint>

#include "gemm/traits.h"
#include "simd/vec.h"

#if defined(__AVX512F__) && defined(__AVX512DQ__)
#include <immintrin.h>
#endif

namespace seqblocks {

// dst[l * ldd + j] = src[j * lds + l] for l < width and j < rows (width = Vec<Isa, T>::width,
// rows <= width; source rows past `rows` are not read and their lanes are not stored).
// Specialised where a register transpose pays; elsewhere `available` is false and the packers
// use scalar loops.
template <class Isa, class T>
struct TransposeBlock {
  static constexpr bool available = false;
  static inline void run(const T*, int64_t, int, T*, int64_t) {}
};

#if defined(__AVX512F__) && defined(__AVX512DQ__)
// Recursive block transpose in log2(width) stages: stage b swaps the off-diagonal b x b blocks
// of every 2b x 2b block, pairing rows r and r + b with two two-source permutes.
template <class Reg, class Perm>
static inline void transpose_stage(Reg* r, int n, int b, __m512i lo, __m512i hi, Perm perm) {
  for (int i = 0; i < n; ++i) {
    if (i & b) continue;
    const Reg x = perm(r[i], lo, r[i + b]);
    const Reg y = perm(r[i], hi, r[i + b]);
    r[i] = x;
    r[i + b] = y;
  }
}

template <>
struct TransposeBlock<Avx512, float> {
  static constexpr bool available = true;
  static inline void run(const float* src, int64_t lds, int rows, float* dst, int64_t ldd) {
    __m512 r[16];
#pragma GCC unroll 16
    for (int j = 0; j < 16; ++j) r[j] = j < rows ? _mm512_loadu_ps(src + j * lds) : _mm512_setzero_ps();
    auto perm = [](__m512 a, __m512i idx, __m512 b) { return _mm512_permutex2var_ps(a, idx, b); };
    transpose_stage(r, 16, 8, _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23),
                    _mm512_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31), perm);
    transpose_stage(r, 16, 4, _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27),
                    _mm512_setr_epi32(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31), perm);
    transpose_stage(r, 16, 2, _mm512_setr_epi32(0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29),
                    _mm512_setr_epi32(2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31), perm);
    transpose_stage(r, 16, 1, _mm512_setr_epi32(0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30),
                    _mm512_setr_epi32(1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31), perm);
    if (rows == 16) {
#pragma GCC unroll 16
      for (int l = 0; l < 16; ++l) _mm512_storeu_ps(dst + l * ldd, r[l]);
    } else {
      const __mmask16 keep = static_cast<__mmask16>((1u << rows) - 1u);
#pragma GCC unroll 16
      for (int l = 0; l < 16; ++l) _mm512_mask_storeu_ps(dst + l * ldd, keep, r[l]);
    }
  }
};

template <>
struct TransposeBlock<Avx512, double> {
  static constexpr bool available = true;
  static inline void run(const double* src, int64_t lds, int rows, double* dst, int64_t ldd) {
    __m512d r[8];
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) r[j] = j < rows ? _mm512_loadu_pd(src + j * lds) : _mm512_setzero_pd();
    auto perm = [](__m512d a, __m512i idx, __m512d b) { return _mm512_permutex2var_pd(a, idx, b); };
    transpose_stage(r, 8, 4, _mm512_setr_epi64(0, 1, 2, 3, 8, 9, 10, 11),
                    _mm512_setr_epi64(4, 5, 6, 7, 12, 13, 14, 15), perm);
    transpose_stage(r, 8, 2, _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13),
                    _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15), perm);
    transpose_stage(r, 8, 1, _mm512_setr_epi64(0, 8, 2, 10, 4, 12, 6, 14),
                    _mm512_setr_epi64(1, 9, 3, 11, 5, 13, 7, 15), perm);
    if (rows == 8) {
#pragma GCC unroll 8
      for (int l = 0; l < 8; ++l) _mm512_storeu_pd(dst + l * ldd, r[l]);
    } else {
      const __mmask8 keep = static_cast<__mmask8>((1u << rows) - 1u);
#pragma GCC unroll 8
      for (int l = 0; l < 8; ++l) _mm512_mask_storeu_pd(dst + l * ldd, keep, r[l]);
    }
  }
};
#endif

// Row sums of op(A) in a fixed order, the same on every path that computes them (while packing
// a transposed A below, or add_row_sums): l runs in groups of kRowSumGroup consecutive columns
// from 0; each group is summed in order starting from zero, and the group sums are added in
// order to sums[i]. (Block starts are multiples of KC, itself a multiple of the group, so the
// groups of a K block are the groups of the whole row.) Error: about (group + k / group) roundings
// of the |terms| sum, against k for one running sum.
constexpr int64_t kRowSumGroup = 8;

// sums[i] += the row sums of op(A) over one K block (kc columns) for i < mc: the paths that do
// not pack a transposed A (A read in place, a non-transposed A, the dot path).
template <class T>
static void add_row_sums(const T* a, int64_t lda, bool trans, int64_t mc, int64_t kc, T* sums) {
  if (trans) {
    // op(A)[i][l] = a[l * lda + i]: stored rows run along i, so each group is summed row by row
    // over a strip of i with the partial sums on the stack -- contiguous loops the compiler
    // vectorizes, and per element the same additions in the same order as the packing path.
    // (Summing one i at a time down the strided column ran a dW with 64 input features 2.3x
    // slower than the former separate column-sum pass.)
    constexpr int64_t kStrip = 256;
    T part[kStrip];
    for (int64_t i0 = 0; i0 < mc; i0 += kStrip) {
      const int64_t ni = mc - i0 < kStrip ? mc - i0 : kStrip;
      for (int64_t l0 = 0; l0 < kc; l0 += kRowSumGroup) {
        const int64_t l1 = l0 + kRowSumGroup < kc ? l0 + kRowSumGroup : kc;
        std::fill(part, part + ni, T(0));
        for (int64_t l = l0; l < l1; ++l) {
          const T* row = a + l * lda + i0;
          for (int64_t i = 0; i < ni; ++i) part[i] += row[i];
        }
        for (int64_t i = 0; i < ni; ++i) sums[i0 + i] += part[i];
      }
    }
    return;
  }
  for (int64_t i = 0; i < mc; ++i) {
    T total = sums[i];
    for (int64_t l0 = 0; l0 < kc; l0 += kRowSumGroup) {
      const int64_t l1 = l0 + kRowSumGroup < kc ? l0 + kRowSumGroup : kc;
      T part = T(0);
      for (int64_t l = l0; l < l1; ++l) part += trans ? a[l * lda + i] : a[i * lda + l];
      total += part;
    }
    sums[i] = total;
  }
}

// sums (or null): as add_row_sums, for a transposed A only -- its rows of op(A) come in as
// vectors while they are packed, so the sums cost no second pass over A (the bias gradient of
// a linear map, summed while its weight gradient packs dy^T).
template <class Isa, class T>
static void pack_a_block(const T* a, int64_t lda, bool trans, int64_t mc, int64_t kc, int h, T* dst,
                         T* sums = nullptr) {
  constexpr int MR = GemmTraits<Isa, T>::MR;
  static_assert(GemmTraits<Isa, T>::KC % kRowSumGroup == 0, "K blocks must start on a row-sum group");
  if (trans) {
    // Column l of a panel is mr contiguous elements of stored row l, so every stored row feeds
    // all the panels. Panel by panel, each would re-read all kc rows (a new page each) for a
    // few elements; instead LB rows at a time go to every panel while they sit in L1.
    using V = Vec<Isa, T>;
    constexpr int W = V::width;
    constexpr int64_t LB = kRowSumGroup;
    for (int64_t l0 = 0; l0 < kc; l0 += LB) {
      const int64_t l1 = l0 + LB < kc ? l0 + LB : kc;
      T* panel = dst;
      for (int64_t p0 = 0; p0 < mc; p0 += h, panel += h * kc) {
        const int mr = static_cast<int>(mc - p0 < h ? mc - p0 : h);
        for (int i = 0; i < mr; i += W) {
          const int lanes = mr - i < W ? mr - i : W;
          typename V::reg part = V::zero();
          for (int64_t l = l0; l < l1; ++l) {
            const T* src = a + l * lda + p0 + i;
            T* d = panel + l * h + i;
            const typename V::reg x = lanes == W ? V::load(src) : V::load_tail(src, lanes);
            if (lanes == W) {
              V::store(d, x);
            } else {
              V::store_tail(d, x, lanes);
            }
            if (sums) part = V::add(part, x);
          }
          if (sums) {
            T* s = sums + p0 + i;
            if (lanes == W) {
              V::store(s, V::add(V::load(s), part));
            } else {
              V::store_tail(s, V::add(V::load_tail(s, lanes), part), lanes);
            }
          }
        }
      }
    }
    return;
  }
  for (int64_t p0 = 0; p0 < mc; p0 += h, dst += h * kc) {
    const int mr = static_cast<int>(mc - p0 < h ? mc - p0 : h);
    if (TransposeBlock<Isa, T>::available) {
      // Width x width register transposes of up to width rows at a time; scalar for the last
      // kc % width columns.
      constexpr int W = Vec<Isa, T>::width;
      const T* src = a + p0 * lda;
      int64_t l0 = 0;
      for (; l0 + W <= kc; l0 += W) {
        for (int r0 = 0; r0 < mr; r0 += W) {
          TransposeBlock<Isa, T>::run(src + r0 * lda + l0, lda, mr - r0 < W ? mr - r0 : W,
                                      dst + l0 * h + r0, h);
        }
      }
      for (int i = 0; i < mr; ++i) {
        for (int64_t l = l0; l < kc; ++l) dst[l * h + i] = src[i * lda + l];
      }
    } else if (mr == MR && h == MR) {
      // MR sequential row streams interleaved; with MR a constant the inner loop unrolls.
      const T* src = a + p0 * lda;
      for (int64_t l = 0; l < kc; ++l) {
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) dst[l * MR + i] = src[i * lda + l];
      }
    } else {
      const T* src = a + p0 * lda;
      for (int i = 0; i < mr; ++i) {
        for (int64_t l = 0; l < kc; ++l) dst[l * h + i] = src[i * lda + l];
      }
    }
  }
}

template <class Isa, class T>
static void pack_b_block(const T* b, int64_t ldb, bool trans, int64_t kc, int64_t nc, T* dst) {
  using V = Vec<Isa, T>;
  constexpr int W = V::width;
  constexpr int NV = GemmTraits<Isa, T>::NV;
  constexpr int NR = NV * W;
  if (!trans) {
    // Row by row across all panels: each source row (nc contiguous elements) is read once,
    // sequentially. Walking one panel down all kc rows instead touches a new page every row
    // when ldb is large (TLB misses, no hardware prefetch).
    // Rows are usually far apart (a new page each), so the hardware prefetcher restarts on
    // every row; prefetch a few rows ahead by hand.
    const int64_t full = nc / NR * NR;
    constexpr int64_t kAhead = 4, kLine = 64 / sizeof(T);
    for (int64_t l = 0; l < kc; ++l) {
      const T* src = b + l * ldb;
      T* d = dst + l * NR;
      if (l + kAhead < kc) {
        for (int64_t q = 0; q < nc; q += kLine) __builtin_prefetch(src + kAhead * ldb + q, 0, 3);
      }
      for (int64_t q0 = 0; q0 < full; q0 += NR, d += NR * kc) {
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) V::store(d + v * W, V::load(src + q0 + v * W));
      }
      if (full < nc) {
        const int nr = static_cast<int>(nc - full);
        for (int j = 0; j < nr; ++j) d[j] = src[full + j];
        for (int j = nr; j < NR; ++j) d[j] = T(0);
      }
    }
    return;
  }
  // Transposed: column j of a panel is the contiguous stored row q0 + j.
  for (int64_t q0 = 0; q0 < nc; q0 += NR, dst += NR * kc) {
    const int nr = static_cast<int>(nc - q0 < NR ? nc - q0 : NR);
    const T* src = b + q0 * ldb;
    int64_t l_done = 0;
    if (TransposeBlock<Isa, T>::available && nr == NR) {
      for (; l_done + W <= kc; l_done += W) {
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) {
          TransposeBlock<Isa, T>::run(src + v * W * ldb + l_done, ldb, W, dst + l_done * NR + v * W,
                                      NR);
        }
      }
    }
    // Scalar remainder, in l-chunks so the nr source lines of a chunk are reused from L1.
    constexpr int64_t LB = 16;
    for (int64_t l0 = l_done; l0 < kc; l0 += LB) {
      const int64_t l1 = l0 + LB < kc ? l0 + LB : kc;
      for (int j = 0; j < nr; ++j) {
        const T* row = src + j * ldb;
        for (int64_t l = l0; l < l1; ++l) dst[l * NR + j] = row[l];
      }
      for (int j = nr; j < NR; ++j) {
        for (int64_t l = l0; l < l1; ++l) dst[l * NR + j] = T(0);
      }
    }
  }
}

}  // namespace seqblocks
