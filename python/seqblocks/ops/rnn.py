"""Recurrent layer pairs: one single-direction layer over a whole padded sequence (docs/ops.md).

``lstm_layer_forward(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None, lengths=None, reverse=False,
*, needs_grad=True) -> ((y, h_n, c_n), workspace)``, ``lstm_layer_backward((dy, dh_n, dc_n), workspace)
-> (dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr)``; ``gru_layer_*`` and ``rnn_layer_*`` likewise
without the cell state and projection (``rnn_layer_forward`` takes ``nonlinearity="tanh"|"relu"``).
Formulas in ``seqblocks.reference.rnn``; native kernels in ``cpp/ops/rnn*``.
"""

from __future__ import annotations

import operator

import numpy as np

from .. import _core, reference
from .._backend import use_reference
from ._checks import float_array, same_dtype, shape_str

_GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def _check_forward(kind, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, reverse):
    G = _GATES[kind]
    x = float_array(x, "x")
    if x.ndim != 3:
        raise ValueError(f"x: expected a 3-D array (T, B, input_size), got shape {shape_str(x.shape)}")
    T, B, I = x.shape
    w_ih = float_array(w_ih, "w_ih")
    w_hh = float_array(w_hh, "w_hh")
    arrays = {"x": x, "w_ih": w_ih, "w_hh": w_hh}
    if w_ih.ndim != 2 or w_ih.shape[0] % G or w_ih.shape[0] == 0:
        raise ValueError(f"w_ih: expected shape ({G}*hidden_size, input_size), got {shape_str(w_ih.shape)}")
    H = w_ih.shape[0] // G
    if w_ih.shape[1] != I:
        raise ValueError(f"x: expected feature size {w_ih.shape[1]} (w_ih's input_size), got {I} "
                         f"(shape {shape_str(x.shape)})")
    Ho = H
    if w_hr is not None:
        w_hr = float_array(w_hr, "w_hr")
        arrays["w_hr"] = w_hr
        if w_hr.ndim != 2 or w_hr.shape[1] != H or not 0 < w_hr.shape[0] < H:
            raise ValueError(f"w_hr: expected shape (proj_size, {H}) with 0 < proj_size < {H}, "
                             f"got {shape_str(w_hr.shape)}")
        Ho = w_hr.shape[0]
    if w_hh.shape != (G * H, Ho):
        raise ValueError(f"w_hh: expected shape {shape_str((G * H, Ho))}, got {shape_str(w_hh.shape)}")
    for name, b in (("b_ih", b_ih), ("b_hh", b_hh)):
        if b is not None:
            b = float_array(b, name)
            arrays[name] = b
            if b.shape != (G * H,):
                raise ValueError(f"{name}: expected shape {shape_str((G * H,))}, got {shape_str(b.shape)}")
    states = [("h0", h0, Ho)] + ([("c0", c0, H)] if kind == "lstm" else [])
    checked = []
    for name, s, width in states:
        if s is not None:
            s = float_array(s, name)
            arrays[name] = s
            if s.shape != (B, width):
                raise ValueError(f"{name}: expected shape {shape_str((B, width))}, got {shape_str(s.shape)}")
        checked.append(s)
    same_dtype(arrays)
    if lengths is not None:
        lengths = np.asarray(lengths)
        if lengths.dtype.kind not in "iu":
            raise TypeError(f"lengths: expected an integer array, got dtype {lengths.dtype}")
        if lengths.shape != (B,):
            raise ValueError(f"lengths: expected shape {shape_str((B,))} (one per batch row), "
                             f"got {shape_str(lengths.shape)}")
        if B and (lengths.min() < 1 or lengths.max() > T):
            bad = lengths[(lengths < 1) | (lengths > T)][0]
            raise ValueError(f"lengths: expected values in [1, {T}] (T), got {int(bad)}")
        lengths = lengths.astype(np.int64)
    try:
        reverse = bool(operator.index(reverse)) if not isinstance(reverse, (bool, np.bool_)) else bool(reverse)
    except TypeError:
        raise TypeError(f"reverse: expected a bool, got {reverse!r}") from None
    return x, checked, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, reverse


