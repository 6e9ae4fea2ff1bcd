// Packing of GEMM operands into the micro-kernel's panel layouts.
//
// A block (mc x kc of op(A)) -> ceil(mc / MR) micro-panels of MR rows, each kc x MR:
//   dst[p * MR * kc + l * MR + i] = op(A)[p * MR + i][l]
// B block (kc x nc of op(B)) -> ceil(nc / NR) micro-panels of NR columns, each kc x NR:
//   dst[q * NR * kc + l * NR + j] = op(B)[l][q * NR + j], zero for columns past nc.
// op(A)[i][l] is a[i * lda + l], or a[l * lda + i] when transposed; op(B)[l][j] is
// b[l * ldb + j], or b[j * ldb + l] when transposed. The pointers point at the block's (0, 0).
#pragma once

#include <cstdint>

#include "gemm/traits.h"
#include "simd/vec.h"

namespace seqblocks {

template <class Isa, class T>
static void pack_a_block(const T* a, int64_t lda, bool trans, int64_t mc, int64_t kc, T* dst) {
  constexpr int MR = GemmTraits<Isa, T>::MR;
  for (int64_t p0 = 0; p0 < mc; p0 += MR, dst += MR * kc) {
    const int mr = static_cast<int>(mc - p0 < MR ? mc - p0 : MR);
    if (trans) {
      // Column l of the panel is mr contiguous elements of stored row l.
      const T* src = a + p0;
      for (int64_t l = 0; l < kc; ++l) {
        for (int i = 0; i < mr; ++i) dst[l * MR + i] = src[l * lda + i];
      }
    } else if (mr == MR) {
      // MR sequential row streams interleaved; with MR a constant the inner loop unrolls.
      const T* src = a + p0 * lda;
      for (int64_t l = 0; l < kc; ++l) {
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) dst[l * MR + i] = src[i * lda + l];
      }
    } else {
      const T* src = a + p0 * lda;
      for (int i = 0; i < mr; ++i) {
        for (int64_t l = 0; l < kc; ++l) dst[l * MR + i] = src[i * lda + l];
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
  for (int64_t q0 = 0; q0 < nc; q0 += NR, dst += NR * kc) {
    const int nr = static_cast<int>(nc - q0 < NR ? nc - q0 : NR);
    if (!trans) {
      const T* src = b + q0;
      if (nr == NR) {
        for (int64_t l = 0; l < kc; ++l) {
#pragma GCC unroll 4
          for (int v = 0; v < NV; ++v) V::store(dst + l * NR + v * W, V::load(src + l * ldb + v * W));
        }
      } else {
        for (int64_t l = 0; l < kc; ++l) {
          for (int j = 0; j < nr; ++j) dst[l * NR + j] = src[l * ldb + j];
          for (int j = nr; j < NR; ++j) dst[l * NR + j] = T(0);
        }
      }
    } else {
      // Column j of the panel is the contiguous stored row q0 + j; read rows in l-chunks so
      // the NR source lines of one chunk are reused from L1 across the chunk.
      const T* src = b + q0 * ldb;
      constexpr int64_t LB = 16;
      for (int64_t l0 = 0; l0 < kc; l0 += LB) {
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
}

}  // namespace seqblocks
