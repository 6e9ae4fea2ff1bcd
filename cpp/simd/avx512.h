// Vec<Avx512, T>: 512-bit AVX-512F/DQ. Masks are k-registers; tails use masked loads/stores,
// which never touch memory outside the active lanes.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace seqblocks {

template <>
struct Vec<Avx512, float> {
  using reg = __m512;
  using mask = __mmask16;
  static constexpr int width = 16;

  static mask tail_mask(int n) { return static_cast<mask>((1u << n) - 1u); }
  static reg zero() { return _mm512_setzero_ps(); }
  static reg set1(float x) { return _mm512_set1_ps(x); }
  static reg load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, reg v) { _mm512_storeu_ps(p, v); }
  static reg load_tail(const float* p, int n) { return _mm512_maskz_loadu_ps(tail_mask(n), p); }
  static void store_tail(float* p, reg v, int n) { _mm512_mask_storeu_ps(p, tail_mask(n), v); }
  static reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  static reg sub(reg a, reg b) { return _mm512_sub_ps(a, b); }
  static reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
  static reg div(reg a, reg b) { return _mm512_div_ps(a, b); }
  static reg min(reg a, reg b) { return _mm512_min_ps(a, b); }
  static reg max(reg a, reg b) { return _mm512_max_ps(a, b); }
  static reg fmadd(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static reg fnmadd(reg a, reg b, reg c) { return _mm512_fnmadd_ps(a, b, c); }
  static reg fmsub(reg a, reg b, reg c) { return _mm512_fmsub_ps(a, b, c); }
  static reg abs(reg a) { return _mm512_abs_ps(a); }
  // range imm 0b1010: the operand of smaller magnitude, sign cleared; with one NaN operand,
  // the other (measured: range(NaN, b) = range(b, NaN) = b).
  static reg abs_min(reg a, reg b) { return _mm512_range_ps(a, b, 0x0A); }
  static reg neg(reg a) { return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(a), _mm512_set1_epi32(INT32_MIN))); }
  static reg sqrt(reg a) { return _mm512_sqrt_ps(a); }
  static mask lt(reg a, reg b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static mask le(reg a, reg b) { return _mm512_cmp_ps_mask(a, b, _CMP_LE_OQ); }
  static mask gt(reg a, reg b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  static mask ge(reg a, reg b) { return _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ); }
  static mask eq(reg a, reg b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
  static mask isnan(reg a) { return _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q); }
  static mask mask_or(mask a, mask b) { return static_cast<mask>(a | b); }
  static mask mask_and(mask a, mask b) { return static_cast<mask>(a & b); }
  static mask mask_not(mask a) { return static_cast<mask>(~a); }
  static reg select(mask m, reg a, reg b) { return _mm512_mask_blend_ps(m, b, a); }
  static bool any(mask m) { return m != 0; }
  static bool all(mask m) { return m == static_cast<mask>(~mask(0)); }
  static reg round_nearest(reg a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static reg copysign(reg mag, reg sgn) {
    const __m512i sign_bit = _mm512_set1_epi32(INT32_MIN);
    // ternary logic 0xCA = A ? B : C per bit, with A = sign-bit mask, B = sgn, C = mag
    return _mm512_castsi512_ps(_mm512_ternarylogic_epi32(sign_bit, _mm512_castps_si512(sgn),
                                                         _mm512_castps_si512(mag), 0xCA));
  }
  static reg pow2i(reg n) {
    const __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
    return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
  }
  static reg ldexp(reg a, reg n) { return _mm512_scalef_ps(a, n); }
  static reg mul_pow2i(reg a, reg n) { return _mm512_scalef_ps(a, n); }
  static constexpr int rcp_approx_bits = 14;  // |error| < 2^-14
  static constexpr bool ldexp_is_one_instruction = true;  // vscalefps
  static reg rcp_approx(reg a) { return _mm512_rcp14_ps(a); }
  static float hsum(reg a) { return _mm512_reduce_add_ps(a); }
  // permutex2var reads the low 5 bits of each index lane: bit 4 picks the register.
  static reg lookup32(const float (&table)[32], reg idx) {
    return _mm512_permutex2var_ps(_mm512_loadu_ps(table), _mm512_castps_si512(idx), _mm512_loadu_ps(table + 16));
  }
};

template <>
struct Vec<Avx512, double> {
  using reg = __m512d;
  using mask = __mmask8;
  static constexpr int width = 8;

  static mask tail_mask(int n) { return static_cast<mask>((1u << n) - 1u); }
  static reg zero() { return _mm512_setzero_pd(); }
  static reg set1(double x) { return _mm512_set1_pd(x); }
  static reg load(const double* p) { return _mm512_loadu_pd(p); }
  static void store(double* p, reg v) { _mm512_storeu_pd(p, v); }
  static reg load_tail(const double* p, int n) { return _mm512_maskz_loadu_pd(tail_mask(n), p); }
  static void store_tail(double* p, reg v, int n) { _mm512_mask_storeu_pd(p, tail_mask(n), v); }
  static reg add(reg a, reg b) { return _mm512_add_pd(a, b); }
  static reg sub(reg a, reg b) { return _mm512_sub_pd(a, b); }
  static reg mul(reg a, reg b) { return _mm512_mul_pd(a, b); }
  static reg div(reg a, reg b) { return _mm512_div_pd(a, b); }
  static reg min(reg a, reg b) { return _mm512_min_pd(a, b); }
  static reg max(reg a, reg b) { return _mm512_max_pd(a, b); }
  static reg fmadd(reg a, reg b, reg c) { return _mm512_fmadd_pd(a, b, c); }
  static reg fnmadd(reg a, reg b, reg c) { return _mm512_fnmadd_pd(a, b, c); }
  static reg fmsub(reg a, reg b, reg c) { return _mm512_fmsub_pd(a, b, c); }
  static reg abs(reg a) { return _mm512_abs_pd(a); }
  static reg abs_min(reg a, reg b) { return _mm512_range_pd(a, b, 0x0A); }
  static reg neg(reg a) { return _mm512_castsi512_pd(_mm512_xor_si512(_mm512_castpd_si512(a), _mm512_set1_epi64(INT64_MIN))); }
  static reg sqrt(reg a) { return _mm512_sqrt_pd(a); }
  static mask lt(reg a, reg b) { return _mm512_cmp_pd_mask(a, b, _CMP_LT_OQ); }
  static mask le(reg a, reg b) { return _mm512_cmp_pd_mask(a, b, _CMP_LE_OQ); }
  static mask gt(reg a, reg b) { return _mm512_cmp_pd_mask(a, b, _CMP_GT_OQ); }
  static mask ge(reg a, reg b) { return _mm512_cmp_pd_mask(a, b, _CMP_GE_OQ); }
  static mask eq(reg a, reg b) { return _mm512_cmp_pd_mask(a, b, _CMP_EQ_OQ); }
  static mask isnan(reg a) { return _mm512_cmp_pd_mask(a, a, _CMP_UNORD_Q); }
  static mask mask_or(mask a, mask b) { return static_cast<mask>(a | b); }
  static mask mask_and(mask a, mask b) { return static_cast<mask>(a & b); }
  static mask mask_not(mask a) { return static_cast<mask>(~a); }
  static reg select(mask m, reg a, reg b) { return _mm512_mask_blend_pd(m, b, a); }
  static bool any(mask m) { return m != 0; }
  static bool all(mask m) { return m == static_cast<mask>(~mask(0)); }
  static reg round_nearest(reg a) { return _mm512_roundscale_pd(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static reg copysign(reg mag, reg sgn) {
    const __m512i sign_bit = _mm512_set1_epi64(INT64_MIN);
    return _mm512_castsi512_pd(_mm512_ternarylogic_epi64(sign_bit, _mm512_castpd_si512(sgn),
                                                         _mm512_castpd_si512(mag), 0xCA));
  }
  static reg pow2i(reg n) {
    const __m512i e = _mm512_add_epi64(_mm512_cvtpd_epi64(n), _mm512_set1_epi64(1023));
    return _mm512_castsi512_pd(_mm512_slli_epi64(e, 52));
  }
  static reg ldexp(reg a, reg n) { return _mm512_scalef_pd(a, n); }
  static reg mul_pow2i(reg a, reg n) { return _mm512_scalef_pd(a, n); }
  static constexpr int rcp_approx_bits = 14;
  static constexpr bool ldexp_is_one_instruction = true;
  static reg rcp_approx(reg a) { return _mm512_rcp14_pd(a); }
  static double hsum(reg a) { return _mm512_reduce_add_pd(a); }
};

}  // namespace seqblocks
