"""NumPy reference for ``seqblocks.ops.math``, computed in float64 and rounded to the input
dtype (so the float32 reference is correctly rounded up to float64's own error).

For float64 inputs two functions need more than float64 arithmetic to be accurate in the left
tail, where the result is exponentially small and its relative error is the absolute error of
the exponent's argument: GELU's tanh form evaluates its argument in ``np.longdouble`` (x87
extended on x86-64; where longdouble is plain double the reference is only as good as
float64), and GELU's erf form corrects ``erfc`` for the rounding of ``-x / sqrt(2)``.
The limits at -inf are taken (GELU(-inf) = -0), not ``-inf * 0 = nan``.
"""

from __future__ import annotations

import math

import numpy as np

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_erfc = np.frompyfunc(math.erfc, 1, 1)
_LONG_IS_WIDER = np.finfo(np.longdouble).nmant > np.finfo(np.float64).nmant
_PI_LONG = np.longdouble("3.14159265358979323846264338327950288")


def _wide(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def exp(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.exp(_wide(x)).astype(x.dtype)


def tanh(x: np.ndarray) -> np.ndarray:
    return np.tanh(_wide(x)).astype(x.dtype)


def _sigmoid(w: np.ndarray) -> np.ndarray:
    # 1 / (1 + e^-x) for x >= 0; e^x / (1 + e^x) for x < 0 (no overflow, no cancellation).
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        e = np.exp(-np.abs(w))
        return np.where(w >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return _sigmoid(_wide(x)).astype(x.dtype)


def _phi_erf(w: np.ndarray) -> np.ndarray:
    """Phi(w) = erfc(-w / sqrt(2)) / 2 in float64, for float64 w.

    z = -w / sqrt(2) is formed as z_hi + z_lo and erfc(z_hi + z_lo) is taken to first order,
    erfc(z_hi) - 2/sqrt(pi) e^(-z_hi^2) z_lo: the rounding of z alone would cost ~2 z^2 ulps.
    """
    z_long = -w.astype(np.longdouble) / np.sqrt(np.longdouble(2))
    z_hi = z_long.astype(np.float64)
    z_lo = (z_long - z_hi).astype(np.float64) if _LONG_IS_WIDER else np.zeros_like(w)
    erfc_hi = _erfc(z_hi).astype(np.float64)
    with np.errstate(under="ignore", invalid="ignore", over="ignore"):
        corr = (2.0 / math.sqrt(math.pi)) * np.exp(-z_hi * z_hi) * z_lo
        corr = np.where(np.isfinite(corr), corr, 0.0)
    return 0.5 * (erfc_hi - corr)


def _gelu_erf_far_left(w: np.ndarray) -> np.ndarray:
    """x Phi(x) for x <= -30 by the asymptotic series -phi(x) sum_k (-1)^k (2k-1)!! / x^(2k)
    in longdouble (erfc(-x/sqrt 2) itself is subnormal there, with few significant bits).
    Truncation error < 2027025 / x^16 < 5e-18 relative."""
    wl = w.astype(np.longdouble)
    u = 1 / (wl * wl)
    series = np.ones_like(wl)
    term = np.ones_like(wl)
    for k in range(1, 8):
        term = -term * (2 * k - 1) * u
        series = series + term
    with np.errstate(under="ignore"):
        phi = np.exp(-wl * wl / 2) / np.sqrt(2 * _PI_LONG)
        return (-phi * series).astype(np.float64)


def gelu(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    w = _wide(x)
    if approximate == "none":
        # x * Phi(x); erfc keeps full relative accuracy for x << 0.
        with np.errstate(invalid="ignore"):
            out = w * _phi_erf(w)
        far = w <= -30
        if far.any():
            out[far] = _gelu_erf_far_left(w[far])
    elif approximate == "tanh":
        # 0.5 x (1 + tanh u) = x * sigmoid(2u), which keeps relative accuracy for x << 0.
        if x.dtype == np.float64 and _LONG_IS_WIDER:
            wl = w.astype(np.longdouble)
            with np.errstate(over="ignore", invalid="ignore"):
                v = 2 * np.sqrt(np.longdouble(2) / _PI_LONG) * (wl + np.longdouble("0.044715") * (wl * wl * wl))
                e = np.exp(-np.abs(v))
                s = np.where(v >= 0, 1 / (1 + e), e / (1 + e))
                out = (wl * s).astype(np.float64)
        else:
            with np.errstate(over="ignore", invalid="ignore"):
                u = _SQRT_2_OVER_PI * (w + 0.044715 * (w * w * w))
                out = w * _sigmoid(2.0 * u)
    else:
        raise ValueError(f"approximate: expected 'none' or 'tanh', got {approximate!r}")
    out = np.where(w == -np.inf, -0.0, out)
    return out.astype(x.dtype)
