"""Fit the coefficient tables of gelu_erf (cpp/math/gelu.h) and print them as a C++ header:

    python tools/fit_gelu_erf.py > cpp/math/gelu_erf_table.h     (numpy, scipy, mpmath; ~5 s)

What is fitted. With Q(a) = Phi(-a) = erfc(a / sqrt 2) / 2 for a = |x| >= 0,
    Q(a) = e^(-a^2/2) R(a),   R(a) = Q(a) e^(a^2/2) = erfcx(a / sqrt 2) / 2,
R smooth and positive (R(0) = 1/2, R(a) ~ 1/(a sqrt(2 pi)) for large a). [0, 13.47] is cut into
the 32 intervals k = round(SCALE a), k = 0..31 (|a - k/SCALE| <= 1/(2 SCALE); interval 0 is
[0, 1/(2 SCALE)]), and on each R is a polynomial of degree DEGREE in r = a - c_k.
SCALE = 2.375 = 19/8 is the smallest simple value with round(SCALE * 13.25) <= 31, so the 32
entries of one lookup32 table cover the kernel's whole range [0, 13.25].

The centres. c_0 = 0 (R(0) = 1/2 exactly). For k >= 1, c_k is the multiple of 2^-16 within 2^-7
of k/SCALE at which R(c_k) is closest to a float32 (searched over 1025 candidates): the
constant coefficient is then R(c_k) to within ~0.002 ulp, where a rounded R(k/SCALE) would
carry up to 0.5 ulp of relative error that no other coefficient can correct (it is the whole
error at r = 0). r = a - c_k is exact in float: |r| < 1/4 and, for k >= 1, a > 1/5 and c_k
are multiples of 2^-26.

How. Minimax for RELATIVE error (Lawson's iteratively reweighted least squares on 1200 Chebyshev
points per interval, in float64), with the constant coefficient fixed; the others are rounded
to float32 one at a time, lowest degree first, and the remaining higher ones refitted after
each rounding so that they absorb it. The printed error is that of the float32 coefficients
evaluated exactly (the kernel's own rounding comes on top). The reference is scipy's erfcx,
checked against mpmath at 40 digits at every centre and at 200 points.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
from scipy.special import erfcx

DEGREE = 5
SCALE = 2.375   # k = round(SCALE a)
HALF_WIDTH = 0.5 / SCALE
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


def ulps_from_float32(v: float) -> float:
    """|v - fl32(v)| in ulps of float32."""
    f = np.float32(v)
    return abs(v - float(f)) / float(np.spacing(f))


def best_centre(k: int) -> float:
    cand = k / SCALE + CENTRE_GRID * np.arange(-CENTRE_STEPS, CENTRE_STEPS + 1)
    miss = np.array([ulps_from_float32(v) for v in r_ref(cand)])
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


def main() -> None:
    centres = np.zeros(TABLE, dtype=np.float32)
    table = np.zeros((DEGREE + 1, TABLE), dtype=np.float32)
    worst, worst_ref, report = (0.0, -1), 0.0, []
    nodes = np.cos(np.pi * (np.arange(POINTS) + 0.5) / POINTS)
    for k in range(TABLE):
        lo, hi = max(0.0, k / SCALE - HALF_WIDTH), k / SCALE + HALF_WIDTH
        centre = best_centre(k) if k else 0.0
        r0 = r_exact(centre)
        worst_ref = max(worst_ref, abs(float(r_ref(np.array([centre]))[0] / r0 - 1)))
        a = 0.5 * (lo + hi) + 0.5 * (hi - lo) * nodes
        # Powers of s = 4r are better conditioned; c_j = d_j 4^j is exact in float.
        s = 4.0 * (a - centre)
        coef = fit_rounded(s, r_ref(a), float(np.float32(float(r0))), DEGREE + 1) * 4.0 ** np.arange(DEGREE + 1)
        assert np.all(coef.astype(np.float32) == coef), "coefficients must be float32 values"
        check = np.linspace(lo, hi, 20001)
        err = float(np.max(np.abs(np.polynomial.polynomial.polyval(check - centre, coef) / r_ref(check) - 1)))
        centres[k], table[:, k] = centre, coef
        worst = max(worst, (err, k))
        report.append(f"//   k={k:2d}  a in [{lo:5.2f}, {hi:5.2f}]  c_k = {centre:<13.10g} "
                      f"c0 - R(c_k) {ulps_from_float32(float(r0)):.4f} ulp  error {err:.2e}")
    pts = np.linspace(0.01, 13.5, 200)
    exact = np.array([float(r_exact(v)) for v in pts])
    worst_ref = max(worst_ref, float(np.max(np.abs(r_ref(pts) / exact - 1))))

    def row(vals) -> str:
        text = [repr(float(v)) + "f" if v != 0 else "0.0f" for v in vals]
        return "\n".join("    " + ", ".join(text[i:i + 4]) + "," for i in range(0, TABLE, 4))

    print("// Generated by tools/fit_gelu_erf.py (see its docstring); do not edit by hand.")
    print(f"// Tables of gelu_erf (cpp/math/gelu.h): on interval k = round({SCALE} a), a = |x| <= 13.25,")
    print("//   R(a) = Q(a) e^(a^2/2) = sum_j kGeluErfR[j][k] r^j,  r = a - kGeluErfCentre[k].")
    print("// Max relative error of each polynomial (float coefficients, exact evaluation):")
    print("\n".join(report))
    print(f"// worst {worst[0]:.2e} = {worst[0] / 2**-24:.2f} x 2^-24 (k = {worst[1]}); "
          f"reference vs mpmath: {worst_ref:.1e}")
    print("#pragma once\n\nnamespace seqblocks {\nnamespace math {\n")
    print(f"static constexpr float kGeluErfScale = {SCALE}f;  // k = round(kGeluErfScale a)\n")
    print(f"alignas(64) static constexpr float kGeluErfCentre[{TABLE}] = {{\n{row(centres)}\n}};\n")
    print(f"alignas(64) static constexpr float kGeluErfR[{DEGREE + 1}][{TABLE}] = {{")
    for j in range(DEGREE + 1):
        print(f"  {{  // c{j}\n{row(table[j])}\n  }},")
    print("};\n\n}  // namespace math\n}  // namespace seqblocks")


if __name__ == "__main__":
    main()
