// GELU on Vec<Isa, T> registers: the exact (erf) form x * Phi(x) and PyTorch's tanh
// approximation, built on cpp/math/exp.h.
#pragma once

#include <cmath>
#include <type_traits>

#include "math/exp.h"
#include "math/gelu_erf_table.h"
#include "simd/interleaved.h"

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

// sum_j coef[j][k] r^j with k = round(scale a) and r = a - centre[k]: one of the 32-interval
// piecewise polynomials of gelu_erf_table.h, its coefficients picked per lane by lookup32.
template <class Isa, int NCoef>
inline typename Vec<Isa, float>::reg gelu_erf_table_poly(typename Vec<Isa, float>::reg a, float scale,
                                                         const float (&centre)[32],
                                                         const float (&coef)[NCoef][32]) {
  using V = Vec<Isa, float>;
  using reg = typename V::reg;
  // The shifter 1.5 * 2^23 rounds scale a to the integer k in its low mantissa bits.
  const reg k_index = V::fmadd(a, V::set1(scale), V::set1(12582912.0f));
  const reg r = V::sub(a, V::lookup32(centre, k_index));
  reg p = V::lookup32(coef[NCoef - 1], k_index);
  for (int j = NCoef - 2; j >= 0; --j) p = V::fmadd(p, r, V::lookup32(coef[j], k_index));
  return p;
}

// Q(a) = Phi(-a) for 0 <= a <= kGeluErfFastLimit (6.5) from the fast table (gelu_erf below).
template <class Isa>
inline typename Vec<Isa, float>::reg gelu_erf_fast_q(typename Vec<Isa, float>::reg a) {
  return gelu_erf_table_poly<Isa>(a, kGeluErfFastScale, kGeluErfFastCentre, kGeluErfFast);
}

// R(a) = Phi(-a) e^(a^2/2) for 0 <= a <= 13.25 from the tail table (the fit is described at
// gelu_erf_tail below): the part gelu_erf_tail and gelu_erf_grad share.
template <class Isa>
inline typename Vec<Isa, float>::reg gelu_erf_ratio(typename Vec<Isa, float>::reg a) {
  return gelu_erf_table_poly<Isa>(a, kGeluErfScale, kGeluErfRCentre, kGeluErfR);
}

// GELU, erf form, float, for any x (gelu_erf uses it for x < -6.5 only): x Phi(x).
// One formula for all x, through the Gaussian factor:
//   a Q(a) = (a e^(-a^2/2)) R(a),  R(a) = Q(a) e^(a^2/2) = erfcx(a/sqrt2)/2,
// R smooth and positive (R(0) = 1/2, R ~ 1/(a sqrt(2 pi))): 32 polynomials of degree 5, one per
// interval k = round(2.375 a) (width 0.42; 2.375 a <= 31.5 on [0, 13.25]), in r = a - c_k.
// Fitted error 3.4e-8 = 0.57 x 2^-24 at worst, on a in [0.21, 0.63]; below 1e-9 for a > 6.
// Precision matters in three places:
// - a^2 is computed exactly as s + l by FMA and l enters the exp reduction (the 1/2 folded into
//   its constants, mul_exp_neg_half_hilo): the rounding of a^2/2 alone would cost about a^2/2
//   ulps in the tail;
// - a is folded into the last step of the exp polynomial, one rounding fewer than a * e^(-a^2/2),
//   and the last step, x - (a e^(-a^2/2)) R or -0 - (...) R, is one fused multiply-add;
// - a e^(-a^2/2) is formed as 2^m (a e^-u), never as e^(-a^2/2) first: e^(-a^2/2) is subnormal
//   for a > 13.2 while the result is still normal, and a e^(-a^2/2) >= 2 |result|.
// |x| is clamped to 13.25, past which x Phi(x) is x or below FLT_MIN (-0 for x < -13.25 after
// FTZ). Cost: 32 vector operations, 7 of them permutes.
template <class Isa>
inline typename Vec<Isa, float>::reg gelu_erf_tail(typename Vec<Isa, float>::reg x) {
  using V = Vec<Isa, float>;
  using reg = typename V::reg;
  const reg a = V::abs_min(x, V::set1(13.25f));  // NaN x gives 13.25; x carries it in the last step
  // a^2 = s + l exactly
  const reg s = V::mul(a, a);
  const reg l = V::fmsub(a, a, s);
  const reg ratio = gelu_erf_ratio<Isa>(a);
  const reg a_gauss = mul_exp_neg_half_hilo<Isa, float>(a, s, l);  // a e^(-a^2/2)
  return V::fnmadd(a_gauss, ratio, V::max(V::set1(-0.0f), x));
}

// fast with the lanes set in `tail` replaced by gelu_erf_tail(x). One branch per register, also
// inside an interleaved pack (unary.h): a register without such lanes skips the tail, whatever
// the other registers of its pack hold.
template <class Isa>
struct GeluErfTailLanes {
  template <class Mask, class Reg>
  static Reg blend(Mask tail, Reg x, Reg fast) {
    using V = Vec<Isa, float>;
    return V::any(tail) ? V::select(tail, gelu_erf_tail<Isa>(x), fast) : fast;
  }
};
template <class Isa, int N>
struct GeluErfTailLanes<Interleaved<Isa, N>> {
  template <class Mask, class Reg>
  static Reg blend(Mask tail, Reg x, Reg fast) {
    for (int i = 0; i < N; ++i) fast.v[i] = GeluErfTailLanes<Isa>::blend(tail.m[i], x.v[i], fast.v[i]);
    return fast;
  }
};

