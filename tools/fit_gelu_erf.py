"""Fit the coefficient tables of gelu_erf (cpp/math/gelu.h) and print them as a C++ header:

    python tools/fit_gelu_erf.py > cpp/math/gelu_erf_table.h     (numpy, scipy, mpmath; ~10 s)

With Q(a) = Phi(-a) = erfc(a / sqrt 2) / 2 for a = |x| >= 0, GELU is x Phi(x) = -a Q(a) for
x < 0 and x - a Q(a) for x >= 0. Two tables of piecewise polynomials, each on the 32 intervals
k = round(s a), k = 0..31 (|a - k/s| <= 1/(2 s); interval 0 is [0, 1/(2 s)]), with s = FAST_SCALE
or SCALE, in r = a - c_k, one lookup32 table per coefficient:

- the fast table (kGeluErfFast*): Q itself, degree FAST_DEGREE, on a in [0, FAST_LIMIT]. Q
  falls by about e^(-c r) across the interval around c, which a degree-7 polynomial follows to
  full float precision while c / (2 FAST_SCALE), the largest |c r|, stays below ~0.7: up to
  FAST_LIMIT = 6.5.
- the tail table (kGeluErfR): R(a) = Q(a) e^(a^2/2) = erfcx(a / sqrt 2) / 2, degree DEGREE, on
  a in [0, 13.47]. R is smooth and positive (R(0) = 1/2, R(a) ~ 1/(a sqrt(2 pi)) for large a),
  and the kernel multiplies it by a e^(-a^2/2), which no polynomial in a follows out there.
  SCALE = 2.375 = 19/8 is the smallest simple value with round(SCALE * 13.25) <= 31, so the 32
  entries cover the kernel's whole range [0, 13.25].

The centres. c_0 = 0 (Q(0) = R(0) = 1/2 exactly). For k >= 1, c_k is the multiple of 2^-16
within 2^-7 of k/SCALE at which the function is closest to a float32 (searched over 1025
candidates): the constant coefficient is then the function at c_k to within ~0.002 ulp, where a
rounded value at k/SCALE would carry up to 0.5 ulp of relative error that no other coefficient
can correct (it is the whole error at r = 0). r = a - c_k is exact in float: c_k is a float and,
for k >= 1, c_k / 2 <= a <= 2 c_k (Sterbenz).

How. Minimax for RELATIVE error (Lawson's iteratively reweighted least squares on 1200 Chebyshev
points per interval, in float64), with the constant coefficient fixed; the others are rounded
to float32 one at a time, lowest degree first, and the remaining higher ones refitted after
each rounding so that they absorb it. The printed error is that of the float32 coefficients
evaluated exactly (the kernel's own rounding comes on top). The references are scipy's erfc
and erfcx, checked against mpmath at 40 digits at every centre and at 200 points.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
from scipy.special import erfc, erfcx

DEGREE = 5
SCALE = 2.375   # k = round(SCALE a)
FAST_DEGREE = 7
FAST_LIMIT = 6.5
FAST_SCALE = 4.84375  # = 155/32, exact in float; round(FAST_SCALE * FAST_LIMIT) = round(31.48) = 31
TABLE = 32      # one lookup32 table per coefficient, one entry per interval
POINTS = 1200
CENTRE_GRID = 2.0**-16
CENTRE_STEPS = 512  # candidates k/SCALE + i 2^-16, |i| <= 512 (within 2^-7 of k/SCALE)

mpmath.mp.dps = 40


def r_ref(a: np.ndarray) -> np.ndarray:
    return 0.5 * erfcx(a / math.sqrt(2.0))


def r_exact(a: float) -> mpmath.mpf:
    a = mpmath.mpf(a)
    return mpmath.erfc(a / mpmath.sqrt(2)) * mpmath.exp(a * a / 2) / 2


def q_ref(a: np.ndarray) -> np.ndarray:
    return 0.5 * erfc(a / math.sqrt(2.0))


def q_exact(a: float) -> mpmath.mpf:
    return mpmath.erfc(mpmath.mpf(a) / mpmath.sqrt(2)) / 2


def ulps_from_float32(v: float) -> float:
    """|v - fl32(v)| in ulps of float32."""
    f = np.float32(v)
    return abs(v - float(f)) / float(np.spacing(f))


def best_centre(k: int, scale: float, ref) -> float:
    # Multiples of 2^-16 below 32: float32 values, so the kernel's centre is the fitted one.
    cand = (round(k / scale / CENTRE_GRID) + np.arange(-CENTRE_STEPS, CENTRE_STEPS + 1)) * CENTRE_GRID
    miss = np.array([ulps_from_float32(v) for v in ref(cand)])
    return float(cand[int(np.argmin(miss))])


def lawson_fit(s: np.ndarray, f: np.ndarray, fixed: np.ndarray, n_free: int, iters: int = 400):
    """Free coefficients d[len(fixed):] (in powers of s) minimizing max |p(s)/f - 1|, with
    d[:len(fixed)] given. Returns the free part."""
    j0 = len(fixed)
    basis = np.vander(s, j0 + n_free, increasing=True)
    target = 1.0 - basis[:, :j0] @ fixed / f
    a = basis[:, j0:] / f[:, None]
    w = np.full(len(s), 1.0 / len(s))
    for _ in range(iters):
        sw = np.sqrt(w)
        d, *_ = np.linalg.lstsq(a * sw[:, None], target * sw, rcond=None)
        err = np.abs(a @ d - target)
        # The floor keeps weights from vanishing where the fit is already exact to rounding.
        w = w * np.maximum(err, 1e-6 * err.max())
        w /= w.sum()
    return d


def fit_rounded(s: np.ndarray, f: np.ndarray, d0: float, n: int) -> np.ndarray:
    """n float32 coefficients in powers of s with d[0] = d0 given, the others rounded lowest
    degree first with refits."""
    fixed = np.array([d0])
    for j in range(1, n):
        free = lawson_fit(s, f, fixed, n - j)
        fixed = np.append(fixed, float(np.float32(free[0])))
    return fixed


def fit_table(ref, exact, scale: float, degree: int, name: str):
    """Centres (TABLE,), coefficients (degree + 1, TABLE) and report lines of one table."""
    centres = np.zeros(TABLE, dtype=np.float32)
    table = np.zeros((degree + 1, TABLE), dtype=np.float32)
    worst, worst_ref, report = (0.0, -1), 0.0, []
    nodes = np.cos(np.pi * (np.arange(POINTS) + 0.5) / POINTS)
    half_width = 0.5 / scale
    for k in range(TABLE):
        lo, hi = max(0.0, k / scale - half_width), k / scale + half_width
        centre = best_centre(k, scale, ref) if k else 0.0
        f0 = exact(centre)
        worst_ref = max(worst_ref, abs(float(ref(np.array([centre]))[0] / f0 - 1)))
        a = 0.5 * (lo + hi) + 0.5 * (hi - lo) * nodes
        # Powers of s = 4r are better conditioned; c_j = d_j 4^j is exact in float.
        s = 4.0 * (a - centre)
        coef = fit_rounded(s, ref(a), float(np.float32(float(f0))), degree + 1) * 4.0 ** np.arange(degree + 1)
        assert np.all(coef.astype(np.float32) == coef), "coefficients must be float32 values"
        assert float(np.float32(centre)) == centre, "centres must be float32 values"
        check = np.linspace(lo, hi, 20001)
        err = float(np.max(np.abs(np.polynomial.polynomial.polyval(check - centre, coef) / ref(check) - 1)))
        centres[k], table[:, k] = centre, coef
        worst = max(worst, (err, k))
        report.append(f"//   k={k:2d}  a in [{lo:5.2f}, {hi:5.2f}]  c_k = {centre:<13.10g} "
                      f"c0 - {name}(c_k) {ulps_from_float32(float(f0)):.4f} ulp  error {err:.2e}")
    pts = np.linspace(0.01, TABLE / scale, 200)
    exact_pts = np.array([float(exact(v)) for v in pts])
    worst_ref = max(worst_ref, float(np.max(np.abs(ref(pts) / exact_pts - 1))))
    report.append(f"// worst {worst[0]:.2e} = {worst[0] / 2**-24:.2f} x 2^-24 (k = {worst[1]}); "
                  f"reference vs mpmath: {worst_ref:.1e}")
    return centres, table, report


def row(vals) -> str:
    text = [repr(float(v)) + "f" if v != 0 else "0.0f" for v in vals]
    return "\n".join("    " + ", ".join(text[i:i + 4]) + "," for i in range(0, TABLE, 4))


def print_table(name: str, centres, table) -> None:
    print(f"alignas(64) static constexpr float {name}Centre[{TABLE}] = {{\n{row(centres)}\n}};\n")
    print(f"alignas(64) static constexpr float {name}[{len(table)}][{TABLE}] = {{")
    for j in range(len(table)):
        print(f"  {{  // c{j}\n{row(table[j])}\n  }},")
    print("};\n")


def main() -> None:
    fast = fit_table(q_ref, q_exact, FAST_SCALE, FAST_DEGREE, "Q")
    tail = fit_table(r_ref, r_exact, SCALE, DEGREE, "R")
    print("// Generated by tools/fit_gelu_erf.py (see its docstring); do not edit by hand.")
    print("// Tables of gelu_erf (cpp/math/gelu.h), each on 32 intervals k = round(scale a), a = |x|:")
    print(f"// - fast: a <= {FAST_LIMIT}, k = round({FAST_SCALE} a),")
    print("//   Q(a) = Phi(-a) = sum_j kGeluErfFast[j][k] r^j,  r = a - kGeluErfFastCentre[k];")
    print(f"// - tail: a <= 13.25, k = round({SCALE} a),")
    print("//   R(a) = Q(a) e^(a^2/2) = sum_j kGeluErfR[j][k] r^j,  r = a - kGeluErfRCentre[k].")
    print("// Max relative error of each polynomial (float coefficients, exact evaluation), fast:")
    print("\n".join(fast[2]))
    print("// tail:")
    print("\n".join(tail[2]))
    print("#pragma once\n\nnamespace seqblocks {\nnamespace math {\n")
    print(f"static constexpr float kGeluErfFastLimit = {FAST_LIMIT}f;  // the fast table covers a <= this")
    print(f"static constexpr float kGeluErfFastScale = {FAST_SCALE}f;  // k = round(kGeluErfFastScale a)")
    print(f"static constexpr float kGeluErfScale = {SCALE}f;  // k = round(kGeluErfScale a)\n")
    print_table("kGeluErfFast", fast[0], fast[1])
    print_table("kGeluErfR", tail[0], tail[1])
    print("}  // namespace math\n}  // namespace seqblocks")


if __name__ == "__main__":
    main()
