"""The residual add pair: y = a + b with b broadcast to a's shape; db sums dy over the broadcast
axes (deterministic native reductions: every output element is summed by one thread in a fixed
order). The sum pair: y = x summed over some axes (the reduction behind ``Tensor.sum``/``mean``
and every scalar loss); its backward broadcasts dy back to x's shape."""

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


def _check_out(out, a: np.ndarray, b: np.ndarray) -> None:
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out: expected an ndarray or None, got {type(out).__name__}")
    if out.shape != a.shape or out.dtype != a.dtype:
        raise ValueError(f"out: expected shape {shape_str(a.shape)} and dtype {a.dtype} (a's), got "
                         f"{shape_str(out.shape)} and {out.dtype}")
    if not (out.flags.writeable and out.flags.c_contiguous):
        raise ValueError("out: expected a writable C-contiguous array")
    if np.shares_memory(out, b) or (out is not a and np.shares_memory(out, a)):
        raise ValueError("out: expected a itself or memory apart from a and b, got overlapping arrays")


def _sum_runs(flat: np.ndarray, runs: list[tuple[bool, int]]) -> np.ndarray:
    """``flat`` (C order) viewed as the runs' extents, summed over the runs marked True: one
    deterministic ``sum_axis`` pass per such run, right to left. Returns the kept elements flat."""
    sizes = [n for _, n in runs]
    for j in reversed(range(len(runs))):
        if runs[j][0]:
            outer = int(np.prod(sizes[:j], dtype=np.int64))
            inner = int(np.prod(sizes[j + 1:], dtype=np.int64))
            flat = _core.sum_axis(flat, outer, sizes[j], inner)
            del sizes[j]
    return flat


def add_forward(a, b, *, needs_grad: bool = True, out=None):
    """y = a + b; b's shape must broadcast to a's shape (y has a's shape). With ``out`` (a
    writable C-contiguous array of a's shape and dtype: a itself for an in-place add, or memory
    apart from a and b) y is written there and ``out`` is returned as y."""
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
    if out is not None:
        _check_out(out, a, b)
    if use_reference():
        return reference.add_forward(a, b, needs_grad=needs_grad, out=out)
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
    y = _core.add_broadcast(c_order(a), c_order(b).reshape(-1), *plan, None if out is None else out.reshape(-1))
    return (y if out is None else out), ((a.shape, b_shape) if needs_grad else None)


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
    db = _sum_runs(dy.reshape(-1), _runs(a_shape, b_shape))
    return dy.copy(), db.reshape(b_shape)


# ------------------------------------------------------------------------------------------- sum


def _check_dims(dims, ndim: int) -> tuple[int, ...] | None:
    """``dims`` (None, an int or ints in [-ndim, ndim)) as sorted non-negative axes, or None (all)."""
    if dims is None:
        return None
    raw = (dims,) if isinstance(dims, (int, np.integer)) else tuple(dims)
    out = []
    for d in raw:
        if not isinstance(d, (int, np.integer)) or isinstance(d, bool):
            raise TypeError(f"dims: expected ints, got {type(d).__name__}")
        if not -max(ndim, 1) <= d < max(ndim, 1):
            raise ValueError(f"dims: expected axes in [{-max(ndim, 1)}, {max(ndim, 1) - 1}], got {d}")
        out.append(int(d) % max(ndim, 1))
    if len(set(out)) != len(out):
        raise ValueError(f"dims: expected distinct axes, got {raw}")
    return tuple(sorted(out)) if ndim else None  # a 0-d array's dim 0 (or -1) is all of it


def _reduced_runs(shape: tuple, dims: tuple[int, ...] | None) -> list[tuple[bool, int]]:
    """``shape`` as maximal runs of (reduced?, product of extents); extent-1 axes dropped."""
    runs: list[list] = []
    for axis, extent in enumerate(shape):
        if extent == 1:
            continue
        reduced = dims is None or axis in dims
        if runs and runs[-1][0] == reduced:
            runs[-1][1] *= extent
        else:
            runs.append([reduced, extent])
    return [(r, n) for r, n in runs]


def _reduced_shape(shape: tuple, dims: tuple[int, ...] | None, keepdim: bool) -> tuple:
    if dims is None:
        return (1,) * len(shape) if keepdim else ()
    if keepdim:
        return tuple(1 if axis in dims else n for axis, n in enumerate(shape))
    return tuple(n for axis, n in enumerate(shape) if axis not in dims)


# Below this many elements NumPy's own sum and fill cost less than the native call.
_NATIVE_SUM_MIN_SIZE = 16384


def sum_forward(x, dims=None, keepdim: bool = False, *, needs_grad: bool = True):
    """y = x summed over ``dims`` (all axes when None), as ``torch.sum(x, dims, keepdim)``.

    Native for float arrays of at least 16384 elements: one deterministic pass per run of
    reduced axes (``sum_axis``: fixed chunks, partials added in order -- the same bits for every
    thread count, and the error of a two-level sum). Returns (y, workspace)."""
    x = float_array(x, "x")
    dims = _check_dims(dims, x.ndim)
    keepdim = bool(keepdim)
    ws = (x.shape, dims, keepdim, x.dtype) if needs_grad else None
    if use_reference() or x.size < _NATIVE_SUM_MIN_SIZE:
        return reference.sum_forward(x, dims, keepdim, needs_grad=needs_grad)
    y = _sum_runs(c_order(x).reshape(-1), _reduced_runs(x.shape, dims))
    return y.reshape(_reduced_shape(x.shape, dims, keepdim)), ws


# Width of the row a full reduction's gradient is broadcast from (strided_copy's source row).
_FILL_ROW = 1024


def sum_backward(grad_output, workspace):
    """dy (the reduced shape) -> (dx,): dy broadcast back to x's shape (a new array)."""
    shape, dims, keepdim, dtype = workspace
    dy = float_array(grad_output, "grad_output")
    if dy.dtype != dtype:
        raise TypeError(f"grad_output: expected dtype {dtype} (the forward's), got {dy.dtype}")
    want = _reduced_shape(shape, dims, keepdim)
    if dy.shape != want:
        raise ValueError(f"grad_output: expected shape {shape_str(want)} (the forward output's), "
                         f"got {shape_str(dy.shape)}")
    size = int(np.prod(shape, dtype=np.int64))
    if use_reference() or size < _NATIVE_SUM_MIN_SIZE:
        return reference.sum_backward(dy, workspace)
    dx = _core.empty(shape, dy.dtype)
    runs = _reduced_runs(shape, dims)
    if all(r for r, _ in runs):  # one value everywhere: copy a row of it over the flat output
        flat = dx.reshape(-1)
        rows = size // _FILL_ROW
        row = np.full(_FILL_ROW, dy.reshape(()), dy.dtype)
        _core.strided_copy(flat[:rows * _FILL_ROW].reshape(rows, _FILL_ROW),
                           np.broadcast_to(row, (rows, _FILL_ROW)))
        flat[rows * _FILL_ROW:] = row[0]
    elif not runs[-1][0] and len(runs) <= 4:  # the last run kept: rows of dy, stride 0 elsewhere
        dst = dx.reshape([n for _, n in runs])
        src = dy.reshape([1 if r else n for r, n in runs])
        _core.strided_copy(dst, np.broadcast_to(src, dst.shape))
    else:
        dx[...] = dy.reshape(_reduced_shape(shape, dims, True))
    return (dx,)
