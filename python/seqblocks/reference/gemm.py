"""NumPy reference for ``seqblocks.ops.gemm``: matmul, linear, gemm."""

from __future__ import annotations

import numpy as np


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a (m, k) or (batch, m, k) @ b (k, n) or (batch, k, n)."""
    return np.matmul(a, b)


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """x (..., in) @ weight (out, in).T + bias (out,)."""
    y = x @ weight.T
    return y if bias is None else y + bias


def gemm(a, b, c=None, *, alpha=1.0, beta=0.0, trans_a=False, trans_b=False) -> np.ndarray:
    """alpha * op(a) @ op(b) + beta * c."""
    op_a = a.T if trans_a else a
    op_b = b.T if trans_b else b
    out = alpha * (op_a @ op_b)
    if beta != 0.0:
        out = out + beta * c
    return out.astype(a.dtype, copy=False)
