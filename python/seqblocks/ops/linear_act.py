"""The linear + activation pair: ``linear_act_forward``/``linear_act_backward``,
y = act(x @ W^T + b) with act = "relu", "gelu" (erf form) or "gelu_tanh" -- the first half of a
Transformer feed-forward block.

Native forward is one GEMM whose epilogue applies the activation to each finished tile while it is
in cache (cpp/ops/linear_act.h), so y is written once; the result equals ``linear`` followed by
the activation op bit for bit. Backward: dz = dy act'(.) (the activation kernels), then the linear
pair's backward (dx = dz W, dW = dz^T x, db = column sums of dz). The workspace keeps y for relu
and z = x W^T + b for gelu.

The feed-forward pair ``feed_forward_forward``/``feed_forward_backward``, y = act(x @ W1^T + b1)
@ W2^T + b2, is this pair followed by the linear pair; its backward applies act' in the epilogue of
the GEMM that computes dh = dy W2 (each finished tile while it is in cache), so dh is never
written: the same numbers as the two pairs' backwards, one pass over (rows, hidden) fewer.
"""

from __future__ import annotations

import math

from .. import _core, reference
from .._backend import use_reference
from ..reference.linear_act import ACTIVATIONS
from ._checks import float_array, shape_str
from ._pairs import c_order, check_grad_output
from .gemm import check_linear_args
from .linear_pair import linear_backward, linear_forward

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


def feed_forward_forward(x, weight1, bias1, weight2, bias2, activation: str = "relu", *, needs_grad: bool = True):
    """act(x @ weight1.T + bias1) @ weight2.T + bias2. x (..., in), weight1 (hidden, in), bias1
    (hidden,) or None, weight2 (out, hidden), bias2 (out,) or None -> y (..., out).

    Returns (y, workspace); workspace is None when ``needs_grad`` is False."""
    _check_second(weight1, weight2, bias2)
    if use_reference():
        return reference.feed_forward_forward(x, weight1, bias1, weight2, bias2, activation, needs_grad=needs_grad)
    h, ws1 = linear_act_forward(x, weight1, bias1, activation, needs_grad=needs_grad)
    y, ws2 = linear_forward(h, weight2, bias2, needs_grad=needs_grad)
    return y, ((ws1, ws2) if needs_grad else None)


def feed_forward_backward(grad_output, workspace):
    """dy (..., out) -> (dx (..., in), dweight1, dbias1 or None, dweight2, dbias2 or None)."""
    if use_reference():
        return reference.feed_forward_backward(grad_output, workspace)
    ws1, (h, weight2, has_bias2) = workspace
    x, weight1, has_bias1, name, saved = ws1
    out_features, hidden = weight2.shape
    dy = check_grad_output(grad_output, h.shape[:-1] + (out_features,), h.dtype)
    rows = math.prod(h.shape[:-1])
    dz, dweight2, dbias2 = _core.linear_backward(c_order(dy).reshape(rows, out_features), h.reshape(rows, hidden),
                                                 weight2, has_bias2, None, name, saved.reshape(rows, hidden))
    in_features = weight1.shape[1]
    dx, dweight1, dbias1 = _core.linear_backward(dz, x.reshape(rows, in_features), weight1, has_bias1, x.shape)
    return dx, dweight1, dbias1, dweight2, dbias2


def _check_second(weight1, weight2, bias2) -> None:
    """weight2 (out, hidden) with hidden = weight1's rows, bias2 (out,) or None (the first linear
    map's arguments are checked by linear_act_forward)."""
    w1 = float_array(weight1, "weight1")
    w2 = float_array(weight2, "weight2")
    if w1.ndim != 2 or w2.ndim != 2 or w2.shape[1] != w1.shape[0]:
        raise ValueError(f"weight2: expected a 2-D array (out, {w1.shape[0] if w1.ndim == 2 else 'hidden'}) "
                         f"(hidden = weight1's rows), got shape {shape_str(w2.shape)}")
    if bias2 is not None:
        b2 = float_array(bias2, "bias2")
        if b2.shape != (w2.shape[0],):
            raise ValueError(f"bias2: expected shape ({w2.shape[0]},) (weight2's rows), got {shape_str(b2.shape)}")