// GELU, erf form, float: x Phi(x), Phi the standard normal CDF.
// With a = |x| and Q(a) = Phi(-a):  x < 0: x Phi(x) = -a Q(a);  x >= 0: x - a Q(a), Q <= 1/2
// (no cancellation: the error of a Q(a) enters the result at most 1x). Two evaluations of Q,
// both 32 polynomials picked per lane by lookup32 (one permute per coefficient on AVX-512),
// fitted for relative error with float coefficients by tools/fit_gelu_erf.py (tables:
// gelu_erf_table.h); the centres c_k are points near k / scale where the function is within
// 0.002 ulp of a float, so the constant coefficient (the whole error at r = 0) is nearly exact,
// and r = a - c_k is exact:
// - x >= -6.5 (the fast path): Q itself, degree 7 in r on intervals k = round(4.84375 a) of
//   width 0.21 (a clamped to 6.5), fitted error 5.8e-9 = 0.10 x 2^-24. Q falls by e^(-c r) across
//   an interval around c, which this degree follows to 6.5; further out Q needs the Gaussian
//   factor. For x > 6.5, x - 6.5 Q(6.5) rounds to x (6.5 Q(6.5) = 2.6e-10 < ulp(6.5) / 2), and
//   +inf stays inf. 24 vector operations with the test for the tail, 9 of them permutes, no
//   exp, no division.
// - x < -6.5 (gelu_erf_tail, 32 operations): Q = e^(-a^2/2) R(a).
// Each lane takes the path its own x selects, so results never depend on the neighbours: a
// register with lanes on both sides of -6.5 computes both and selects per lane (about 2.5x the
// fast path: the tail then runs without the interleaving of unary.h); a register (or interleaved
// pack) entirely below -6.5 computes the tail alone. Activations rarely fall below -6.5 (a
// normal sample once in 2.5e10): the fast path is the cost of nearly every register.
// NaN propagates (the fast path clamps it to 6.5 and x carries it through max(-0, x) into the
// last step; NaN < -6.5 is false), and max(-0, x) keeps the sign of zero (-0 for x = -0, +0 for
// x = +0).
// Max error measured: 2.32 ulp at x = -12.557 (tail), 2.00 ulp at x = -6.0853 for x >= -6.5
// (fast), exhaustive over all 2^32 float32 inputs (benchmarks/math_exhaustive.py), the same at
// the same x on AVX-512, AVX2 and scalar; the single-path kernel before: 3.14 ulp at x = -4.3430.
// Speed, 2^20 floats of N(0, 1), one AVX-512 core: 0.34 ms vs 0.41 before and torch's 0.40; all
// below -6.5: 0.47 ms; 1% of them below -6.5, scattered: 0.44 ms.
template <class Isa>
inline typename Vec<Isa, float>::reg gelu_erf(typename Vec<Isa, float>::reg x) {
  using V = Vec<Isa, float>;
  using reg = typename V::reg;
  const auto tail = V::lt(x, V::set1(-kGeluErfFastLimit));
  if (V::all(tail)) return gelu_erf_tail<Isa>(x);  // the tail alone, interleaved if x is a pack
  const reg a = V::abs_min(x, V::set1(kGeluErfFastLimit));
  const reg fast = V::fnmadd(a, gelu_erf_fast_q<Isa>(a), V::max(V::set1(-0.0f), x));
  return GeluErfTailLanes<Isa>::blend(tail, x, fast);
}

// Derivative of the erf-form GELU, float: Phi(x) + x phi(x). With a = |x|, e = e^(-a^2/2),
// Q(a) = e R(a) as above and phi(x) = c e, c = 1/sqrt(2 pi):
//   x >= 0:  1 - Q(a) + a c e = 1 - t,    x < 0:  Q(a) - a c e = t,    t = e (R(a) - a c).
// The tail table and exp of gelu_erf_tail; no division and no GELU output to read (the previous
// kernel divided gelu(x) by x, after a pass computing gelu(x)). |x| is clamped to 13.25 as in
// gelu_erf_tail, where e < FLT_MIN is flushed: +inf gives 1, -inf 0 (t = 0); NaN propagates (by the
// last select). Max error measured: 2.65 ulps of Phi(x) + |x phi(x)| (the scale of the sum; the
// previous kernel: 64), at x = -11.85, over 4M points of [-14, 14] against scipy's ndtr in
// float64 (the same on AVX-512, AVX2 and scalar). Near x = -0.7518, GELU's minimum, the
// derivative itself vanishes and its error is absolute, as for any evaluation of Phi + x phi.
template <class Isa>
inline typename Vec<Isa, float>::reg gelu_erf_grad(typename Vec<Isa, float>::reg x) {
  using V = Vec<Isa, float>;
  using reg = typename V::reg;
  const reg a = V::abs_min(x, V::set1(13.25f));
  const reg s = V::mul(a, a);
  const reg l = V::fmsub(a, a, s);
  const reg ratio = gelu_erf_ratio<Isa>(a);
  const reg e = mul_exp_neg_half_hilo<Isa, float>(V::set1(1.0f), s, l);
  const reg t = V::mul(e, V::fnmadd(a, V::set1(0.3989422804014327f), ratio));
  // (abs_min turned a NaN x into 13.25: neither comparison holds for it, so x itself is returned)
  return V::select(V::lt(x, V::zero()), t, V::select(V::ge(x, V::zero()), V::sub(V::set1(1.0f), t), x));
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
