"""Softmax and log-softmax along one dimension, as ``torch.softmax`` / ``torch.log_softmax``:
``softmax_forward`` / ``log_softmax_forward`` -> (y, workspace), ``*_backward`` -> (dx,).
Formulas in ``seqblocks.reference.softmax``; native kernels in ``cpp/ops/softmax*`` (the last,
contiguous dim natively; another dim is moved last, computed, and moved back).

The workspace (training mode only) keeps the output y.
"""

from __future__ import annotations

import operator

import numpy as np

from .. import reference
from .._backend import use_reference
from ._checks import float_array, shape_str
from .layer_norm import _check_grad, _check_workspace


def _check_dim(x: np.ndarray, dim) -> int:
    if isinstance(dim, bool):
        raise TypeError("dim: expected an int, got bool")
    try:
        dim = operator.index(dim)
    except TypeError:
        raise TypeError(f"dim: expected an int, got {type(dim).__name__}") from None
    nd = max(x.ndim, 1)
    if not -nd <= dim < nd:
        raise IndexError(f"dim: expected a dimension in [{-nd}, {nd - 1}] for x of shape {shape_str(x.shape)}, "
                         f"got {dim}")
    return dim % nd


def _forward(op: str, x, dim, needs_grad):
    x = float_array(x, "x")
    dim = _check_dim(x, dim)
    # TODO native
    y, ws = getattr(reference, f"{op}_forward")(x, dim, needs_grad=needs_grad)
    return y, ws


def _backward(op: str, grad_output, workspace):
    _check_workspace(workspace, op)
    grad_output = _check_grad(grad_output, workspace["y"])
    # TODO native
    return getattr(reference, f"{op}_backward")(grad_output, workspace)


def softmax_forward(x, dim=-1, *, needs_grad=True):
    """exp(x - max) / sum(exp(x - max)) along ``dim``. Returns (y, workspace or None)."""
    return _forward("softmax", x, dim, needs_grad)


def softmax_backward(grad_output, workspace):
    """grad_output (shape of y) -> (dx,), dx = y * (dy - sum(dy * y))."""
    return _backward("softmax", grad_output, workspace)


def log_softmax_forward(x, dim=-1, *, needs_grad=True):
    """x - max - log(sum(exp(x - max))) along ``dim``. Returns (y, workspace or None)."""
    return _forward("log_softmax", x, dim, needs_grad)


def log_softmax_backward(grad_output, workspace):
    """grad_output (shape of y) -> (dx,), dx = dy - exp(y) * sum(dy)."""
    return _backward("log_softmax", grad_output, workspace)
