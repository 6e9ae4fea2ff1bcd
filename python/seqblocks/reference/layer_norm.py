"""NumPy reference for ``seqblocks.ops.layer_norm_forward`` / ``layer_norm_backward``.

Over the trailing dims ``normalized_shape`` (k elements per row, ``rows = x.size / k``):

    mean = sum(x) / k,  var = sum((x - mean)^2) / k (biased),  rstd = 1 / sqrt(var + eps)
    xhat = (x - mean) * rstd,  y = xhat * weight + bias

Backward, with g = dy * weight (or dy):

    dx = rstd * (g - mean(g) - xhat * mean(g * xhat))      (means over the row)
    dweight = sum over rows of dy * xhat,  dbias = sum over rows of dy

Computed in float64, rounded to the input dtype.
"""

from __future__ import annotations

import math

import numpy as np


def _rows(x: np.ndarray, normalized_shape: tuple) -> tuple[int, int]:
    k = math.prod(normalized_shape)
    lead = x.shape[: x.ndim - len(normalized_shape)]
    return math.prod(lead), k


def layer_norm_forward(x, normalized_shape, weight=None, bias=None, eps=1e-5, *, needs_grad=True):
    """x (..., *normalized_shape); weight, bias (*normalized_shape) or None.

    Returns (y, workspace); workspace is None when ``needs_grad`` is false.
    """
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) \
        else tuple(int(d) for d in normalized_shape)
    rows, k = _rows(x, normalized_shape)
    x64 = np.asarray(x, np.float64).reshape(rows, k)
    if k == 0:
        mean = np.zeros(rows)
        rstd = np.full(rows, 1.0 / math.sqrt(eps)) if eps > 0 else np.full(rows, np.inf)
    else:
        mean = x64.mean(axis=1)
        var = np.square(x64 - mean[:, None]).mean(axis=1)
        with np.errstate(divide="ignore"):
            rstd = 1.0 / np.sqrt(var + eps)
    xhat = (x64 - mean[:, None]) * rstd[:, None]
    y = xhat
    if weight is not None:
        y = y * np.asarray(weight, np.float64).reshape(1, k)
    if bias is not None:
        y = y + np.asarray(bias, np.float64).reshape(1, k)
    y = y.reshape(x.shape).astype(x.dtype)
    if not needs_grad:
        return y, None
    workspace = {"op": "layer_norm", "backend": "numpy", "x": x, "mean": mean, "rstd": rstd,
                 "normalized_shape": normalized_shape, "weight": weight,
                 "has_bias": bias is not None}
    return y, workspace


def layer_norm_backward(grad_output, workspace):
    """grad_output (..., *normalized_shape) -> (dx, dweight or None, dbias or None)."""
    x = workspace["x"]
    normalized_shape = workspace["normalized_shape"]
    weight = workspace["weight"]
    rows, k = _rows(x, normalized_shape)
    mean, rstd = workspace["mean"], workspace["rstd"]
    x64 = np.asarray(x, np.float64).reshape(rows, k)
    dy = np.asarray(grad_output, np.float64).reshape(rows, k)
    xhat = (x64 - mean[:, None]) * rstd[:, None]
    g = dy if weight is None else dy * np.asarray(weight, np.float64).reshape(1, k)
    if k == 0:
        dx = np.zeros((rows, k))
    else:
        dx = rstd[:, None] * (g - g.mean(axis=1, keepdims=True) - xhat * (g * xhat).mean(axis=1, keepdims=True))
    dweight = None if weight is None else (dy * xhat).sum(axis=0).reshape(normalized_shape).astype(x.dtype)
    dbias = None if not workspace["has_bias"] else dy.sum(axis=0).reshape(normalized_shape).astype(x.dtype)
    return dx.reshape(x.shape).astype(x.dtype), dweight, dbias
