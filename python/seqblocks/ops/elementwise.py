"""The residual add pair: y = a + b with b broadcast to a's shape; db sums dy over the broadcast
axes (deterministic native reductions: every output element is summed by one thread in a fixed
order)."""

from __future__ import annotations

import numpy as np

from .. import _core, reference
from .._backend import use_reference
from ._checks import float_array, same_dtype, shape_str
from ._pairs import c_order


def _runs(a_shape: tuple, b_shape: tuple) -> list[tuple[bool, int]]:
    """a's shape as maximal runs of (b broadcast over it?, product of extents); extent-1 axes dropped."""
    padded = (1,) * (len(a_shape) - len(b_shape)) + tuple(b_shape)
    runs: list[list] = []
    for da, db in zip(a_shape, padded):
        if da == 1:
            continue
        bcast = db == 1
        if runs and runs[-1][0] == bcast:
            runs[-1][1] *= da
        else:
            runs.append([bcast, da])
    return [(bc, n) for bc, n in runs]


def add_forward(a, b, *, needs_grad: bool = True):
    """y = a + b; b's shape must broadcast to a's shape (y has a's shape)."""
    a = float_array(a, "a")
    b = float_array(b, "b")
    same_dtype({"a": a, "b": b})
    try:
        ok = np.broadcast_shapes(a.shape, b.shape) == a.shape
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"b: expected a shape that broadcasts to a's shape {shape_str(a.shape)}, "
                         f"got {shape_str(b.shape)}")
    if use_reference():
        return reference.add_forward(a, b, needs_grad=needs_grad)
    a_c = c_order(a).reshape(-1)
    b_shape = b.shape
    runs = _runs(a.shape, b.shape)
    kinds = "".join("B" if bc else "K" for bc, _ in runs)
    n = [size for _, size in runs]
    if kinds in ("", "K"):
        plan = (0, 1, 1, a.size)
    elif kinds == "B":
        plan = (1, 1, 1, a.size)
    elif kinds == "BK":
        plan = (0, 1, n[0], n[1])
    elif kinds == "KB":
        plan = (0, n[0], n[1], 1)
    elif kinds == "KBK":
        plan = (0, n[0], n[1], n[2])
    elif kinds == "BKB":
        plan = (1, n[0], n[1], n[2])
    else:  # four or more alternating runs: b is expanded to a's shape first
        b = np.broadcast_to(b, a.shape)
        plan = (0, 1, 1, a.size)
    y = _core.add_broadcast(a_c, c_order(b).reshape(-1), *plan).reshape(a.shape)
    return y, ((a.shape, b_shape) if needs_grad else None)


def add_backward(grad_output, workspace):
    """(da = dy (a copy), db = dy summed over the axes b was broadcast over, in b's shape)."""
    a_shape, b_shape = workspace
    dy = float_array(grad_output, "grad_output")
    if dy.shape != tuple(a_shape):
        raise ValueError(f"grad_output: expected shape {shape_str(tuple(a_shape))} (the forward output's), "
                         f"got {shape_str(dy.shape)}")
    if use_reference():
        return reference.add_backward(dy, workspace)
    dy = c_order(dy)
    sizes = [size for _, size in _runs(a_shape, b_shape)]
    bcast = [bc for bc, _ in _runs(a_shape, b_shape)]
    db = dy.reshape(-1)
    for j in reversed(range(len(sizes))):
        if bcast[j]:
            outer = int(np.prod(sizes[:j], dtype=np.int64))
            inner = int(np.prod(sizes[j + 1:], dtype=np.int64))
            db = _core.sum_axis(db, outer, sizes[j], inner)
            del sizes[j]
    return dy.copy(), db.reshape(b_shape)
