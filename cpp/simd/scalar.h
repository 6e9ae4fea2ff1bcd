// Vec<Scalar, T>: one lane, plain C++. This is the reference path: it always exists, is always
// tested and gives the same results as the SIMD paths up to the rounding of FMA contraction.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace seqblocks {

template <class T>
struct ScalarVecBase {
  using reg = T;
  using mask = bool;
  static constexpr int width = 1;

  static reg zero() { return T(0); }
  static reg set1(T x) { return x; }
  static reg load(const T* p) { return *p; }
  static void store(T* p, reg v) { *p = v; }
  static reg load_tail(const T* p, int n) { return n > 0 ? *p : T(0); }
  static void store_tail(T* p, reg v, int n) {
    if (n > 0) *p = v;
  }
  static reg add(reg a, reg b) { return a + b; }
  static reg sub(reg a, reg b) { return a - b; }
  static reg mul(reg a, reg b) { return a * b; }
  static reg div(reg a, reg b) { return a / b; }
  static reg min(reg a, reg b) { return a < b ? a : b; }
  static reg max(reg a, reg b) { return a > b ? a : b; }
  static reg fmadd(reg a, reg b, reg c) { return std::fma(a, b, c); }
  static reg fnmadd(reg a, reg b, reg c) { return std::fma(-a, b, c); }
  static reg fmsub(reg a, reg b, reg c) { return std::fma(a, b, -c); }
  static reg abs(reg a) { return std::fabs(a); }
  static reg abs_min(reg a, reg b) { return min(abs(a), b); }  // NaN a: b (min's rule)
  static reg neg(reg a) { return -a; }
  static reg sqrt(reg a) { return std::sqrt(a); }
  static mask lt(reg a, reg b) { return a < b; }
  static mask le(reg a, reg b) { return a <= b; }
  static mask gt(reg a, reg b) { return a > b; }
  static mask ge(reg a, reg b) { return a >= b; }
  static mask eq(reg a, reg b) { return a == b; }
  static mask isnan(reg a) { return a != a; }
  static mask mask_or(mask a, mask b) { return a || b; }
  static mask mask_and(mask a, mask b) { return a && b; }
  static mask mask_not(mask a) { return !a; }
  static reg select(mask m, reg a, reg b) { return m ? a : b; }
  static bool any(mask m) { return m; }
  static bool all(mask m) { return m; }
  static reg round_nearest(reg a) { return std::nearbyint(a); }
  static reg copysign(reg mag, reg sgn) { return std::copysign(mag, sgn); }
  static constexpr int rcp_approx_bits = 64;  // exact
  static constexpr bool ldexp_is_one_instruction = false;
  static reg rcp_approx(reg a) { return T(1) / a; }
  static T hsum(reg a) { return a; }
};

// a * 2^n as two exact power-of-two factors, each in the normal range (the same split as the
// AVX2 path, so results agree bit for bit).
template <class V>
static inline typename V::reg ldexp_by_halves(typename V::reg a, typename V::reg n) {
  const typename V::reg n1 = V::round_nearest(V::mul(n, V::set1(0.5)));
  return V::mul(V::mul(a, V::pow2i(n1)), V::pow2i(V::sub(n, n1)));
}

template <>
struct Vec<Scalar, float> : ScalarVecBase<float> {
  static reg lookup32(const float (&table)[32], reg idx) {
    uint32_t bits;
    std::memcpy(&bits, &idx, sizeof bits);
    return table[bits & 31u];
  }
  // NaN n is caught before pow2i (whose conversion to an integer would be undefined).
  static reg ldexp(reg a, reg n) { return n != n ? a + n : ldexp_by_halves<Vec>(a, n); }
  static reg mul_pow2i(reg a, reg n) { return n != n ? a + n : a * pow2i(n); }
  static reg pow2i(reg n) {
    const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
    float r;
    std::memcpy(&r, &bits, sizeof r);
    return r;
  }
};

template <>
struct Vec<Scalar, double> : ScalarVecBase<double> {
  // NaN n is caught before pow2i (whose conversion to an integer would be undefined).
  static reg ldexp(reg a, reg n) { return n != n ? a + n : ldexp_by_halves<Vec>(a, n); }
  static reg mul_pow2i(reg a, reg n) { return n != n ? a + n : a * pow2i(n); }
  static reg pow2i(reg n) {
    const int64_t bits = (static_cast<int64_t>(n) + 1023) << 52;
    double r;
    std::memcpy(&r, &bits, sizeof r);
    return r;
  }
};

}  // namespace seqblocks
