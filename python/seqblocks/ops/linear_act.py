"""The linear + activation pair: ``linear_act_forward``/``linear_act_backward``,
y = act(x @ W^T + b) with act = "relu", "gelu" (erf form) or "gelu_tanh" -- the first half of a
Transformer feed-forward block.

Native forward is one GEMM whose epilogue applies the activation to each finished tile while it is
in cache (cpp/ops/linear_act.h), so y is written once; the result equals ``linear`` followed by
the activation op bit for bit. Backward: dz = dy act'(.) (the activation kernels), then the linear
pair's backward (dx = dz W, dW = dz^T x, db = column sums of dz). The workspace keeps y for relu
and z = x W^T + b for gelu.
"""

from __future__ import annotations

import math

from .. import _core, reference
from .._backend import use_reference
from ..reference.linear_act import ACTIVATIONS
from ._pairs import c_order, check_grad_output
from .gemm import check_linear_args

_NATIVE_NAME = {"relu": "relu", "gelu": "gelu_erf", "gelu_tanh": "gelu_tanh"}


def linear_act_forward(x, weight, bias=None, activation: str = "relu", *, needs_grad: bool = True):
    """act(x @ weight.T + bias). x (..., in), weight (out, in), bias (out,) or None -> y (..., out).

    Returns (y, workspace); workspace is None when ``needs_grad`` is False."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
    x, weight, bias = check_linear_args(x, weight, bias)
    if use_reference():
        return reference.linear_act_forward(x, weight, bias, activation, needs_grad=needs_grad)
    out_features, in_features = weight.shape
    rows = math.prod(x.shape[:-1])
    name = _NATIVE_NAME[activation]
    keep_pre = needs_grad and activation != "relu"
    y, z = _core.linear_act(c_order(x).reshape(rows, in_features), c_order(weight),
                            None if bias is None else c_order(bias), name, keep_pre)
    y = y.reshape(x.shape[:-1] + (out_features,))
    if not needs_grad:
        return y, None
    saved = y if activation == "relu" else z.reshape(y.shape)
    return y, (c_order(x), c_order(weight), bias is not None, name, saved)


def linear_act_backward(grad_output, workspace):
    """dy (..., out) -> (dx (..., in), dweight (out, in), dbias (out,) or None)."""
    if use_reference():
        return reference.linear_act_backward(grad_output, workspace)
    x, weight, has_bias, name, saved = workspace
    out_features, in_features = weight.shape
    dy = check_grad_output(grad_output, saved.shape, saved.dtype)
    dz = _core.activation_backward(name, c_order(dy), saved)
    rows = math.prod(x.shape[:-1])
    dx, dweight, dbias = _core.linear_backward(dz.reshape(rows, out_features), x.reshape(rows, in_features),
                                               weight, has_bias, x.shape)
    return dx, dweight, dbias
