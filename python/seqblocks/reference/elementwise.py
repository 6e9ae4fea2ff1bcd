"""NumPy reference for the residual add pair (y = a + b, b broadcast to a's shape) and the sum
pair (y = x summed over some axes)."""

from __future__ import annotations

import numpy as np


def broadcast_axes(a_shape: tuple, b_shape: tuple) -> tuple[int, ...]:
    """Axes of a's shape over which b (left-padded with 1s) is broadcast."""
    padded = (1,) * (len(a_shape) - len(b_shape)) + tuple(b_shape)
    return tuple(i for i, (da, db) in enumerate(zip(a_shape, padded)) if db == 1 and da != 1)


def add_forward(a: np.ndarray, b: np.ndarray, *, needs_grad: bool = True, out=None):
    """y = a + b (into ``out`` when given). Workspace: (a.shape, b.shape)."""
    y = np.add(a, b) if out is None else np.add(a, b, out=out)
    return y, ((a.shape, b.shape) if needs_grad else None)


def add_backward(grad_output: np.ndarray, workspace):
    """(da = dy, db = dy summed over the broadcast axes, reshaped to b's shape)."""
    a_shape, b_shape = workspace
    db = grad_output.sum(axis=broadcast_axes(a_shape, b_shape))
    return grad_output.copy(), np.asarray(db, dtype=grad_output.dtype).reshape(b_shape)


def sum_forward(x: np.ndarray, dims=None, keepdim: bool = False, *, needs_grad: bool = True):
    """y = x summed over ``dims`` (sorted non-negative axes, or None for all). Workspace:
    (x.shape, dims, keepdim, x.dtype)."""
    y = np.asarray(np.sum(x, axis=dims, keepdims=keepdim), dtype=x.dtype)
    return y, ((x.shape, dims, keepdim, x.dtype) if needs_grad else None)


def sum_backward(grad_output: np.ndarray, workspace):
    """(dx,): dy broadcast back to x's shape (a new array)."""
    shape, dims, keepdim, _ = workspace
    g = grad_output
    if dims is not None and not keepdim:
        g = np.expand_dims(g, dims)
    dx = np.empty(shape, grad_output.dtype)
    dx[...] = g
    return (dx,)
