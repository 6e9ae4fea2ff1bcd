"""Matrix products: ``matmul``, ``linear`` and BLAS-style ``gemm`` over NumPy arrays.

All three run the packed, cache-blocked GEMM of ``cpp/gemm/`` for float32 and float64.
Transposed views (``a.T``) are used in place, other strided views are copied first.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _core, reference
from .._backend import use_reference
from ._checks import FLOAT_DTYPES, float_array, ndim_in, same_dtype, shape_str


def matmul(a, b) -> np.ndarray:
    """``a @ b`` for 2-D or batched 3-D arrays.

    a: (m, k) or (batch, m, k); b: (k, n) or (batch, k, n). A 2-D operand, or a batch of 1, is
    broadcast over the other's batch. Returns (m, n) or (batch, m, n) in the inputs' dtype.
    """
    a = float_array(a, "a")
    b = float_array(b, "b")
    ndim_in(a, "a", (2, 3))
    ndim_in(b, "b", (2, 3))
    same_dtype({"a": a, "b": b})
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(
            f"b: expected {a.shape[-1]} rows to match a's last dimension "
            f"(a is {shape_str(a.shape)}), got shape {shape_str(b.shape)}"
        )
    if a.ndim == 3 and b.ndim == 3 and a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise ValueError(
            f"b: expected batch size {a.shape[0]} (or 1) to match a {shape_str(a.shape)}, "
            f"got shape {shape_str(b.shape)}"
        )
    if use_reference():
        return reference.matmul(a, b)
    return _core.matmul(a, b)


def check_linear_args(x, weight, bias):
    """x (..., in_features), weight (out_features, in_features), bias (out_features,) or None as
    arrays of one float dtype; TypeError/ValueError naming the argument otherwise."""
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
        raise ValueError(
            f"x: expected last dimension {in_features} (= weight.shape[1], weight is "
            f"{shape_str(weight.shape)}), got shape {shape_str(x.shape)}"
        )
    if bias is not None and bias.shape != (out_features,):
        raise ValueError(f"bias: expected shape ({out_features},), got {shape_str(bias.shape)}")
    return x, weight, bias


def linear(x, weight, bias=None) -> np.ndarray:
    """``x @ weight.T + bias`` with PyTorch's layout.

    x: (..., in_features); weight: (out_features, in_features); bias: (out_features,) or None.
    Returns (..., out_features).
    """
    if (type(x) is np.ndarray and type(weight) is np.ndarray and x.ndim == 2 and weight.ndim == 2
            and x.dtype == weight.dtype and x.dtype in FLOAT_DTYPES and x.shape[1] == weight.shape[1]
            and (bias is None or (type(bias) is np.ndarray and bias.dtype == x.dtype
                                  and bias.shape == weight.shape[:1]))
            and not use_reference()):
        # The common call, already valid: straight to the kernel (the full checks below cost
        # about 3 us, 2% of a 2048 x 512 GEMV).
        return _core.linear(x, weight, bias)
    x, weight, bias = check_linear_args(x, weight, bias)
    out_features, in_features = weight.shape
    if use_reference():
        return reference.linear(x, weight, bias)
    leading = x.shape[:-1]
    y = _core.linear(x.reshape(math.prod(leading), in_features), weight, bias)
    return y.reshape(*leading, out_features)


def gemm(a, b, c=None, *, alpha: float = 1.0, beta: float = 0.0, trans_a: bool = False,
         trans_b: bool = False) -> np.ndarray:
    """``alpha * op(a) @ op(b) + beta * c`` for 2-D arrays, op(x) = x.T if trans_x.

    Returns a new array; ``c`` is only read (and ignored when ``beta == 0``, as in BLAS).
    """
    a = float_array(a, "a")
    b = float_array(b, "b")
    ndim_in(a, "a", (2,))
    ndim_in(b, "b", (2,))
    arrays = {"a": a, "b": b}
    m, k = a.shape[::-1] if trans_a else a.shape
    kb, n = b.shape[::-1] if trans_b else b.shape
    if k != kb:
        raise ValueError(
            f"b: expected op(b) with {k} rows to match op(a) {shape_str((m, k))}, "
            f"got op(b) {shape_str((kb, n))}"
        )
    if c is not None:
        c = float_array(c, "c")
        arrays["c"] = c
        if c.shape != (m, n):
            raise ValueError(f"c: expected shape {shape_str((m, n))}, got {shape_str(c.shape)}")
    same_dtype(arrays)
    if beta == 0.0:
        c = None
    elif c is None:
        raise ValueError(f"c: expected an array of shape {shape_str((m, n))} when beta != 0, got None")
    if use_reference():
        return reference.gemm(a, b, c, alpha=alpha, beta=beta, trans_a=trans_a, trans_b=trans_b)
    return _core.gemm(a, b, c, float(alpha), float(beta), bool(trans_a), bool(trans_b))
