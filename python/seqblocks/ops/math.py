"""Element-wise math: exp, tanh, sigmoid, gelu (erf form and tanh approximation).

Vectorized per ISA in ``cpp/math/``; the error bound of each function is stated there and tested
against float64 math over the whole float32 range. Results that would be subnormal are flushed to
zero (FTZ), as in every native kernel.
"""

from __future__ import annotations

import numpy as np

from .. import _core
from ._checks import float_array


def exp(x) -> np.ndarray:
    """e**x element-wise."""
    return _core.unary("exp", float_array(x, "x"))


def tanh(x) -> np.ndarray:
    """tanh(x) element-wise."""
    return _core.unary("tanh", float_array(x, "x"))


def sigmoid(x) -> np.ndarray:
    """1 / (1 + e**-x) element-wise."""
    return _core.unary("sigmoid", float_array(x, "x"))


def gelu(x, approximate: str = "none") -> np.ndarray:
    """GELU as PyTorch defines it: ``x * Phi(x)`` (approximate="none") or
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` (approximate="tanh")."""
    if approximate == "none":
        return _core.unary("gelu_erf", float_array(x, "x"))
    if approximate == "tanh":
        return _core.unary("gelu_tanh", float_array(x, "x"))
    raise ValueError(f"approximate: expected 'none' or 'tanh', got {approximate!r}")
