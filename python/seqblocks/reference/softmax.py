"""NumPy reference for ``softmax_forward`` / ``softmax_backward`` and ``log_softmax_forward`` /
``log_softmax_backward`` along one dimension ``dim``.

    m = max(x),  s = sum(exp(x - m)),  softmax(x) = exp(x - m) / s,  log_softmax(x) = x - m - log(s)

Backward (sums along ``dim``), from the output y kept in the workspace:

    softmax:     dx = y * (dy - sum(dy * y))
    log_softmax: dx = dy - exp(y) * sum(dy)

Computed in float64, rounded to the input dtype. A row that is all -inf gives NaN (as PyTorch).
"""

from __future__ import annotations

import numpy as np


def _axis(x: np.ndarray, dim: int) -> int:
    return dim % max(x.ndim, 1)


def _log_softmax64(x64: np.ndarray, axis: int) -> np.ndarray:
    if x64.size == 0:
        return x64.copy()
    with np.errstate(invalid="ignore", over="ignore"):
        m = np.max(x64, axis=axis, keepdims=True)
        shifted = x64 - m
        return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def softmax_forward(x, dim=-1, *, needs_grad=True):
    """x (any shape), softmax along ``dim``. Returns (y, workspace or None)."""
    x64 = np.asarray(x, np.float64).reshape(x.shape or (1,))
    y = np.exp(_log_softmax64(x64, _axis(x, dim))).reshape(x.shape).astype(x.dtype)
    return y, ({"op": "softmax", "backend": "numpy", "y": y, "dim": dim} if needs_grad else None)


def softmax_backward(grad_output, workspace):
    """grad_output (shape of y) -> (dx,)."""
    y = workspace["y"]
    shape = y.shape or (1,)
    axis = _axis(y, workspace["dim"])
    y64 = np.asarray(y, np.float64).reshape(shape)
    dy = np.asarray(grad_output, np.float64).reshape(shape)
    dx = y64 * (dy - np.sum(dy * y64, axis=axis, keepdims=True))
    return (dx.reshape(y.shape).astype(y.dtype),)


def log_softmax_forward(x, dim=-1, *, needs_grad=True):
    """x (any shape), log_softmax along ``dim``. Returns (y, workspace or None)."""
    x64 = np.asarray(x, np.float64).reshape(x.shape or (1,))
    y = _log_softmax64(x64, _axis(x, dim)).reshape(x.shape).astype(x.dtype)
    return y, ({"op": "log_softmax", "backend": "numpy", "y": y, "dim": dim} if needs_grad else None)


def log_softmax_backward(grad_output, workspace):
    """grad_output (shape of y) -> (dx,)."""
    y = workspace["y"]
    shape = y.shape or (1,)
    axis = _axis(y, workspace["dim"])
    y64 = np.asarray(y, np.float64).reshape(shape)
    dy = np.asarray(grad_output, np.float64).reshape(shape)
    dx = dy - np.exp(y64) * np.sum(dy, axis=axis, keepdims=True)
    return (dx.reshape(y.shape).astype(y.dtype),)
