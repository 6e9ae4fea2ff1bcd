"""NumPy reference for the linear pair: y = x @ W^T + b and its gradients."""

from __future__ import annotations

import numpy as np


def linear_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, *,
                   needs_grad: bool = True):
    """x (..., in), weight (out, in), bias (out,) or None -> y (..., out).

    Workspace: (x, weight, has_bias)."""
    y = x @ weight.T
    if bias is not None:
        y = y + bias
    return y, ((x, weight, bias is not None) if needs_grad else None)


def linear_backward(grad_output: np.ndarray, workspace):
    """dy (..., out) -> (dx = dy @ W, dW = dy^T @ x, db = sum of dy over all leading dims)."""
    x, weight, has_bias = workspace
    out_features, in_features = weight.shape
    rows = grad_output.size // out_features if out_features else int(np.prod(x.shape[:-1]))
    dy = grad_output.reshape(rows, out_features)
    x2 = x.reshape(rows, in_features)
    dx = (dy @ weight).reshape(x.shape)
    dweight = dy.T @ x2
    dbias = dy.sum(axis=0) if has_bias else None
    return dx, dweight, dbias
