"""Residual add fused with layer norm (a Transformer block's ``norm(x + sublayer(x))``, and in
pre-norm blocks the new residual stream ``s`` with ``norm(s)``): ``add_layer_norm_forward`` ->
((y, s), workspace), ``add_layer_norm_backward`` -> (dx, dresidual, dweight, dbias).
Formulas in ``seqblocks.reference.add_layer_norm``; native kernels in ``cpp/ops/add_layer_norm*``
(the add and the normalization of a few rows at a time while they are in cache; the backward is
layer norm's deterministic kernel at s plus ds). Results equal ``layer_norm_forward(x + residual)``
bit for bit, for any thread count. The workspace keeps s, the per-row mean and 1/std.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _core, reference
from .._backend import use_reference
from ._checks import float_array, shape_str
from .layer_norm import _check_forward, _check_grad, _check_workspace


def add_layer_norm_forward(x, residual, normalized_shape, weight=None, bias=None, eps=1e-5, *, needs_grad=True,
                           in_place=False):
    """s = x + residual; y = layer norm of s over the trailing ``normalized_shape`` dims (then
    weight, bias). x and residual of one shape and dtype. Returns ((y, s), workspace), workspace
    None when ``needs_grad`` is false.

    ``in_place`` (inference: needs_grad False): y is written over ``residual`` (a writable
    C-contiguous array apart from x), which is returned as y; s is not kept (None)."""
    x, dims, weight, bias, eps = _check_forward(x, normalized_shape, weight, bias, eps)
    residual = float_array(residual, "residual")
    if residual.dtype != x.dtype:
        raise TypeError(f"residual: expected dtype {x.dtype} (x's), got {residual.dtype}")
    if residual.shape != x.shape:
        raise ValueError(f"residual: expected shape {shape_str(x.shape)} (x's), got {shape_str(residual.shape)}")
    if in_place:
        if needs_grad:
            raise ValueError("in_place: expected needs_grad=False (s is not kept for a backward), got True")
        if not (residual.flags.writeable and residual.flags.c_contiguous):
            raise ValueError("residual: expected a writable C-contiguous array for in_place")
        if np.shares_memory(x, residual):
            raise ValueError("x: expected memory apart from residual's for in_place, got overlapping arrays")
    k = math.prod(dims)
    if use_reference() or x.size == 0 or k == 0:
        return reference.add_layer_norm_forward(x, residual, dims, weight, bias, eps, needs_grad=needs_grad,
                                                in_place=in_place)
    rows = x.size // k
    flat = (lambda a: None if a is None else np.ascontiguousarray(a).reshape(k))
    w_flat = flat(weight)
    y, s, mean, rstd = _core.add_layer_norm_forward(np.ascontiguousarray(x).reshape(rows, k),
                                                    (residual if in_place else np.ascontiguousarray(residual))
                                                    .reshape(rows, k), w_flat, flat(bias), eps, bool(needs_grad),
                                                    bool(in_place))
    if in_place:
        return (residual, None), None
    out = (y.reshape(x.shape), s.reshape(x.shape))
    if not needs_grad:
        return out, None
    return out, {"op": "add_layer_norm", "backend": "native", "s": out[1], "s_rows": s, "mean": mean,
                 "rstd": rstd, "normalized_shape": dims, "weight": w_flat, "has_bias": bias is not None}


def add_layer_norm_backward(grad_output, workspace):
    """grad_output = (dy, ds or None), each of y's shape -> (dx, dresidual, dweight or None,
    dbias or None); dresidual is dx (the same array: the two gradients are equal)."""
    _check_workspace(workspace, "add_layer_norm")
    if not isinstance(grad_output, (tuple, list)) or len(grad_output) != 2:
        raise TypeError(f"grad_output: expected a pair (dy, ds or None), got {type(grad_output).__name__}")
    dy = _check_grad(grad_output[0], workspace["s"])
    ds = None if grad_output[1] is None else _check_grad(grad_output[1], workspace["s"], "grad_s")
    if workspace["backend"] == "numpy":
        return reference.add_layer_norm_backward((dy, ds), workspace)
    s_rows, dims, weight = workspace["s_rows"], workspace["normalized_shape"], workspace["weight"]
    dx, dw, db = _core.add_layer_norm_backward(np.ascontiguousarray(dy).reshape(s_rows.shape),
                                               None if ds is None else np.ascontiguousarray(ds).reshape(s_rows.shape),
                                               s_rows, workspace["mean"], workspace["rstd"], weight,
                                               weight is not None, workspace["has_bias"])
    dx = dx.reshape(workspace["s"].shape)
    return (dx, dx, _in_shape(dw, dims), _in_shape(db, dims))


def _in_shape(grad, dims):
    """grad (a native output) in shape dims: itself when already so, as autograd copies a view of
    an array before storing it as a parameter's gradient."""
    if grad is None or grad.shape == tuple(dims):
        return grad
    return grad.reshape(dims)
