"""Softmax and log-softmax along one dimension, as ``torch.softmax`` / ``torch.log_softmax``:
``softmax_forward`` / ``log_softmax_forward`` -> (y, workspace), ``*_backward`` -> (dx,).
Formulas in ``seqblocks.reference.softmax``; native kernels in ``cpp/ops/softmax*`` (the last,
contiguous dim natively; another dim is moved last, computed, and moved back).

The workspace (training mode only) keeps the output y.
"""

from __future__ import annotations

import math
import operator

import numpy as np

from .. import _core, reference
from .._backend import use_reference
from ._checks import float_array, shape_str
from .layer_norm import _check_grad, _check_workspace


def _check_dim(x: np.ndarray, dim) -> int:
    if isinstance(dim, bool):
        raise TypeError("dim: expected an int, got bool")
    try:
        dim = operator.index(dim)
    except TypeError:
        raise TypeError(f"dim: expected an int, got {type(dim).__name__}") from None
    nd = max(x.ndim, 1)
    if not -nd <= dim < nd:
        raise IndexError(f"dim: expected a dimension in [{-nd}, {nd - 1}] for x of shape {shape_str(x.shape)}, "
                         f"got {dim}")
    return dim % nd


def _to_rows(a: np.ndarray, dim: int) -> np.ndarray:
    """a with ``dim`` moved last, as a C-contiguous (rows, n) matrix."""
    if a.ndim == 0:
        return a.reshape(1, 1)
    moved = np.moveaxis(a, dim, -1)
    return np.ascontiguousarray(moved).reshape(math.prod(moved.shape[:-1]), a.shape[dim])


def _from_rows(r: np.ndarray, shape: tuple, dim: int) -> np.ndarray:
    """Inverse of ``_to_rows``: a new C-contiguous array of ``shape``."""
    if len(shape) == 0:
        return r.reshape(())
    moved = list(shape)
    moved.append(moved.pop(dim))
    out = r.reshape(moved)
    return out if dim == len(shape) - 1 else np.ascontiguousarray(np.moveaxis(out, -1, dim))


def _forward(op: str, x, dim, needs_grad):
    x = float_array(x, "x")
    dim = _check_dim(x, dim)
    if use_reference():
        return getattr(reference, f"{op}_forward")(x, dim, needs_grad=needs_grad)
    y_rows = _core.softmax_forward(_to_rows(x, dim), op == "log_softmax")
    y = _from_rows(y_rows, x.shape, dim)
    if not needs_grad:
        return y, None
    return y, {"op": op, "backend": "native", "y": y, "y_rows": y_rows, "dim": dim}


def _backward(op: str, grad_output, workspace):
    _check_workspace(workspace, op)
    grad_output = _check_grad(grad_output, workspace["y"])
    if workspace["backend"] == "numpy":
        return getattr(reference, f"{op}_backward")(grad_output, workspace)
    dim, shape = workspace["dim"], workspace["y"].shape
    dx_rows = _core.softmax_backward(_to_rows(grad_output, dim), workspace["y_rows"], op == "log_softmax")
    return (_from_rows(dx_rows, shape, dim),)


def softmax_forward(x, dim=-1, *, needs_grad=True):
    """exp(x - max) / sum(exp(x - max)) along ``dim``. Returns (y, workspace or None)."""
    return _forward("softmax", x, dim, needs_grad)


def softmax_backward(grad_output, workspace):
    """grad_output (shape of y) -> (dx,), dx = y * (dy - sum(dy * y))."""
    return _backward("softmax", grad_output, workspace)


def log_softmax_forward(x, dim=-1, *, needs_grad=True):
    """x - max - log(sum(exp(x - max))) along ``dim``. Returns (y, workspace or None)."""
    return _forward("log_softmax", x, dim, needs_grad)


def log_softmax_backward(grad_output, workspace):
    """grad_output (shape of y) -> (dx,), dx = dy - exp(y) * sum(dy)."""
    return _backward("log_softmax", grad_output, workspace)
