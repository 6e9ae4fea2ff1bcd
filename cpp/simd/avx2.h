// Vec<Avx2, T>: 256-bit AVX2 + FMA. Masks are full-width registers (all-ones lanes).
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "simd/scalar.h"

namespace seqblocks {

// Lane-index masks for partial loads/stores: lane i is active iff i < n.
static inline __m256i avx2_tail_mask32(int n) {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lanes);
}
static inline __m256i avx2_tail_mask64(int n) {
  const __m256i lanes = _mm256_setr_epi64x(0, 1, 2, 3);
  return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), lanes);
}

template <>
struct Vec<Avx2, float> {
  using reg = __m256;
  using mask = __m256;
  static constexpr int width = 8;

  static reg zero() { return _mm256_setzero_ps(); }
  static reg set1(float x) { return _mm256_set1_ps(x); }
  static reg load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, reg v) { _mm256_storeu_ps(p, v); }
  static reg load_tail(const float* p, int n) { return _mm256_maskload_ps(p, avx2_tail_mask32(n)); }
  static void store_tail(float* p, reg v, int n) { _mm256_maskstore_ps(p, avx2_tail_mask32(n), v); }
  static reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  static reg sub(reg a, reg b) { return _mm256_sub_ps(a, b); }
  static reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
  static reg div(reg a, reg b) { return _mm256_div_ps(a, b); }
  static reg min(reg a, reg b) { return _mm256_min_ps(a, b); }
  static reg max(reg a, reg b) { return _mm256_max_ps(a, b); }
  static reg fmadd(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static reg fnmadd(reg a, reg b, reg c) { return _mm256_fnmadd_ps(a, b, c); }
  static reg fmsub(reg a, reg b, reg c) { return _mm256_fmsub_ps(a, b, c); }
  static reg abs(reg a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
  static reg abs_min(reg a, reg b) { return min(abs(a), b); }  // NaN a: b (min's rule)
  static reg neg(reg a) { return _mm256_xor_ps(_mm256_set1_ps(-0.0f), a); }
  static reg sqrt(reg a) { return _mm256_sqrt_ps(a); }
  static mask lt(reg a, reg b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static mask le(reg a, reg b) { return _mm256_cmp_ps(a, b, _CMP_LE_OQ); }
  static mask gt(reg a, reg b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
  static mask ge(reg a, reg b) { return _mm256_cmp_ps(a, b, _CMP_GE_OQ); }
  static mask eq(reg a, reg b) { return _mm256_cmp_ps(a, b, _CMP_EQ_OQ); }
  static mask isnan(reg a) { return _mm256_cmp_ps(a, a, _CMP_UNORD_Q); }
  static mask mask_or(mask a, mask b) { return _mm256_or_ps(a, b); }
  static mask mask_and(mask a, mask b) { return _mm256_and_ps(a, b); }
  static mask mask_not(mask a) { return _mm256_xor_ps(a, _mm256_castsi256_ps(_mm256_set1_epi32(-1))); }
  static reg select(mask m, reg a, reg b) { return _mm256_blendv_ps(b, a, m); }
  static bool any(mask m) { return _mm256_movemask_ps(m) != 0; }
  static bool all(mask m) { return _mm256_movemask_ps(m) == 0xFF; }
  static reg round_nearest(reg a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static reg copysign(reg mag, reg sgn) {
    const reg sign_bit = _mm256_set1_ps(-0.0f);
    return _mm256_or_ps(_mm256_andnot_ps(sign_bit, mag), _mm256_and_ps(sign_bit, sgn));
  }
  static reg pow2i(reg n) {
    const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
  }
  static constexpr int rcp_approx_bits = 11;  // |error| <= 1.5 * 2^-12
  static constexpr bool ldexp_is_one_instruction = false;  // two exact factors, 11 instructions
  static reg rcp_approx(reg a) { return _mm256_rcp_ps(a); }
  // Two exact factors (see ldexp_by_halves); NaN n converts to INT_MIN, giving a finite factor.
  static reg ldexp(reg a, reg n) { return ldexp_by_halves<Vec>(a, n); }
  static reg mul_pow2i(reg a, reg n) { return _mm256_mul_ps(a, pow2i(n)); }
  static float hsum(reg a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  // permutevar8x32 reads the low 3 bits of each index lane; bits 3 and 4, shifted into the
  // sign bit, pick among the four 8-entry quarters (blendv tests the sign bit only).
  static reg lookup32(const float (&table)[32], reg idx) {
    const __m256i j = _mm256_castps_si256(idx);
    const reg q0 = _mm256_permutevar8x32_ps(_mm256_loadu_ps(table), j);
    const reg q1 = _mm256_permutevar8x32_ps(_mm256_loadu_ps(table + 8), j);
    const reg q2 = _mm256_permutevar8x32_ps(_mm256_loadu_ps(table + 16), j);
    const reg q3 = _mm256_permutevar8x32_ps(_mm256_loadu_ps(table + 24), j);
    const reg bit3 = _mm256_castsi256_ps(_mm256_slli_epi32(j, 28));
    const reg bit4 = _mm256_castsi256_ps(_mm256_slli_epi32(j, 27));
    return _mm256_blendv_ps(_mm256_blendv_ps(q0, q1, bit3), _mm256_blendv_ps(q2, q3, bit3), bit4);
  }
};

template <>
struct Vec<Avx2, double> {
  using reg = __m256d;
  using mask = __m256d;
  static constexpr int width = 4;

  static reg zero() { return _mm256_setzero_pd(); }
  static reg set1(double x) { return _mm256_set1_pd(x); }
  static reg load(const double* p) { return _mm256_loadu_pd(p); }
  static void store(double* p, reg v) { _mm256_storeu_pd(p, v); }
  static reg load_tail(const double* p, int n) { return _mm256_maskload_pd(p, avx2_tail_mask64(n)); }
  static void store_tail(double* p, reg v, int n) { _mm256_maskstore_pd(p, avx2_tail_mask64(n), v); }
  static reg add(reg a, reg b) { return _mm256_add_pd(a, b); }
  static reg sub(reg a, reg b) { return _mm256_sub_pd(a, b); }
  static reg mul(reg a, reg b) { return _mm256_mul_pd(a, b); }
  static reg div(reg a, reg b) { return _mm256_div_pd(a, b); }
  static reg min(reg a, reg b) { return _mm256_min_pd(a, b); }
  static reg max(reg a, reg b) { return _mm256_max_pd(a, b); }
  static reg fmadd(reg a, reg b, reg c) { return _mm256_fmadd_pd(a, b, c); }
  static reg fnmadd(reg a, reg b, reg c) { return _mm256_fnmadd_pd(a, b, c); }
  static reg fmsub(reg a, reg b, reg c) { return _mm256_fmsub_pd(a, b, c); }
  static reg abs(reg a) { return _mm256_andnot_pd(_mm256_set1_pd(-0.0), a); }
  static reg abs_min(reg a, reg b) { return min(abs(a), b); }  // NaN a: b (min's rule)
  static reg neg(reg a) { return _mm256_xor_pd(_mm256_set1_pd(-0.0), a); }
  static reg sqrt(reg a) { return _mm256_sqrt_pd(a); }
  static mask lt(reg a, reg b) { return _mm256_cmp_pd(a, b, _CMP_LT_OQ); }
  static mask le(reg a, reg b) { return _mm256_cmp_pd(a, b, _CMP_LE_OQ); }
  static mask gt(reg a, reg b) { return _mm256_cmp_pd(a, b, _CMP_GT_OQ); }
  static mask ge(reg a, reg b) { return _mm256_cmp_pd(a, b, _CMP_GE_OQ); }
  static mask eq(reg a, reg b) { return _mm256_cmp_pd(a, b, _CMP_EQ_OQ); }
  static mask isnan(reg a) { return _mm256_cmp_pd(a, a, _CMP_UNORD_Q); }
  static mask mask_or(mask a, mask b) { return _mm256_or_pd(a, b); }
  static mask mask_and(mask a, mask b) { return _mm256_and_pd(a, b); }
  static mask mask_not(mask a) { return _mm256_xor_pd(a, _mm256_castsi256_pd(_mm256_set1_epi64x(-1))); }
  static reg select(mask m, reg a, reg b) { return _mm256_blendv_pd(b, a, m); }
  static bool any(mask m) { return _mm256_movemask_pd(m) != 0; }
  static bool all(mask m) { return _mm256_movemask_pd(m) == 0xF; }
  static reg round_nearest(reg a) { return _mm256_round_pd(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static reg copysign(reg mag, reg sgn) {
    const reg sign_bit = _mm256_set1_pd(-0.0);
    return _mm256_or_pd(_mm256_andnot_pd(sign_bit, mag), _mm256_and_pd(sign_bit, sgn));
  }
  // 2^n without a double->int64 conversion (AVX2 has none): adding 1.5 * 2^52 puts the integer
  // n in the low mantissa bits, which are then moved into the exponent field.
  static reg pow2i(reg n) {
    const reg magic = _mm256_set1_pd(6755399441055744.0);  // 1.5 * 2^52
    const __m256i bits = _mm256_sub_epi64(_mm256_castpd_si256(_mm256_add_pd(n, magic)),
                                          _mm256_castpd_si256(magic));
    return _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_add_epi64(bits, _mm256_set1_epi64x(1023)), 52));
  }
  // AVX2 has no double reciprocal estimate: the float one, through conversions.
  static constexpr int rcp_approx_bits = 11;
  static constexpr bool ldexp_is_one_instruction = false;
  static reg rcp_approx(reg a) { return _mm256_cvtps_pd(_mm_rcp_ps(_mm256_cvtpd_ps(a))); }
  // Two exact factors (see ldexp_by_halves); NaN n gives a finite factor.
  static reg ldexp(reg a, reg n) { return ldexp_by_halves<Vec>(a, n); }
  static reg mul_pow2i(reg a, reg n) { return _mm256_mul_pd(a, pow2i(n)); }
  static double hsum(reg a) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
    s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
    return _mm_cvtsd_f64(s);
  }
};

}  // namespace seqblocks
