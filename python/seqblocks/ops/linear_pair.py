"""The linear pair: ``linear_forward``/``linear_backward`` (y = x @ W^T + b) over the native GEMM.

Backward, with x and dy flattened to rows: dx = dy @ W, dW = dy^T @ x, db = column sums of dy
(one native call: two GEMMs; db is summed while the dW product packs dy^T, in a fixed order --
groups of 8 rows, each summed in order, the group sums added in order -- the same bits for every
thread count).
"""

from __future__ import annotations

import math

from .. import _core, reference
from .._backend import use_reference
from ._pairs import c_order, check_grad_output
from .gemm import check_linear_args as _check
from .gemm import linear


def linear_forward(x, weight, bias=None, *, needs_grad: bool = True):
    """y = x @ weight.T + bias. x (..., in), weight (out, in), bias (out,) or None -> y (..., out).

    Returns (y, workspace); workspace is None when ``needs_grad`` is False."""
    x, weight, bias = _check(x, weight, bias)
    if use_reference():
        return reference.linear_forward(x, weight, bias, needs_grad=needs_grad)
    y = linear(x, weight, bias)
    if not needs_grad:
        return y, None
    return y, (c_order(x), c_order(weight), bias is not None)


def linear_backward(grad_output, workspace):
    """dy (..., out) -> (dx (..., in), dweight (out, in), dbias (out,) or None)."""
    x, weight, has_bias = workspace
    out_features, in_features = weight.shape
    dy = check_grad_output(grad_output, x.shape[:-1] + (out_features,), x.dtype)
    if use_reference():
        return reference.linear_backward(dy, workspace)
    rows = math.prod(x.shape[:-1])
    dx, dweight, dbias = _core.linear_backward(c_order(dy).reshape(rows, out_features),
                                               x.reshape(rows, in_features), weight, has_bias, x.shape)
    return dx, dweight, dbias
