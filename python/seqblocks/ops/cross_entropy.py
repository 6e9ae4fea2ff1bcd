"""Cross-entropy (fused log-softmax + negative log-likelihood), as ``torch.nn.functional.
cross_entropy``: ``cross_entropy_forward`` -> (loss, workspace), ``cross_entropy_backward`` ->
(dinput, None, None). Formulas (weights, ignore_index, label smoothing, reductions) in
``seqblocks.reference.cross_entropy``; native kernels in ``cpp/ops/cross_entropy*``.

Defined where PyTorch gives NaN: ``reduction="mean"`` with no counted target (all equal to
``ignore_index``, or an empty batch) returns 0 with a zero gradient.
"""

from __future__ import annotations

import math
import operator

import numpy as np

from .. import _core, reference
from .._backend import use_reference
from ._checks import float_array, same_dtype, shape_str
from .layer_norm import _check_workspace

REDUCTIONS = ("mean", "sum", "none")


def _check_forward(input, target, weight, ignore_index, reduction, label_smoothing):
    input = float_array(input, "input")
    if input.ndim < 1:
        raise ValueError(f"input: expected shape (C,), (N, C) or (N, C, d1, ...), got {shape_str(input.shape)}")
    c = input.shape[0] if input.ndim == 1 else input.shape[1]
    if c < 1:
        raise ValueError(f"input: expected at least one class (C >= 1), got shape {shape_str(input.shape)}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of 'mean', 'sum', 'none', got {reduction!r}")
    if isinstance(ignore_index, bool):
        raise TypeError("ignore_index: expected an int, got bool")
    try:
        ignore_index = operator.index(ignore_index)
    except TypeError:
        raise TypeError(f"ignore_index: expected an int, got {type(ignore_index).__name__}") from None
    try:
        label_smoothing = float(label_smoothing)
    except (TypeError, ValueError):
        raise TypeError(f"label_smoothing: expected a float in [0, 1], got {label_smoothing!r}") from None
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing: expected a float in [0, 1], got {label_smoothing!r}")
    arrays = {"input": input}
    if weight is not None:
        weight = float_array(weight, "weight")
        arrays["weight"] = weight
        if weight.shape != (c,):
            raise ValueError(f"weight: expected shape ({c},) (one weight per class), got {shape_str(weight.shape)}")
    target = target if isinstance(target, np.ndarray) else np.asarray(target)
    if target.dtype.kind == "f":
        arrays["target"] = target
        if ignore_index != -100:
            raise ValueError(f"ignore_index: expected -100 (the default) with class probabilities as target "
                             f"(as PyTorch), got {ignore_index}")
        if target.shape != input.shape:
            raise ValueError(f"target: expected class probabilities of the input's shape {shape_str(input.shape)}, "
                             f"got {shape_str(target.shape)}")
    elif target.dtype.kind in "iu":
        want = () if input.ndim == 1 else (input.shape[0],) + input.shape[2:]
        if target.shape != want:
            raise ValueError(f"target: expected class indices of shape {shape_str(want)} (input "
                             f"{shape_str(input.shape)} without C), got {shape_str(target.shape)}")
        bad = ((target < 0) | (target >= c)) & (target != ignore_index)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0]) if target.ndim else ()
            raise IndexError(f"target: expected class indices in [0, {c}) or ignore_index={ignore_index}, "
                             f"got {int(target[where])} at {where}")
    else:
        raise TypeError(f"target: expected an integer array (class indices) or a float array (class "
                        f"probabilities), got dtype {target.dtype}")
    same_dtype(arrays)
    return input, target, weight, ignore_index, reduction, label_smoothing


