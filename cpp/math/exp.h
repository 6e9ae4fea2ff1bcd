// exp, expm1 and helpers on Vec<Isa, T> registers (the building blocks of tanh, sigmoid, GELU).
//
// Algorithm (Cody-Waite reduction + polynomial):
//   x = n ln2 + r,  n = round(x / ln2) (by the 1.5 * 2^mantissa shifter: one FMA, one subtract),
//   |r| <= ln2/2,  ln2 = ln2_hi + ln2_lo where ln2_hi has few significant bits, so n * ln2_hi is
//   exact and r keeps its accuracy.
//   e^r = 1 + r + r^2 q(r):  float: q of degree 4, fitted (Lawson weighted minimax in float64,
//   relative error of e^r 4.7e-9 = 0.08 ulp with the coefficients rounded to float);
//   double: Taylor to r^13 (truncation error < 4e-18 relative, 0.04 ulp).
//   e^x = ldexp(e^r, n) (Vec::ldexp: exact for normal results, overflows to +inf past FLT_MAX /
//   DBL_MAX, and results below the normal range underflow like a multiply: flushed to zero
//   under FTZ).
//   expm1(x) = 2^n (e^r - 1) + (2^n - 1), one fused multiply-add, so it keeps full relative
//   accuracy near 0 (used by tanh).
// Saturation: the argument is clamped before reduction (exp: to [-104, 89] in float, [-746, 710]
// in double, which already gives 0 and +inf); NaN passes through the clamp and propagates.
#pragma once

#include <type_traits>

#include "simd/vec.h"