def _check_grads(grads, shapes, dtype, names):
    if not isinstance(grads, (tuple, list)) or len(grads) != len(shapes):
        raise ValueError(f"grad_outputs: expected a tuple ({', '.join(names)}), got {type(grads).__name__}")
    out = []
    for g, shape, name in zip(grads, shapes, names):
        g = float_array(g, name)
        if g.dtype != dtype:
            raise TypeError(f"{name}: expected dtype {dtype} (the forward's), got {g.dtype}")
        if g.shape != shape:
            raise ValueError(f"{name}: expected shape {shape_str(shape)}, got {shape_str(g.shape)}")
        out.append(np.ascontiguousarray(g))
    return tuple(out)


def _check_workspace(workspace, op: str) -> None:
    if not isinstance(workspace, dict) or workspace.get("op") != op:
        raise ValueError(f"workspace: expected the workspace returned by {op}_forward(..., needs_grad=True), "
                         f"got {type(workspace).__name__}")


def _c(a):
    return None if a is None else np.ascontiguousarray(a)


_CELL = {"lstm": 0, "gru": 1, "rnn_tanh": 2, "rnn_relu": 3}


def _native_forward(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, needs_grad, w_hr=None):
    """The C++ kernel of ``cell`` (states default to zeros); returns the outputs and the workspace."""
    T, B, _ = x.shape
    H = w_ih.shape[0] // {"lstm": 4, "gru": 3}.get(cell, 1)
    Ho = H if w_hr is None else w_hr.shape[0]
    h0c = np.zeros((B, Ho), x.dtype) if h0 is None else _c(h0)
    c0c = (np.zeros((B, H), x.dtype) if c0 is None else _c(c0)) if cell == "lstm" else None
    y, h_n, c_n, ws = _core.rnn_layer_forward(_CELL[cell], _c(x), h0c, c0c, _c(w_ih), _c(w_hh), _c(b_ih), _c(b_hh),
                                              _c(w_hr), lengths, bool(reverse), bool(needs_grad))
    out = (y, h_n, c_n) if cell == "lstm" else (y, h_n)
    if not needs_grad:
        return out, None
    op = "lstm_layer" if cell == "lstm" else "gru_layer" if cell == "gru" else "rnn_layer"
    return out, {"op": op, "backend": "native", "cell": cell, "x": x, "w_ih": _c(w_ih), "w_hh": _c(w_hh),
                 "w_hr": _c(w_hr), "lengths": lengths, "reverse": bool(reverse), "ws": ws, "y": y, "h0": h0c,
                 "dtype": x.dtype, "H": H,
                 "Ho": Ho,
                 "has": (h0 is not None, c0 is not None, b_ih is not None, b_hh is not None)}


def _native_backward(grads, ws):
    cell = ws["cell"]
    dy, dh_n = grads[0], grads[1]
    dc_n = grads[2] if cell == "lstm" else None
    dx, dh0, dc0, dwi, dwh, dbi, dbh, dwr = _core.rnn_layer_backward(
        _CELL[cell], dy, dh_n, dc_n, _c(ws["x"]), ws["w_ih"], ws["w_hh"], ws["w_hr"], ws["lengths"], ws["reverse"],
        ws["ws"], ws["y"], ws["h0"])
    has_h0, has_c0, has_bi, has_bh = ws["has"]
    head = (dx, dh0 if has_h0 else None) + ((dc0 if has_c0 else None,) if cell == "lstm" else ())
    tail = (dwi, dwh, dbi if has_bi else None, dbh if has_bh else None)
    return head + tail + ((dwr,) if cell == "lstm" else ())


def _use_native(x) -> bool:
    return not use_reference() and x.size != 0


# ------------------------------------------------------------------------------------------ LSTM


