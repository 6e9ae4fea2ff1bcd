"""Element-wise math: exp, tanh, sigmoid, gelu (erf form and tanh approximation).

Vectorized per ISA in ``cpp/math/``; the error bound of each function is stated there and tested
against float64 math over the whole float32 range. Results that would be subnormal are flushed to
zero (FTZ), as in every native kernel.
"""

from __future__ import annotations

import numpy as np

from .. import _core, reference
from .._backend import use_reference
from ._checks import float_array


def _unary(name: str, x) -> np.ndarray:
    x = float_array(x, "x")
    if use_reference():
        return getattr(reference, name)(x)
    return _core.unary(name, x)


def exp(x) -> np.ndarray:
    """e**x element-wise."""
    return _unary("exp", x)


def tanh(x) -> np.ndarray:
    """tanh(x) element-wise."""
    return _unary("tanh", x)


def sigmoid(x) -> np.ndarray:
    """1 / (1 + e**-x) element-wise."""
    return _unary("sigmoid", x)


def gelu(x, approximate: str = "none") -> np.ndarray:
    """GELU as PyTorch defines it: ``x * Phi(x)`` (approximate="none") or
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` (approximate="tanh")."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate: expected 'none' or 'tanh', got {approximate!r}")
    x = float_array(x, "x")
    if use_reference():
        return reference.gelu(x, approximate)
    return _core.unary("gelu_erf" if approximate == "none" else "gelu_tanh", x)
