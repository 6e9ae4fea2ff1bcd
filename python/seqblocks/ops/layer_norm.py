"""Layer normalization over the trailing ``normalized_shape`` dims, as ``torch.nn.functional.
layer_norm``: ``layer_norm_forward`` -> (y, workspace), ``layer_norm_backward`` -> (dx, dweight,
dbias). Formulas in ``seqblocks.reference.layer_norm``; native kernels in ``cpp/ops/layer_norm*``.

The workspace (training mode only) keeps x, the per-row mean and 1/std. dweight and dbias are
reduced over rows in fixed blocks combined in a fixed order, so they do not depend on the thread
count.
"""

from __future__ import annotations

import math
import operator

import numpy as np

from .. import _core, reference
from .._backend import use_reference
from ._checks import float_array, same_dtype, shape_str


def _normalized_shape(normalized_shape) -> tuple[int, ...]:
    try:
        if isinstance(normalized_shape, (int, np.integer)) and not isinstance(normalized_shape, bool):
            dims = (operator.index(normalized_shape),)
        else:
            dims = tuple(operator.index(d) for d in normalized_shape)
    except TypeError:
        raise TypeError(f"normalized_shape: expected an int or a sequence of ints, got {normalized_shape!r}") from None
    if any(d < 0 for d in dims):
        raise ValueError(f"normalized_shape: expected non-negative sizes, got {shape_str(dims)}")
    return dims


def _check_forward(x, normalized_shape, weight, bias, eps):
    x = float_array(x, "x")
    dims = _normalized_shape(normalized_shape)
    if x.ndim < len(dims) or x.shape[x.ndim - len(dims):] != dims:
        raise ValueError(f"x: expected trailing dimensions {shape_str(dims)} (normalized_shape), "
                         f"got shape {shape_str(x.shape)}")
    arrays = {"x": x}
    if weight is not None:
        weight = float_array(weight, "weight")
        arrays["weight"] = weight
        if weight.shape != dims:
            raise ValueError(f"weight: expected shape {shape_str(dims)} (normalized_shape), got {shape_str(weight.shape)}")
    if bias is not None:
        bias = float_array(bias, "bias")
        arrays["bias"] = bias
        if bias.shape != dims:
            raise ValueError(f"bias: expected shape {shape_str(dims)} (normalized_shape), got {shape_str(bias.shape)}")
    same_dtype(arrays)
    try:
        eps = float(eps)
    except (TypeError, ValueError):
        raise TypeError(f"eps: expected a float, got {eps!r}") from None
    if not eps >= 0.0:
        raise ValueError(f"eps: expected a float >= 0, got {eps!r}")
    return x, dims, weight, bias, eps


def _check_grad(grad_output, like: np.ndarray, name: str = "grad_output") -> np.ndarray:
    grad_output = float_array(grad_output, name)
    if grad_output.dtype != like.dtype:
        raise TypeError(f"{name}: expected dtype {like.dtype} (the forward's dtype), got {grad_output.dtype}")
    if grad_output.shape != like.shape:
        raise ValueError(f"{name}: expected shape {shape_str(like.shape)}, got {shape_str(grad_output.shape)}")
    return grad_output


def _check_workspace(workspace, op: str) -> None:
    if not isinstance(workspace, dict) or workspace.get("op") != op:
        raise ValueError(f"workspace: expected the workspace returned by {op}_forward(..., needs_grad=True), "
                         f"got {type(workspace).__name__}")


def layer_norm_forward(x, normalized_shape, weight=None, bias=None, eps=1e-5, *, needs_grad=True):
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the trailing ``normalized_shape`` dims.

    x (..., *normalized_shape); weight, bias (*normalized_shape) or None. Returns (y, workspace),
    workspace None when ``needs_grad`` is false.
    """
    x, dims, weight, bias, eps = _check_forward(x, normalized_shape, weight, bias, eps)
    if use_reference() or x.size == 0:  # empty: nothing to compute, the reference gives the shapes
        return reference.layer_norm_forward(x, dims, weight, bias, eps, needs_grad=needs_grad)
    k = math.prod(dims)
    rows = x.size // k
    x_rows = np.ascontiguousarray(x).reshape(rows, k)
    flat = (lambda a: None if a is None else np.ascontiguousarray(a).reshape(k))
    w_flat = flat(weight)
    y, mean, rstd = _core.layer_norm_forward(x_rows, w_flat, flat(bias), eps, bool(needs_grad))
    y = y.reshape(x.shape)
    if not needs_grad:
        return y, None
    return y, {"op": "layer_norm", "backend": "native", "x": x, "x_rows": x_rows, "mean": mean, "rstd": rstd,
               "normalized_shape": dims, "weight": w_flat, "has_bias": bias is not None}


def layer_norm_backward(grad_output, workspace):
    """grad_output (shape of y) -> (dx, dweight or None, dbias or None)."""
    _check_workspace(workspace, "layer_norm")
    grad_output = _check_grad(grad_output, workspace["x"])
    if workspace["backend"] == "numpy":
        return reference.layer_norm_backward(grad_output, workspace)
    x_rows, dims = workspace["x_rows"], workspace["normalized_shape"]
    weight = workspace["weight"]
    dx, dw, db = _core.layer_norm_backward(np.ascontiguousarray(grad_output).reshape(x_rows.shape), x_rows,
                                           workspace["mean"], workspace["rstd"], weight, weight is not None,
                                           workspace["has_bias"])
    return (dx.reshape(workspace["x"].shape), None if dw is None else dw.reshape(dims),
            None if db is None else db.reshape(dims))
