"""Fit the float coefficients of rowops::exp2_approx (cpp/ops/softmax.h) and report their error:

    python tools/fit_exp2.py          (numpy only; ~2 s)

What is fitted. 2^x = 2^n 2^f with n = round(x) and f = x - n in [-1/2, 1/2]; on that interval
2^f = 1 + f q(f), q of degree DEGREE. The leading 1 is exact, so q only needs a small relative
error where f q(f) matters.

How. Minimax for the RELATIVE error of 2^f (Lawson's iteratively reweighted least squares on
4000 Chebyshev points, in float64), then the coefficients rounded to float32. The printed
errors are: the truncation of the float64 fit, and the error of the kernel's own float32
evaluation (Horner with fused multiply-adds, emulated here as a float64 product plus sum
rounded once to float32) against 2^f in float64, in ulps of the float32 result, over a
2M-point sweep of [-1/2, 1/2].
"""

from __future__ import annotations

import numpy as np

DEGREE = 5


def fit(degree: int = DEGREE) -> np.ndarray:
    f = np.cos(np.linspace(0.0, np.pi, 4001)) * 0.5
    f = f[np.abs(f) > 1e-12]
    q_exact = np.expm1(f * np.log(2.0)) / f
    to_rel = f / np.exp2(f)  # an error e in q is an error e * to_rel in 2^f, relative
    basis = np.vstack([f**i for i in range(degree + 1)]).T
    w = np.ones_like(f)
    for _ in range(200):
        sw = np.sqrt(w) * to_rel
        coef, *_ = np.linalg.lstsq(basis * sw[:, None], q_exact * sw, rcond=None)
        err = np.abs((basis @ coef - q_exact) * to_rel)
        w = w * err
        w /= w.sum()
    print(f"truncation of the float64 fit: {err.max():.3g} relative = {err.max() / 2**-24:.3f} x 2^-24")
    return coef


def float32_error_ulps(coef32: np.ndarray) -> float:
    f = np.linspace(-0.5, 0.5, 2_000_001).astype(np.float32)
    f64 = f.astype(np.float64)
    p = np.float32(coef32[-1])
    for c in coef32[-2::-1]:
        p = (p.astype(np.float64) * f64 + np.float64(c)).astype(np.float32)
    result = (p.astype(np.float64) * f64 + 1.0).astype(np.float32)
    exact = np.exp2(f64)
    return float((np.abs(result - exact) / np.spacing(exact.astype(np.float32))).max())


def main() -> None:
    coef32 = fit().astype(np.float32)
    print("q(f) coefficients, degree 0 first:", ", ".join(f"{float(c):.9g}f" for c in coef32))
    print(f"max error of the float32 evaluation: {float32_error_ulps(coef32):.2f} ulp")


if __name__ == "__main__":
    main()
