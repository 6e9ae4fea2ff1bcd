"""The dropout pair with a counter-based mask (docs/ops.md): element i of x (C order) is kept iff
``u_i >= p`` with ``u_i`` a hash of ``seed`` and ``i``, so the mask is the same on both backends
and for every thread count, and backward recomputes it instead of storing it."""

from __future__ import annotations

import numbers
import operator

import numpy as np

from .. import _core, reference
from .._backend import use_reference
from ._checks import float_array
from ._pairs import c_order, check_grad_output


def _check_p(p) -> float:
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real):
        raise TypeError(f"p: expected a float in [0, 1], got {type(p).__name__}")
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p: expected a probability in [0, 1], got {p}")
    return p


def _check_seed(seed) -> int:
    try:
        return operator.index(seed) % (1 << 64)
    except TypeError:
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}") from None


def dropout_forward(x, p: float = 0.5, training: bool = True, *, seed, needs_grad: bool = True):
    """y = x * f, f_i = 1/(1-p) if element i is kept else 0; a copy of x when not training."""
    x = float_array(x, "x")
    p = _check_p(p)
    seed = _check_seed(seed)
    if use_reference():
        return reference.dropout_forward(x, p, bool(training), seed=seed, needs_grad=needs_grad)
    if not training:
        return x.copy(), (("identity", x.shape, x.dtype) if needs_grad else None)
    y = _core.dropout(c_order(x), p, seed)
    return y, (("mask", x.shape, x.dtype, p, seed) if needs_grad else None)


def dropout_backward(grad_output, workspace):
    """dx = dy * f (the forward's mask and scale)."""
    if use_reference():
        if workspace[0] == "mask":
            dy = check_grad_output(grad_output, workspace[1].shape, workspace[1].dtype)
        else:
            dy = check_grad_output(grad_output, workspace[1], workspace[2])
        return reference.dropout_backward(dy, workspace)
    dy = check_grad_output(grad_output, workspace[1], workspace[2])
    if workspace[0] == "identity":
        return (dy.copy(),)
    _, _, _, p, seed = workspace
    return (_core.dropout(c_order(dy), p, seed),)