namespace seqblocks {
namespace math {

// p(x) = c[0] + c[1] x + ... + c[N-1] x^(N-1), Horner with FMA.
template <class Isa, class T, int N>
inline typename Vec<Isa, T>::reg horner(typename Vec<Isa, T>::reg x, const T (&c)[N]) {
  using V = Vec<Isa, T>;
  typename V::reg p = V::set1(c[N - 1]);
  for (int i = N - 2; i >= 0; --i) p = V::fmadd(p, x, V::set1(c[i]));
  return p;
}

template <class T>
struct ExpConstants;

template <>
struct ExpConstants<float> {
  static constexpr float log2e = 1.442695f;
  static constexpr float ln2_hi = 0.69314575f;  // 16 significant bits: n * ln2_hi is exact
  static constexpr float ln2_lo = 1.4286068e-06f;
  static constexpr float shifter = 12582912.0f;  // 1.5 * 2^23: x + shifter - shifter = round(x)
  static constexpr float max_arg = 89.0f;        // e^89 > FLT_MAX: n = 128 gives +inf
  static constexpr float min_arg = -104.0f;      // e^-104 < 2^-149: n = -150 gives 0
  static constexpr float max_exp = 127.0f, below_normal_exp = -127.0f;  // pow2i(-127) = +0
  // e^r = sum c[i] r^i for |r| <= ln2/2; c[2..] is q above.
  static constexpr float poly[] = {1.0f,        1.0f,        0.49999994f, 0.16666515f,
                                   0.04166846f, 0.00836942f, 0.00138131f};
};

template <>
struct ExpConstants<double> {
  static constexpr double log2e = 1.4426950408889634;
  static constexpr double ln2_hi = 0.6931471803691238;  // 32 significant bits
  static constexpr double ln2_lo = 1.9082149292705877e-10;
  static constexpr double shifter = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr double max_arg = 710.0;   // n = 1024 gives +inf
  static constexpr double min_arg = -746.0;  // n = -1076 gives 0
  static constexpr double max_exp = 1023.0, below_normal_exp = -1023.0;  // pow2i(-1023) = +0
  // 1/k!, k = 0..13
  static constexpr double poly[] = {1.0,
                                    1.0,
                                    0.5,
                                    0.16666666666666666,
                                    0.041666666666666664,
                                    0.008333333333333333,
                                    0.001388888888888889,
                                    0.0001984126984126984,
                                    2.48015873015873e-05,
                                    2.7557319223985893e-06,
                                    2.755731922398589e-07,
                                    2.505210838544172e-08,
                                    2.08767569878681e-09,
                                    1.6059043836821613e-10};
};

// round(x / ln2) for |x / ln2| < 2^(mantissa - 1), NaN propagating; ties to even.
template <class Isa, class T>
inline typename Vec<Isa, T>::reg round_over_ln2(typename Vec<Isa, T>::reg x) {
  using V = Vec<Isa, T>;
  using C = ExpConstants<T>;
  const typename V::reg shifter = V::set1(C::shifter);
  return V::sub(V::fmadd(x, V::set1(C::log2e), shifter), shifter);
}

// e^r - 1 for |r| <= ln2/2: r + r^2 q(r), the same q as e^r.
template <class Isa, class T>
inline typename Vec<Isa, T>::reg expm1_reduced(typename Vec<Isa, T>::reg r) {
  using V = Vec<Isa, T>;
  using C = ExpConstants<T>;
  constexpr int n = static_cast<int>(sizeof(C::poly) / sizeof(C::poly[0])) - 2;
  T q[n];
  for (int i = 0; i < n; ++i) q[i] = C::poly[i + 2];
  return V::fmadd(V::mul(r, r), horner<Isa, T>(r, q), r);
}

// e^(hi + lo) * 2^Scale2, where lo is a small finite correction (|lo| <= ulp(hi)), e.g. the
// rounding error of an argument computed in double-T arithmetic. NaN in hi gives NaN.
// Scale2 > 0 keeps a result that is later multiplied by something small out of the subnormal
// range (the scaling is exact and free: it is folded into the power of two).
template <class Isa, class T, int Scale2 = 0>
inline typename Vec<Isa, T>::reg exp_hilo(typename Vec<Isa, T>::reg hi, typename Vec<Isa, T>::reg lo) {
  using V = Vec<Isa, T>;
  using C = ExpConstants<T>;
  // min/max return their second operand when either is NaN: NaN passes through the clamp and
  // through every step below (ldexp of a NaN is NaN).
  const typename V::reg xc = V::min(V::set1(C::max_arg), V::max(V::set1(C::min_arg), hi));
  const typename V::reg n = round_over_ln2<Isa, T>(xc);
  typename V::reg r = V::fnmadd(n, V::set1(C::ln2_hi), xc);
  r = V::add(V::fnmadd(n, V::set1(C::ln2_lo), r), lo);
  const typename V::reg p = horner<Isa, T>(r, C::poly);
  if constexpr (Scale2 != 0) return V::ldexp(p, V::add(n, V::set1(T(Scale2))));
  if constexpr (V::ldexp_is_one_instruction) return V::ldexp(p, n);
  // 2^n as one factor (8 instructions instead of ldexp's 11 on AVX2: exp 0.54 -> 0.48 ms per
  // 2^20 floats there). n is in [min_arg, max_arg] / ln2: at the top, n = max_exp + 1 (results
  // between 2^(max_exp + 0.5) and the largest float), p is doubled first, exactly; below the
  // normal range n is clamped where pow2i gives +0, and those results are flushed to 0 anyway
  // (FTZ, every kernel's mode; the accuracy policy allows 0 below the smallest normal).
  const typename V::reg top = V::min(V::set1(C::max_exp), n);
  const typename V::reg p2 = V::fmadd(p, V::sub(n, top), p);  // p (1 + (n - top)), n - top in {0, 1}
  return V::mul_pow2i(p2, V::max(V::set1(C::below_normal_exp), top));
}

// e^x. Max error measured (policy of tests/test_math.py: ulps of the float64 value, results
// below FLT_MIN may be flushed to zero): float 0.89 ulp (exhaustive over all 2^32 float32
// inputs, AVX-512, benchmarks/math_exhaustive.py; the test sweeps give the same on AVX2 and
// scalar), double 0.78 ulp (mpmath check of 4000 points in [-700, 700]).
template <class Isa, class T>
inline typename Vec<Isa, T>::reg exp(typename Vec<Isa, T>::reg x) {
  return exp_hilo<Isa, T>(x, Vec<Isa, T>::zero());
}

// g e^-(s + l)/2 for 0 <= s <= 200 (no clamp needed: no overflow, and ldexp scales by 2^m,
// m >= -144, exactly even where 2^m itself is below the normal range) or NaN, with l a small
// correction as in exp_hilo; made for s + l = a^2 exactly (FMA residual),
// so that a^2/2 is never rounded. The 1/2 is folded into the constants (exact power-of-two
// scalings): with m = -round(s log2(e) / 2), e^-(s + l)/2 = e^-u 2^m, u = (s + l)/2 + m ln2,
// |u| <= ln2/2, computed as w = 2u = s + m (2 ln2_hi) + m (2 ln2_lo) + l (m 2 ln2_hi exact), and
// the factor g enters the polynomial's last step: g e^-u = g + (g w) S(w),
// S(w) = (e^(-w/2) - 1) / w = sum_i c[i+1] (-1/2)^(i+1) w^i with c the e^r coefficients,
// one rounding fewer than g * e^-u.
template <class Isa, class T>
inline typename Vec<Isa, T>::reg mul_exp_neg_half_hilo(typename Vec<Isa, T>::reg g, typename Vec<Isa, T>::reg s,
                                                       typename Vec<Isa, T>::reg l) {
  using V = Vec<Isa, T>;
  using C = ExpConstants<T>;
  const typename V::reg shifter = V::set1(C::shifter);
  const typename V::reg m = V::sub(shifter, V::fmadd(s, V::set1(C::log2e * T(0.5)), shifter));
  typename V::reg w = V::fmadd(m, V::set1(C::ln2_hi * T(2)), s);
  w = V::add(V::fmadd(m, V::set1(C::ln2_lo * T(2)), w), l);
  constexpr int np = static_cast<int>(sizeof(C::poly) / sizeof(C::poly[0]));
  T coef[np - 1];
  T scale = T(-0.5);
  for (int i = 0; i < np - 1; ++i, scale *= T(-0.5)) coef[i] = C::poly[i + 1] * scale;
  return V::ldexp(V::fmadd(V::mul(g, w), horner<Isa, T>(w, coef), g), m);
}

// e^x - 1 for x <= 0 (the only range tanh needs), NaN propagating; x below the clamp gives -1.
template <class Isa, class T>
inline typename Vec<Isa, T>::reg expm1_nonpositive(typename Vec<Isa, T>::reg x) {
  using V = Vec<Isa, T>;
  using C = ExpConstants<T>;
  // e^-64 < 2^-92 is far below half an ulp of 1 in both precisions: expm1 rounds to -1 there.
  const typename V::reg xc = V::max(V::set1(T(-64)), x);
  const typename V::reg n = round_over_ln2<Isa, T>(xc);
  typename V::reg r = V::fnmadd(n, V::set1(C::ln2_hi), xc);
  r = V::fnmadd(n, V::set1(C::ln2_lo), r);
  const typename V::reg pm1 = expm1_reduced<Isa, T>(r);
  const typename V::reg s = V::ldexp(V::set1(T(1)), n);  // 2^n, n >= -93: normal
  return V::fmadd(s, pm1, V::sub(s, V::set1(T(1))));
}

// 1/b for b in [1, 16] (the denominators of tanh, sigmoid and GELU), NaN propagating: the
// reciprocal estimate refined by Newton steps r <- r + r (1 - b r), each doubling the number of
// correct bits, until r is within 2^-(digits+3) of 1/b (AVX-512: 14 -> 28 bits, one step;
// AVX2: 11 -> 22 -> 44, two steps). A hardware divide has a throughput of 5-10 cycles per
// register and would be the bottleneck of these functions. Scalar: exact division.
template <class Isa, class T>
inline typename Vec<Isa, T>::reg rcp_nr(typename Vec<Isa, T>::reg b) {
  using V = Vec<Isa, T>;
  const typename V::reg one = V::set1(T(1));
  typename V::reg r = V::rcp_approx(b);
  constexpr int digits = std::is_same_v<T, float> ? 24 : 53;
  for (int bits = V::rcp_approx_bits; bits < digits + 3; bits *= 2) r = V::fmadd(r, V::fnmadd(b, r, one), r);
  return r;
}

// a / b for b in [1, 16]: a * rcp_nr(b), within 0.5 ulp + 2^-(digits+3) relative of a / b.
template <class Isa, class T>
inline typename Vec<Isa, T>::reg div_nr(typename Vec<Isa, T>::reg a, typename Vec<Isa, T>::reg b) {
  using V = Vec<Isa, T>;
  if constexpr (V::rcp_approx_bits >= 64) return V::div(a, b);
  return V::mul(a, rcp_nr<Isa, T>(b));
}

}  // namespace math
}  // namespace seqblocks
