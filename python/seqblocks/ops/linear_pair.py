"""The linear pair: ``linear_forward``/``linear_backward`` (y = x @ W^T + b) over the native GEMM.

Backward, with x and dy flattened to rows: dx = dy @ W, dW = dy^T @ x, db = column sums of dy
(one native call: two GEMMs and a deterministic column sum).
"""

from __future__ import annotations

import math

import numpy as np

from .. import _core, reference
from .._backend import use_reference
from ._checks import float_array, ndim_in, same_dtype, shape_str
from ._pairs import c_order, check_grad_output
from .gemm import linear


def _check(x, weight, bias):
    x = float_array(x, "x")
    weight = float_array(weight, "weight")
    arrays = {"x": x, "weight": weight}
    if bias is not None:
        bias = float_array(bias, "bias")
        arrays["bias"] = bias
    same_dtype(arrays)
    if x.ndim < 1:
        raise ValueError(f"x: expected at least 1 dimension (..., in_features), got shape {shape_str(x.shape)}")
    ndim_in(weight, "weight", (2,))
    out_features, in_features = weight.shape
    if x.shape[-1] != in_features:
        raise ValueError(f"x: expected last dimension {in_features} (= weight.shape[1], weight is "
                         f"{shape_str(weight.shape)}), got shape {shape_str(x.shape)}")
    if bias is not None and bias.shape != (out_features,):
        raise ValueError(f"bias: expected shape ({out_features},), got {shape_str(bias.shape)}")
    return x, weight, bias


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
                                               x.reshape(rows, in_features), weight, has_bias)
    return dx.reshape(x.shape), dweight, dbias
