"""NumPy reference for ``seqblocks.ops.math``, computed in float64 and rounded to the input
dtype (so the float32 reference is correctly rounded up to float64's own error)."""

from __future__ import annotations

import math

import numpy as np

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_erfc = np.frompyfunc(math.erfc, 1, 1)


def _wide(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def exp(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.exp(_wide(x)).astype(x.dtype)


def tanh(x: np.ndarray) -> np.ndarray:
    return np.tanh(_wide(x)).astype(x.dtype)


def sigmoid(x: np.ndarray) -> np.ndarray:
    # 1 / (1 + e^-x) for x >= 0; e^x / (1 + e^x) for x < 0 (no overflow, no cancellation).
    w = _wide(x)
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(-np.abs(w))
        out = np.where(w >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return out.astype(x.dtype)


def gelu(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    w = _wide(x)
    if approximate == "none":
        # x * Phi(x) = x/2 * erfc(-x / sqrt(2)); erfc keeps full relative accuracy for x << 0.
        phi = 0.5 * _erfc(-w / math.sqrt(2.0)).astype(np.float64)
        return (w * phi).astype(x.dtype)
    if approximate == "tanh":
        u = _SQRT_2_OVER_PI * (w + 0.044715 * w**3)
        # 0.5 x (1 + tanh u) = x * sigmoid(2u), which keeps relative accuracy for x << 0.
        return (w * sigmoid(2.0 * u)).astype(x.dtype)
    raise ValueError(f"approximate: expected 'none' or 'tanh', got {approximate!r}")
