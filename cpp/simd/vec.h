// A thin typed vector layer: Vec<Isa, T> exposes the same static operations for every ISA, so
// a kernel is written once as a template over Isa and compiled once per ISA in its own
// translation unit (cpp/runtime/isa_instance.cpp).
//
// Rules for code in the dispatched translation units:
// - the ISA is a template parameter of every kernel, so instantiations for different ISAs have
//   different symbols and the linker can never merge an AVX-512 copy into the scalar path;
// - no SIMD constants at namespace scope (they would run before dispatch: SIGILL);
// - non-template helpers in headers are `static inline` (internal linkage, one copy per TU).
//
// Operations (all static members of Vec<Isa, T>):
//   width                       lanes per register
//   zero(), set1(x)             broadcast
//   load(p), store(p, v)        unaligned full-width access
//   load_tail(p, n)             first n < width lanes, the rest zero (never reads past p + n)
//   store_tail(p, v, n)         first n < width lanes (never writes past p + n)
//   add sub mul div min max     lane-wise; min/max return the second operand if either is NaN
//                               or both are zero (so max(-0, x) is x for x = +-0, -0 for x < 0)
//   fmadd(a, b, c) = a*b + c    fused, one rounding
//   fnmadd(a, b, c) = c - a*b   fused, one rounding
//   fmsub(a, b, c) = a*b - c    fused, one rounding (a*b - round(a*b) is exact)
//   abs(a), neg(a), sqrt(a)
//   abs_min(a, b)               min(|a|, b) for b >= 0; NaN a gives b on every ISA (AVX-512:
//                               one vrangeps, which returns the non-NaN operand)
//   lt le gt ge eq (a, b) -> mask; isnan(a) -> mask; select(m, a, b) = m ? a : b
//   mask_or, mask_and, mask_not
//   any(m), all(m)              true if some / every lane is set (Interleaved: all only, for one
//                               branch over its registers; any is per register)
//   round_nearest(a)            round half to even, as T
//   pow2i(n)                    2^n for integral-valued n in the normal exponent range, and
//                               +0 for the exponent just below it (float -127, double -1023)
//   mul_pow2i(a, n)             a * pow2i(n) (same n), with the same rounding and flushing as
//                               that multiply; NaN a gives NaN (n may then be NaN as well).
//                               AVX-512: one vscalefps instead of convert, add, shift, multiply
//   ldexp(a, n)                 a * 2^n for integral-valued n, |n| <= 252 (float) / 2044 (double):
//                               exact when the result is normal, overflows to +-inf and
//                               underflows (to a subnormal, or 0 under FTZ) like a multiply;
//                               NaN a gives NaN (n may then be NaN as well)
//   ldexp_is_one_instruction    constexpr bool: ldexp is one vscalefps (AVX-512), not the exact
//                               two-factor sequence (AVX2, scalar: ~11 instructions)
//   rcp_approx(a)               ~1/a for finite nonzero a with |a| in [2^-100, 2^100], relative
//                               error < 2^-rcp_approx_bits (AVX2 rcp_ps: 11, AVX-512 rcp14: 14,
//                               scalar: exact division, 64); refine with Newton steps
//                               (cpp/math/exp.h: rcp_nr)
//   copysign(mag, sgn), hsum(a)
//   lookup32(table, idx)        float only: table[j] per lane, table a float[32] (static
//                               storage), j = the low 5 bits of the lane's bit pattern. An
//                               integral k in [0, 32) is passed as the float k + 1.5 * 2^23,
//                               whose low mantissa bits are k (e.g. fmadd(a, 2, 1.5 * 2^23)
//                               indexes by round(2a)). AVX-512: one permutex2var; AVX2: four
//                               permutevar8x32 and three blends; scalar: an array index.
#pragma once

#include <cstdint>

#include "runtime/isa.h"

namespace seqblocks {

template <class Isa, class T>
struct Vec;

}  // namespace seqblocks

#include "simd/scalar.h"

#if defined(__AVX2__) || defined(__AVX512F__)
// GCC 12 reports -Wmaybe-uninitialized inside its own AVX-512 intrinsic headers (the
// _mm512_undefined_* idiom used by min/max/roundscale/cvt/shift; GCC bug 105593). The
// diagnostic is located in the header, so it is silenced for the header's lines only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

#if defined(__AVX2__) && defined(__FMA__)
#include "simd/avx2.h"
#endif
#if defined(__AVX512F__) && defined(__AVX512DQ__)
#include "simd/avx512.h"
#endif
