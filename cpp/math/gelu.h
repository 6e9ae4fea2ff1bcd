// GELU on Vec<Isa, T> registers: the exact (erf) form x * Phi(x) and PyTorch's tanh
// approximation, built on cpp/math/exp.h.
#pragma once

#include <cmath>
#include <type_traits>

#include "math/exp.h"

namespace seqblocks {
namespace math {

// GELU, tanh approximation: 0.5 x (1 + tanh(u)) with u = sqrt(2/pi) (x + 0.044715 x^3)
//   = x * sigmoid(v),  v = 2u = x (A + B x^2),  A = 2 sqrt(2/pi),  B = 0.044715 A.
// With q = e / (1 + e), e = e^-|v|:  x < 0: x q  (relative accuracy in the left tail);
// x >= 0: x - x q  (one fused rounding).  In the tail e^-|v| is as sensitive to the absolute
// error of v as to |v| ulps of it, so v is computed in double-T arithmetic (exact products by
// FMA, TwoSum, constants A and B as hi + lo pairs) and its low part enters the exp reduction.
// |x| is clamped to K (float 12, double 24) where |v| is past exp's underflow limit: then the
// result is x (x > K) or -0 (x < -K, the limit of x e^-|v|), also for +-inf. NaN propagates.
// Max error measured: float 3.62 ulp (exhaustive over all float32, AVX-512), double 2.23 ulp
// (mpmath check of 3000 points in [-19, 0.5]).
template <class Isa, class T>
inline typename Vec<Isa, T>::reg gelu_tanh(typename Vec<Isa, T>::reg x) {
  using V = Vec<Isa, T>;
  using reg = typename V::reg;
  constexpr bool f32 = std::is_same_v<T, float>;
  // A = 2 sqrt(2/pi) and B = 0.044715 A (exact decimal constant) split as hi + lo (mpmath).
  const reg a_hi = V::set1(f32 ? T(1.5957692f) : T(1.5957691216057308));
  const reg a_lo = V::set1(f32 ? T(-4.534068e-08f) : T(-9.96930880911092e-17));
  const reg b_hi = V::set1(f32 ? T(0.071354814f) : T(0.07135481627260025));
  const reg b_lo = V::set1(f32 ? T(2.3988325e-09f) : T(-6.175149918155315e-19));
  const T k = f32 ? T(12) : T(24);
  // min/max return their second operand when either is NaN: NaN passes through the clamp.
  const reg xc = V::max(V::set1(-k), V::min(V::set1(k), x));
  // s = x^2 exactly (hi + lo)
  const reg s_hi = V::mul(xc, xc);
  const reg s_lo = V::fmsub(xc, xc, s_hi);
  // p = B s
  const reg p_hi = V::mul(b_hi, s_hi);
  reg p_lo = V::fmsub(b_hi, s_hi, p_hi);
  p_lo = V::fmadd(b_hi, s_lo, V::fmadd(b_lo, s_hi, p_lo));
  // t = A + p (TwoSum on the high parts; if the compiler contracts B s_hi + A into one FMA,
  // t_hi moves by at most an ulp and t_hi + t_lo is still A + p to double-T precision)
  const reg t_hi = V::add(a_hi, p_hi);
  const reg bv = V::sub(t_hi, a_hi);
  const reg t_err = V::add(V::sub(a_hi, V::sub(t_hi, bv)), V::sub(p_hi, bv));
  const reg t_lo = V::add(t_err, V::add(a_lo, p_lo));
  // v = x t
  const reg v_hi = V::mul(xc, t_hi);
  const reg v_lo = V::fmadd(xc, t_lo, V::fmsub(xc, t_hi, v_hi));
  // e^-|v|: v has the sign of x
  const typename V::mask neg_x = V::le(x, V::zero());
  // e256 = 2^8 e: for x < 0 the result x e / (1 + e) is normal while e itself is already
  // subnormal (|x| up to 12), so e is kept scaled until the last multiply.
  const reg e256 = exp_hilo<Isa, T, 8>(V::neg(V::abs(v_hi)), V::select(neg_x, v_lo, V::neg(v_lo)));
  const reg inv256 = V::set1(T(1.0 / 256));
  const reg q256 = div_nr<Isa, T>(e256, V::fmadd(e256, inv256, V::set1(T(1))));
  const reg q = V::mul(q256, inv256);
  // x <= 0 (including -0, which keeps its sign): x q;  x > 0: x - x q.
  return V::select(neg_x, V::mul(V::mul(xc, q256), inv256), V::fnmadd(xc, q, x));
}

// GELU, erf form, float: x Phi(x), Phi the standard normal CDF.
// |x| < 1/2:  x Phi(x) = x/2 + (x^2/2) S(x^2/2), S(u) = erf(x/sqrt2)/x as a cubic in u = x^2/2
//   (fitted; its error is damped by |x| relative to the result, and the cancellation for x < 0
//   is at most 0.5 / Phi(-1/2) = 1.6x).
// |x| >= 1/2:  Q(a) = Phi(-a) = e^(-a^2/2) R(a) for a = |x|, R(a) = t P(t), t = 1 / (1 + a/2),
//   P of degree 10 fitted for relative error on a in [0.5, 13.25] (Lawson weighted minimax in
//   float64, coefficients rounded to float one at a time with refits: 0.04 ulp fit error).
//   x < 0: x Q(|x|);  x > 0: x - x Q(x), with Q < 0.31 (no cancellation).
// Precision matters in four places (each found by measurement; without any one of them the
// 4-ulp bound is exceeded):
// - x^2/2 is computed exactly as h + l by FMA and l enters the exp reduction: the rounding of
//   x^2/2 alone would cost about x^2/2 ulps in the tail;
// - t is used as t + t_lo (its rounding error recovered by FMA residuals) in the factor t of R:
//   R is about 1.5x as sensitive to t as t is to rounding;
// - x is folded into the last step of the exp polynomial (mul_exp_neg_hilo), one rounding
//   fewer than x * e^(-x^2/2) (measured max 4.3 -> 2.9 ulp on a dense grid of the tail);
// - the product is formed as ((x e^(-x^2/2)) P) t: no intermediate leaves the normal range
//   while the result is still normal.
// Cost: about twice torch's A&S-type erf (which is off by 10^3 - 10^7 ulps for x < -3).
// |x| is clamped to 13.25, past which x Phi(x) is x or below FLT_MIN; NaN propagates.
// Max error measured: 3.86 ulp at x = -2.2053 (exhaustive over all 2^32 float32 inputs,
// AVX-512, benchmarks/math_exhaustive.py); the previous version without the x folding: 4.32.
template <class Isa>
inline typename Vec<Isa, float>::reg gelu_erf(typename Vec<Isa, float>::reg x) {
  using V = Vec<Isa, float>;
  using reg = typename V::reg;
  static constexpr float p[] = {0.19947264f,  0.19942847f,  0.1500748f,  0.047648337f,
                                -0.06297449f, -0.050352782f, -0.37211913f, 1.0545448f,
                                -1.1209424f,  0.57519203f,  -0.12000148f};
  static constexpr float s[] = {0.7978845f, -0.26595518f, 0.07961745f, -0.017550027f};
  const reg one = V::set1(1.0f);
  const reg half = V::set1(0.5f);
  // min/max return their second operand when either is NaN: NaN passes through the clamp.
  const reg xc = V::max(V::set1(-13.25f), V::min(V::set1(13.25f), x));
  const reg a = V::abs(xc);
  // x^2/2 = h + l exactly
  const reg xh = V::mul(xc, half);
  const reg h = V::mul(xh, xc);
  const reg l = V::fmsub(xh, xc, h);
  // |x| < 1/2: x/2 + h S(h), which has the sign of x (copysign restores it for x = -0)
  const reg y_small = V::copysign(V::fmadd(h, horner<Isa, float>(h, s), xh), xc);
  // |x| >= 1/2
  // t + t_lo = 1 / (1 + a/2) to about 2^-40: d + d_lo = 1 + a/2 exactly, t ~ 1/d, and
  // 1/(d + d_lo) = t (1 + (1 - d t) - d_lo t) to first order.
  const reg d = V::fmadd(a, half, one);
  const reg t = rcp_nr<Isa, float>(d);
  const reg d_lo = V::fmadd(a, half, V::sub(one, d));
  const reg t_lo = V::mul(t, V::fnmadd(d_lo, t, V::fnmadd(d, t, one)));
  const reg xq = V::mul(mul_exp_neg_hilo<Isa, float>(xc, h, l), horner<Isa, float>(t, p));
  const reg w = V::fmadd(xq, t, V::mul(xq, t_lo));  // x Q(|x|), one rounding for the factor t
  const reg y_tail = V::select(V::le(x, V::zero()), w, V::sub(x, w));
  return V::select(V::lt(a, half), y_small, y_tail);
}

// GELU, erf form, double, one element with libm (a vector path would need a much longer fit;
// float is the fast path): x/2 erfc(z), z = -x/sqrt(2). z is computed as hi + lo and the low
// part is applied to first order, erfc(zh + zl) = erfc(zh) - 2/sqrt(pi) e^(-zh^2) zl: otherwise
// the rounding of z alone costs about 2 z^2 ulps in the tail.
// x < -30: erfc(z) approaches the subnormal range (and is flushed inside libm under FTZ) while
// x Phi(x) is still normal, so the asymptotic series is used instead:
//   x Phi(x) = -phi(x) (1 - u + 3u^2 - 15u^3 + ... - 135135 u^7),  u = 1/x^2,
// whose truncation error is below the first omitted term, 2027025 u^8 < 5e-18 for x <= -30;
// phi(x) = e^(-x^2/2) / sqrt(2 pi) with x^2 = h + l exact by FMA (e^(-h/2) (1 - l/2)).
// Max error measured: 2.92 ulp (mpmath check of 4000 points in [-37, 0.5]; glibc erfc, exp).
static inline double gelu_erf_f64(double x) {
  if (std::isnan(x)) return x;
  if (x > 40.0) return x;      // Phi(40) = 1 to double precision
  if (x < -40.0) return -0.0;  // x Phi(x) < DBL_MIN
  if (x < -30.0) {
    const double h = x * x, l = std::fma(x, x, -h);
    const double u = 1.0 / h;
    const double series =
        1.0 + u * (-1.0 + u * (3.0 + u * (-15.0 + u * (105.0 + u * (-945.0 + u * (10395.0 + u * -135135.0))))));
    const double phi = 0.3989422804014327 * (std::exp(-0.5 * h) * (1.0 - 0.5 * l));
    return -(phi * series);
  }
  const double c_hi = 0.7071067811865476;  // 1/sqrt(2) = c_hi + c_lo
  const double c_lo = -4.833646656726457e-17;
  const double p = x * c_hi;
  const double p_err = std::fma(x, c_hi, -p) + x * c_lo;
  const double z_hi = -p, z_lo = -p_err;
  const double erfc_z = std::erfc(z_hi) - 1.1283791670955126 * std::exp(-z_hi * z_hi) * z_lo;
  return 0.5 * x * erfc_z;
}

}  // namespace math
}  // namespace seqblocks
