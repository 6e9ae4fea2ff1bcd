"""Activation pairs: relu, gelu (approximate "none" | "tanh"), tanh, sigmoid.

Forward runs the vectorized math of ``cpp/math/`` (relu its own kernel); backward runs fused
kernels of ``cpp/ops/activation_isa.cpp`` with the exact derivatives:
    relu'    = [y > 0]              (workspace: y)
    gelu'    = Phi(x) + x phi(x)    or the derivative of the tanh form (workspace: x)
    tanh'    = 1 - y^2              (workspace: y)
    sigmoid' = y (1 - y)            (workspace: y)
"""

from __future__ import annotations

import numpy as np

from .. import _core, reference
from .._backend import use_reference
from ._checks import float_array
from ._pairs import c_order, check_grad_output


def _forward(name: str, x, needs_grad: bool, keep: str):
    x = float_array(x, "x")
    if use_reference():
        return getattr(reference, f"{name}_forward")(x, needs_grad=needs_grad)
    x = c_order(x)
    y = _core.activation_forward(name, x)
    if not needs_grad:
        return y, None
    return y, (name, y if keep == "y" else x)


def _backward(name: str, grad_output, workspace):
    if use_reference():
        saved = workspace[0] if isinstance(workspace, tuple) else workspace
        dy = check_grad_output(grad_output, saved.shape, saved.dtype)
        return getattr(reference, f"{name}_backward")(dy, workspace)
    kind, saved = workspace
    dy = check_grad_output(grad_output, saved.shape, saved.dtype)
    return (_core.activation_backward(kind, c_order(dy), saved),)


def relu_forward(x, *, needs_grad: bool = True):
    """y = max(x, 0); NaN propagates."""
    return _forward("relu", x, needs_grad, "y")


def relu_backward(grad_output, workspace):
    """dx = dy where y > 0 (or NaN), else 0."""
    return _backward("relu", grad_output, workspace)


def gelu_forward(x, approximate: str = "none", *, needs_grad: bool = True):
    """y = x Phi(x) (approximate="none") or 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate: expected 'none' or 'tanh', got {approximate!r}")
    x = float_array(x, "x")
    if use_reference():
        return reference.gelu_forward(x, approximate, needs_grad=needs_grad)
    name = "gelu_erf" if approximate == "none" else "gelu_tanh"
    x = c_order(x)
    y = _core.activation_forward(name, x)
    return y, ((name, x) if needs_grad else None)


def gelu_backward(grad_output, workspace):
    """dx = dy * gelu'(x), derivative exact for the chosen form."""
    return _backward("gelu", grad_output, workspace)


def tanh_forward(x, *, needs_grad: bool = True):
    """y = tanh(x)."""
    return _forward("tanh", x, needs_grad, "y")


def tanh_backward(grad_output, workspace):
    """dx = dy (1 - y^2)."""
    return _backward("tanh", grad_output, workspace)


def sigmoid_forward(x, *, needs_grad: bool = True):
    """y = 1 / (1 + e^-x)."""
    return _forward("sigmoid", x, needs_grad, "y")


def sigmoid_backward(grad_output, workspace):
    """dx = dy y (1 - y)."""
    return _backward("sigmoid", grad_output, workspace)
