// Vec<Interleaved<Isa, N>, T>: N registers of Vec<Isa, T> handled as one. Every operation is
// applied to the N registers in turn, so a kernel written once against Vec (templated on the
// ISA tag) and instantiated with Interleaved<Isa, N> issues N independent dependency chains
// interleaved instruction by instruction. For long kernels whose throughput is limited by how
// much independent work the out-of-order window finds (gelu_erf, AVX-512: 6.9 -> 6.2 ns per 16
// floats with N = 4) this helps where unrolling the loop around the kernel does not: the compiler
// keeps each call's instructions together.
//
// Offered: the operations that elementwise kernels use (arithmetic, fused multiply-adds,
// min/max, abs/neg, comparisons, select and all, ldexp, mul_pow2i, lookup32 for float); loads and stores stay
// with the caller (a register pack is an array: r.v[i] is register i).
#pragma once

#include "simd/vec.h"

namespace seqblocks {

template <class Isa, int N>
struct Interleaved {};

template <class Isa, int N, class T>
struct Vec<Interleaved<Isa, N>, T> {
  using V = Vec<Isa, T>;
  struct reg {
    typename V::reg v[N];
  };
  struct mask {
    typename V::mask m[N];
  };
  static constexpr int width = N * V::width;
  static constexpr int rcp_approx_bits = V::rcp_approx_bits;
  static constexpr bool ldexp_is_one_instruction = V::ldexp_is_one_instruction;

  template <class F>
  static reg map(F f) {
    reg r;
    for (int i = 0; i < N; ++i) r.v[i] = f(i);
    return r;
  }
  template <class F>
  static mask map_mask(F f) {
    mask r;
    for (int i = 0; i < N; ++i) r.m[i] = f(i);
    return r;
  }

  static reg zero() { return map([](int) { return V::zero(); }); }
  static reg set1(T x) { return map([x](int) { return V::set1(x); }); }
  static reg add(reg a, reg b) { return map([&](int i) { return V::add(a.v[i], b.v[i]); }); }
  static reg sub(reg a, reg b) { return map([&](int i) { return V::sub(a.v[i], b.v[i]); }); }
  static reg mul(reg a, reg b) { return map([&](int i) { return V::mul(a.v[i], b.v[i]); }); }
  static reg div(reg a, reg b) { return map([&](int i) { return V::div(a.v[i], b.v[i]); }); }
  static reg min(reg a, reg b) { return map([&](int i) { return V::min(a.v[i], b.v[i]); }); }
  static reg max(reg a, reg b) { return map([&](int i) { return V::max(a.v[i], b.v[i]); }); }
  static reg fmadd(reg a, reg b, reg c) { return map([&](int i) { return V::fmadd(a.v[i], b.v[i], c.v[i]); }); }
  static reg fnmadd(reg a, reg b, reg c) { return map([&](int i) { return V::fnmadd(a.v[i], b.v[i], c.v[i]); }); }
  static reg fmsub(reg a, reg b, reg c) { return map([&](int i) { return V::fmsub(a.v[i], b.v[i], c.v[i]); }); }
  static reg abs(reg a) { return map([&](int i) { return V::abs(a.v[i]); }); }
  static reg abs_min(reg a, reg b) { return map([&](int i) { return V::abs_min(a.v[i], b.v[i]); }); }
  static reg neg(reg a) { return map([&](int i) { return V::neg(a.v[i]); }); }
  static reg ldexp(reg a, reg n) { return map([&](int i) { return V::ldexp(a.v[i], n.v[i]); }); }
  static reg mul_pow2i(reg a, reg n) { return map([&](int i) { return V::mul_pow2i(a.v[i], n.v[i]); }); }
  static reg copysign(reg a, reg b) { return map([&](int i) { return V::copysign(a.v[i], b.v[i]); }); }
  static reg rcp_approx(reg a) { return map([&](int i) { return V::rcp_approx(a.v[i]); }); }
  static reg lookup32(const T (&table)[32], reg idx) {
    return map([&](int i) { return V::lookup32(table, idx.v[i]); });
  }
  static mask lt(reg a, reg b) { return map_mask([&](int i) { return V::lt(a.v[i], b.v[i]); }); }
  static mask le(reg a, reg b) { return map_mask([&](int i) { return V::le(a.v[i], b.v[i]); }); }
  static mask gt(reg a, reg b) { return map_mask([&](int i) { return V::gt(a.v[i], b.v[i]); }); }
  static mask ge(reg a, reg b) { return map_mask([&](int i) { return V::ge(a.v[i], b.v[i]); }); }
  static reg select(mask m, reg a, reg b) { return map([&](int i) { return V::select(m.m[i], a.v[i], b.v[i]); }); }
  static bool all(mask m) {  // one branch for all N registers
    bool r = true;
    for (int i = 0; i < N; ++i) r &= V::all(m.m[i]);
    return r;
  }
};

}  // namespace seqblocks