def lstm_layer_forward(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None, lengths=None, reverse=False,
                       *, needs_grad=True):
    """One LSTM layer direction over x (T, B, I) -> ((y (T, B, H_out), h_n (B, H_out), c_n (B, H)), ws).

    With ``w_hr`` (proj_size > 0) the native kernel adds a projection phase (a second barrier) per step.
    """
    x, (h0, c0), w_ih, w_hh, b_ih, b_hh, w_hr, lengths, reverse = _check_forward(
        "lstm", x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, reverse)
    if _use_native(x):
        return _native_forward("lstm", x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, needs_grad, w_hr)
    return reference.lstm_layer_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, reverse,
                                        needs_grad=needs_grad)


def lstm_layer_backward(grad_outputs, workspace):
    """(dy, dh_n, dc_n) -> (dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr); None for absent inputs."""
    _check_workspace(workspace, "lstm_layer")
    ws = workspace
    T, B, _ = ws["x"].shape
    H, Ho = ws["H"], ws["Ho"]
    grads = _check_grads(grad_outputs, [(T, B, Ho), (B, Ho), (B, H)], np.dtype(ws["dtype"]),
                         ["dy", "dh_n", "dc_n"])
    if ws["backend"] == "numpy":
        return reference.lstm_layer_backward(grads, ws)
    return _native_backward(grads, ws)


# ------------------------------------------------------------------------------------------- GRU


def gru_layer_forward(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, lengths=None, reverse=False, *, needs_grad=True):
    """One GRU layer direction over x (T, B, I) -> ((y (T, B, H), h_n (B, H)), ws)."""
    x, (h0,), w_ih, w_hh, b_ih, b_hh, _, lengths, reverse = _check_forward(
        "gru", x, h0, None, w_ih, w_hh, b_ih, b_hh, None, lengths, reverse)
    if _use_native(x):
        return _native_forward("gru", x, h0, None, w_ih, w_hh, b_ih, b_hh, lengths, reverse, needs_grad)
    return reference.gru_layer_forward(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, needs_grad=needs_grad)


def gru_layer_backward(grad_outputs, workspace):
    """(dy, dh_n) -> (dx, dh0, dw_ih, dw_hh, db_ih, db_hh); None for absent inputs."""
    _check_workspace(workspace, "gru_layer")
    return _simple_backward(grad_outputs, workspace, reference.gru_layer_backward)


# ------------------------------------------------------------------------------------------- RNN


def rnn_layer_forward(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, lengths=None, reverse=False, nonlinearity="tanh",
                      *, needs_grad=True):
    """One Elman RNN layer direction over x (T, B, I) -> ((y (T, B, H), h_n (B, H)), ws)."""
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
    x, (h0,), w_ih, w_hh, b_ih, b_hh, _, lengths, reverse = _check_forward(
        "rnn", x, h0, None, w_ih, w_hh, b_ih, b_hh, None, lengths, reverse)
    if _use_native(x):
        return _native_forward("rnn_" + nonlinearity, x, h0, None, w_ih, w_hh, b_ih, b_hh, lengths, reverse,
                               needs_grad)
    return reference.rnn_layer_forward(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, nonlinearity,
                                       needs_grad=needs_grad)


def rnn_layer_backward(grad_outputs, workspace):
    """(dy, dh_n) -> (dx, dh0, dw_ih, dw_hh, db_ih, db_hh); None for absent inputs."""
    _check_workspace(workspace, "rnn_layer")
    return _simple_backward(grad_outputs, workspace, reference.rnn_layer_backward)


def _simple_backward(grad_outputs, ws, ref):
    T, B, _ = ws["x"].shape
    H = ws["H"]
    grads = _check_grads(grad_outputs, [(T, B, H), (B, H)], np.dtype(ws["dtype"]), ["dy", "dh_n"])
    if ws["backend"] == "numpy":
        return ref(grads, ws)
    return _native_backward(grads, ws)
