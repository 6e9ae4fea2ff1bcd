"""NumPy reference for the activation pairs (relu, gelu, tanh, sigmoid), computed in float64 and
rounded to the input dtype.

Derivatives (exact):
    relu'(x)    = 1 if x > 0 else 0 (0 at x = 0, as PyTorch; from y: y > 0)
    gelu'(x)    = Phi(x) + x phi(x)                          (approximate="none")
                = 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 c x^2), t = tanh(k (x + c x^3)),
                  k = sqrt(2/pi), c = 0.044715                 (approximate="tanh")
    tanh'(x)    = 1 - y^2
    sigmoid'(x) = y (1 - y)
"""

from __future__ import annotations

import math

import numpy as np

from .math import gelu as _gelu
from .math import sigmoid as _sigmoid
from .math import tanh as _tanh

_K = math.sqrt(2.0 / math.pi)
_C = 0.044715
_erfc = np.frompyfunc(math.erfc, 1, 1)


def _wide(x):
    return np.asarray(x, dtype=np.float64)


def relu_forward(x: np.ndarray, *, needs_grad: bool = True):
    """y = max(x, 0) (NaN propagates). Workspace: y."""
    y = np.where(x > 0, x, np.where(np.isnan(x), x, x.dtype.type(0))).astype(x.dtype)
    return y, (y if needs_grad else None)


def relu_backward(grad_output: np.ndarray, workspace):
    """dx = dy where y > 0 or y is NaN, else 0 (PyTorch's threshold_backward). Workspace: y."""
    y = workspace
    return (np.where(y <= 0, grad_output.dtype.type(0), grad_output).astype(grad_output.dtype),)


def gelu_forward(x: np.ndarray, approximate: str = "none", *, needs_grad: bool = True):
    """y = x Phi(x) or its tanh approximation. Workspace: (x, approximate)."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate: expected 'none' or 'tanh', got {approximate!r}")
    return _gelu(x, approximate), ((x, approximate) if needs_grad else None)


def gelu_backward(grad_output: np.ndarray, workspace):
    """dx = dy gelu'(x). Workspace: (x, approximate)."""
    x, approximate = workspace
    w = _wide(x)
    # inf inputs give inf * 0 = NaN (as PyTorch's formula does); no warning for that.
    with np.errstate(over="ignore", invalid="ignore"):
        if approximate == "none":
            big_phi = 0.5 * _erfc(-w / math.sqrt(2.0)).astype(np.float64)
            small_phi = np.exp(-0.5 * w * w) / math.sqrt(2.0 * math.pi)
            d = big_phi + w * small_phi
        else:
            u = _K * (w + _C * w**3)
            # 1 + t = 2 sigmoid(2u), 1 - t = 2 sigmoid(-2u): no cancellation for |u| large.
            one_plus_t = 2.0 / (1.0 + np.exp(-2.0 * u))
            one_minus_t = 2.0 / (1.0 + np.exp(2.0 * u))
            d = 0.5 * one_plus_t + 0.5 * w * one_plus_t * one_minus_t * _K * (1.0 + 3.0 * _C * w * w)
        return ((_wide(grad_output) * d).astype(grad_output.dtype),)


def tanh_forward(x: np.ndarray, *, needs_grad: bool = True):
    """y = tanh(x). Workspace: y."""
    y = _tanh(x)
    return y, (y if needs_grad else None)


def tanh_backward(grad_output: np.ndarray, workspace):
    """dx = dy (1 - y^2). Workspace: y."""
    w = _wide(workspace)
    return ((_wide(grad_output) * (1.0 - w * w)).astype(grad_output.dtype),)


def sigmoid_forward(x: np.ndarray, *, needs_grad: bool = True):
    """y = 1 / (1 + e^-x). Workspace: y."""
    y = _sigmoid(x)
    return y, (y if needs_grad else None)


def sigmoid_backward(grad_output: np.ndarray, workspace):
    """dx = dy y (1 - y). Workspace: y."""
    w = _wide(workspace)
    return ((_wide(grad_output) * w * (1.0 - w)).astype(grad_output.dtype),)