def cross_entropy_forward(input, target, weight=None, ignore_index=-100, reduction="mean",
                          label_smoothing=0.0, *, needs_grad=True):
    """input (C,), (N, C) or (N, C, d1, ...); target class indices (int, input's shape without C)
    or class probabilities (float, input's shape); weight (C,) or None.

    Returns (loss, workspace or None); loss is 0-d for "mean"/"sum", per target for "none".
    """
    args = _check_forward(input, target, weight, ignore_index, reduction, label_smoothing)
    input, target, weight, ignore_index, reduction, label_smoothing = args
    if use_reference() or input.size == 0:  # empty: nothing to compute, the reference gives the shapes
        return reference.cross_entropy_forward(*args, needs_grad=needs_grad)
    probs = target.dtype.kind == "f"
    x_rows = _to_rows(input)
    t_rows = None if probs else np.ascontiguousarray(target, np.int64).reshape(x_rows.shape[0])
    q_rows = _to_rows(target) if probs else None
    w = None if weight is None else np.ascontiguousarray(weight)
    row_loss, row_max, row_logsum, row_qw = _core.cross_entropy_forward(
        x_rows, t_rows, q_rows, w, ignore_index, label_smoothing, bool(needs_grad))
    rows = x_rows.shape[0]
    if probs:
        counted, denom = rows > 0, float(rows)
    else:
        mask = t_rows != ignore_index
        counted = bool(mask.any())
        denom = float(mask.sum()) if w is None else float(w.astype(np.float64)[t_rows[mask]].sum())
    loss_shape = () if input.ndim == 1 else (input.shape[0],) + input.shape[2:]
    if reduction == "none":
        loss = row_loss.reshape(loss_shape).astype(input.dtype)
    elif reduction == "sum":
        loss = np.asarray(row_loss.sum(), input.dtype)
    elif not counted:
        loss = np.zeros((), input.dtype)  # documented: PyTorch returns NaN
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            loss = np.asarray(row_loss.sum() / denom, input.dtype)
    if not needs_grad:
        return loss, None
    return loss, {"op": "cross_entropy", "backend": "native", "x_rows": x_rows, "t_rows": t_rows, "q_rows": q_rows,
                  "w": w, "ignore_index": ignore_index, "smoothing": label_smoothing, "row_max": row_max,
                  "row_logsum": row_logsum, "row_qw": row_qw, "reduction": reduction, "counted": counted,
                  "denom": denom, "loss_shape": loss.shape, "shape": input.shape, "dtype": input.dtype}


def cross_entropy_backward(grad_output, workspace):
    """grad_output (shape of the loss; a scalar for "mean"/"sum") -> (dinput, None, None)."""
    _check_workspace(workspace, "cross_entropy")
    g = grad_output if isinstance(grad_output, np.ndarray) else np.asarray(grad_output, workspace["dtype"])
    g = float_array(g, "grad_output")
    if g.dtype != workspace["dtype"]:
        raise TypeError(f"grad_output: expected dtype {workspace['dtype']} (the forward's dtype), got {g.dtype}")
    if g.shape != workspace["loss_shape"]:
        raise ValueError(f"grad_output: expected shape {shape_str(workspace['loss_shape'])} (the loss), "
                         f"got {shape_str(g.shape)}")
    if workspace["backend"] == "numpy":
        return reference.cross_entropy_backward(g, workspace)
    ws = workspace
    grad_rows, scale = None, 1.0
    if ws["reduction"] == "none":
        grad_rows = np.ascontiguousarray(g).reshape(ws["x_rows"].shape[0])
    elif ws["reduction"] == "sum":
        scale = float(g)
    elif ws["counted"]:
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = float(np.float64(g) / ws["denom"])
    else:
        scale = 0.0
    dx_rows = _core.cross_entropy_backward(ws["x_rows"], ws["t_rows"], ws["q_rows"], ws["w"], ws["ignore_index"],
                                           ws["smoothing"], ws["row_max"], ws["row_logsum"], ws["row_qw"],
                                           grad_rows, scale)
    return _from_rows(dx_rows, ws["shape"]), None, None


def _to_rows(a: np.ndarray) -> np.ndarray:
    """(C,), (N, C) or (N, C, d1, ...) as a C-contiguous (rows, C) matrix, rows in (n, d1, ...) order."""
    if a.ndim == 1:
        return np.ascontiguousarray(a).reshape(1, a.shape[0])
    if a.ndim == 2:
        return np.ascontiguousarray(a)
    n, c = a.shape[0], a.shape[1]
    s = math.prod(a.shape[2:])
    return np.ascontiguousarray(a.reshape(n, c, s).transpose(0, 2, 1)).reshape(n * s, c)


def _from_rows(r: np.ndarray, shape: tuple) -> np.ndarray:
    """Inverse of ``_to_rows``: a new C-contiguous array of ``shape``."""
    if len(shape) <= 2:
        return r.reshape(shape)
    n, c = shape[0], shape[1]
    return np.ascontiguousarray(r.reshape(n, -1, c).transpose(0, 2, 1)).reshape(shape)
