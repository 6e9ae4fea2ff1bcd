"""NumPy reference for the recurrent layer pairs of ``seqblocks.ops``: one single-direction layer
over a whole (padded) sequence, forward and backward through time.

Shapes: x (T, B, I); states (B, H) (LSTM hidden state (B, H_out), H_out = proj_size or H);
w_ih (G*H, I), w_hh (G*H, H_out), b_ih/b_hh (G*H,) or None, G = 4 (LSTM), 3 (GRU), 1 (RNN);
lengths (B,) ints in [1, T] or None (= all T). Gate order as PyTorch: LSTM i, f, g, o; GRU r, z, n.

    LSTM:  [i f g o] = x_t W_ih^T + b_ih + h W_hh^T + b_hh;  i, f, o = sigmoid, g = tanh
           c' = f c + i g,  h' = (o tanh(c')) W_hr^T  (no W_hr: h' = o tanh(c'))
    GRU:   r, z = sigmoid(x_t W_i^T + b_i + h W_h^T + b_h) for their gates
           n = tanh(x_t W_in^T + b_in + r (h W_hn^T + b_hn)),  h' = (1 - z) n + z h
    RNN:   h' = act(x_t W_ih^T + b_ih + h W_hh^T + b_hh),  act = tanh or relu

Variable lengths (PackedSequence semantics at padded shapes): row b takes steps t < lengths[b];
at other steps its state is carried unchanged and its output is zero. The forward direction runs
t = 0..T-1, ``reverse=True`` runs t = T-1..0, so each row's reverse pass starts at its own last
valid step from h0. Final states are the carried states after the loop.

Backward (grad_outputs = (dy, dh_n[, dc_n])): the carried state gradient goes back through the
steps in reverse processing order; at a row's inactive step it passes unchanged and dy is
ignored (y is the constant 0 there). Weight gradients are sums over steps of the gate gradient
products. Computed in float64, rounded to the input dtype.
"""

from __future__ import annotations

import numpy as np



def _SIG(v):
    """sigmoid(v) = (1 + tanh(v / 2)) / 2: no overflow for large |v|."""
    return 0.5 * (1.0 + np.tanh(0.5 * v))


def _f64(a):
    return None if a is None else np.asarray(a, np.float64)


def _steps(T: int, reverse: bool):
    return range(T - 1, -1, -1) if reverse else range(T)


def _masks(lengths, T: int, B: int) -> np.ndarray:
    """(T, B) bool: step t is valid for row b."""
    if lengths is None:
        return np.ones((T, B), bool)
    lengths = np.asarray(lengths).astype(np.int64)
    return np.arange(T)[:, None] < lengths[None, :]


def _zeros_like_state(h0, B, H):
    return np.zeros((B, H)) if h0 is None else _f64(h0)


# ------------------------------------------------------------------------------------------ LSTM


def lstm_layer_forward(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None, lengths=None, reverse=False,
                       *, needs_grad=True):
    """Returns ((y (T, B, H_out), h_n (B, H_out), c_n (B, H)), workspace or None)."""
    dtype = np.asarray(x).dtype
    x64, wi, wh, wr = _f64(x), _f64(w_ih), _f64(w_hh), _f64(w_hr)
    T, B, _ = x64.shape
    H = wi.shape[0] // 4
    Ho = wr.shape[0] if wr is not None else H
    bias = np.zeros(4 * H)
    if b_ih is not None:
        bias = bias + _f64(b_ih)
    if b_hh is not None:
        bias = bias + _f64(b_hh)
    h = _zeros_like_state(h0, B, Ho).copy()
    c = _zeros_like_state(c0, B, H).copy()
    mask = _masks(lengths, T, B)
    xw = x64 @ wi.T + bias  # (T, B, 4H): the input projection of every step at once
    y = np.zeros((T, B, Ho))
    saved = {}
    for t in _steps(T, reverse):
        g = xw[t] + h @ wh.T
        i, f, gg, o = _SIG(g[:, :H]), _SIG(g[:, H:2 * H]), np.tanh(g[:, 2 * H:3 * H]), _SIG(g[:, 3 * H:])
        c_new = f * c + i * gg
        tc = np.tanh(c_new)
        h_raw = o * tc
        h_new = h_raw @ wr.T if wr is not None else h_raw
        m = mask[t][:, None]
        if needs_grad:
            saved[t] = (h.copy(), c.copy(), i, f, gg, o, tc, h_raw)
        h = np.where(m, h_new, h)
        c = np.where(m, c_new, c)
        y[t] = np.where(m, h_new, 0.0)
    out = (y.astype(dtype), h.astype(dtype), c.astype(dtype))
    if not needs_grad:
        return out, None
    ws = {"op": "lstm_layer", "backend": "numpy", "x": x64, "dtype": dtype, "w_ih": wi, "w_hh": wh, "w_hr": wr,
          "has_bias": (b_ih is not None, b_hh is not None), "has_h0": h0 is not None, "has_c0": c0 is not None,
          "mask": mask, "reverse": bool(reverse), "saved": saved, "H": H, "Ho": Ho}
    return out, ws


def lstm_layer_backward(grad_outputs, workspace):
    """(dy, dh_n, dc_n) -> (dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr); None for absent inputs."""
    dy, dh_n, dc_n = (np.asarray(g, np.float64) for g in grad_outputs)
    ws = workspace
    x, wi, wh, wr, mask, H = ws["x"], ws["w_ih"], ws["w_hh"], ws["w_hr"], ws["mask"], ws["H"]
    T, B, _ = x.shape
    dh, dc = dh_n.copy(), dc_n.copy()
    dG = np.zeros((T, B, 4 * H))
    dwh = np.zeros_like(wh)
    dwr = None if wr is None else np.zeros_like(wr)
    for t in reversed(list(_steps(T, ws["reverse"]))):
        h_prev, c_prev, i, f, gg, o, tc, h_raw = ws["saved"][t]
        m = mask[t][:, None]
        d = dh + dy[t]
        if wr is not None:
            dwr += (d * m).T @ h_raw
            d = d @ wr
        do = d * tc
        dcc = dc + d * o * (1.0 - tc * tc)
        g = np.concatenate([dcc * gg * i * (1 - i), dcc * c_prev * f * (1 - f), dcc * i * (1 - gg * gg),
                            do * o * (1 - o)], axis=1) * m
        dG[t] = g
        dwh += g.T @ h_prev
        dh = np.where(m, g @ wh, dh)
        dc = np.where(m, dcc * f, dc)
    dx = dG @ wi
    dwi = dG.reshape(-1, 4 * H).T @ x.reshape(-1, x.shape[2])
    db = dG.sum(axis=(0, 1))
    dt = ws["dtype"]
    cast = lambda a: a.astype(dt)  # noqa: E731
    return (cast(dx), cast(dh) if ws["has_h0"] else None, cast(dc) if ws["has_c0"] else None, cast(dwi),
            cast(dwh), cast(db) if ws["has_bias"][0] else None, cast(db) if ws["has_bias"][1] else None,
            None if dwr is None else cast(dwr))


# ------------------------------------------------------------------------------------------- GRU


def gru_layer_forward(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, lengths=None, reverse=False, *, needs_grad=True):
    """Returns ((y (T, B, H), h_n (B, H)), workspace or None)."""
    dtype = np.asarray(x).dtype
    x64, wi, wh = _f64(x), _f64(w_ih), _f64(w_hh)
    T, B, _ = x64.shape
    H = wi.shape[0] // 3
    bi = np.zeros(3 * H) if b_ih is None else _f64(b_ih)
    bh = np.zeros(3 * H) if b_hh is None else _f64(b_hh)
    h = _zeros_like_state(h0, B, H).copy()
    mask = _masks(lengths, T, B)
    xw = x64 @ wi.T + bi
    y = np.zeros((T, B, H))
    saved = {}
    for t in _steps(T, reverse):
        hw = h @ wh.T + bh
        r = _SIG(xw[t, :, :H] + hw[:, :H])
        z = _SIG(xw[t, :, H:2 * H] + hw[:, H:2 * H])
        n = np.tanh(xw[t, :, 2 * H:] + r * hw[:, 2 * H:])
        h_new = (1 - z) * n + z * h
        m = mask[t][:, None]
        if needs_grad:
            saved[t] = (h.copy(), r, z, n, hw[:, 2 * H:])
        h = np.where(m, h_new, h)
        y[t] = np.where(m, h_new, 0.0)
    out = (y.astype(dtype), h.astype(dtype))
    if not needs_grad:
        return out, None
    ws = {"op": "gru_layer", "backend": "numpy", "x": x64, "dtype": dtype, "w_ih": wi, "w_hh": wh,
          "has_bias": (b_ih is not None, b_hh is not None), "has_h0": h0 is not None, "mask": mask,
          "reverse": bool(reverse), "saved": saved, "H": H}
    return out, ws


def gru_layer_backward(grad_outputs, workspace):
    """(dy, dh_n) -> (dx, dh0, dw_ih, dw_hh, db_ih, db_hh); None for absent inputs."""
    dy, dh_n = (np.asarray(g, np.float64) for g in grad_outputs)
    ws = workspace
    x, wi, wh, mask, H = ws["x"], ws["w_ih"], ws["w_hh"], ws["mask"], ws["H"]
    T, B, _ = x.shape
    dh = dh_n.copy()
    dGi = np.zeros((T, B, 3 * H))
    dwh = np.zeros_like(wh)
    dbh = np.zeros(3 * H)
    for t in reversed(list(_steps(T, ws["reverse"]))):
        h_prev, r, z, n, hn = ws["saved"][t]
        m = mask[t][:, None]
        d = dh + dy[t]
        dn = d * (1 - z) * (1 - n * n)
        dz = d * (h_prev - n) * z * (1 - z)
        dr = dn * hn * r * (1 - r)
        gi = np.concatenate([dr, dz, dn], axis=1) * m
        gh = np.concatenate([dr, dz, dn * r], axis=1) * m
        dGi[t] = gi
        dwh += gh.T @ h_prev
        dbh += gh.sum(axis=0)
        dh = np.where(m, d * z + gh @ wh, dh)
    dx = dGi @ wi
    dwi = dGi.reshape(-1, 3 * H).T @ x.reshape(-1, x.shape[2])
    dbi = dGi.sum(axis=(0, 1))
    dt = ws["dtype"]
    cast = lambda a: a.astype(dt)  # noqa: E731
    return (cast(dx), cast(dh) if ws["has_h0"] else None, cast(dwi), cast(dwh),
            cast(dbi) if ws["has_bias"][0] else None, cast(dbh) if ws["has_bias"][1] else None)


# ------------------------------------------------------------------------------------------- RNN


def rnn_layer_forward(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, lengths=None, reverse=False, nonlinearity="tanh",
                      *, needs_grad=True):
    """Returns ((y (T, B, H), h_n (B, H)), workspace or None)."""
    dtype = np.asarray(x).dtype
    x64, wi, wh = _f64(x), _f64(w_ih), _f64(w_hh)
    T, B, _ = x64.shape
    H = wi.shape[0]
    bias = np.zeros(H)
    if b_ih is not None:
        bias = bias + _f64(b_ih)
    if b_hh is not None:
        bias = bias + _f64(b_hh)
    h = _zeros_like_state(h0, B, H).copy()
    mask = _masks(lengths, T, B)
    xw = x64 @ wi.T + bias
    y = np.zeros((T, B, H))
    saved = {}
    for t in _steps(T, reverse):
        pre = xw[t] + h @ wh.T
        h_new = np.tanh(pre) if nonlinearity == "tanh" else np.maximum(pre, 0.0)
        m = mask[t][:, None]
        if needs_grad:
            saved[t] = (h.copy(), h_new)
        h = np.where(m, h_new, h)
        y[t] = np.where(m, h_new, 0.0)
    out = (y.astype(dtype), h.astype(dtype))
    if not needs_grad:
        return out, None
    ws = {"op": "rnn_layer", "backend": "numpy", "x": x64, "dtype": dtype, "w_ih": wi, "w_hh": wh,
          "has_bias": (b_ih is not None, b_hh is not None), "has_h0": h0 is not None, "mask": mask,
          "reverse": bool(reverse), "saved": saved, "H": H, "nonlinearity": nonlinearity}
    return out, ws


def rnn_layer_backward(grad_outputs, workspace):
    """(dy, dh_n) -> (dx, dh0, dw_ih, dw_hh, db_ih, db_hh); None for absent inputs."""
    dy, dh_n = (np.asarray(g, np.float64) for g in grad_outputs)
    ws = workspace
    x, wi, wh, mask, H = ws["x"], ws["w_ih"], ws["w_hh"], ws["mask"], ws["H"]
    T, B, _ = x.shape
    dh = dh_n.copy()
    dG = np.zeros((T, B, H))
    dwh = np.zeros_like(wh)
    for t in reversed(list(_steps(T, ws["reverse"]))):
        h_prev, h_new = ws["saved"][t]
        m = mask[t][:, None]
        d = dh + dy[t]
        act = (1 - h_new * h_new) if ws["nonlinearity"] == "tanh" else (h_new > 0).astype(np.float64)
        g = d * act * m
        dG[t] = g
        dwh += g.T @ h_prev
        dh = np.where(m, g @ wh, dh)
    dx = dG @ wi
    dwi = dG.reshape(-1, H).T @ x.reshape(-1, x.shape[2])
    db = dG.sum(axis=(0, 1))
    dt = ws["dtype"]
    cast = lambda a: a.astype(dt)  # noqa: E731
    return (cast(dx), cast(dh) if ws["has_h0"] else None, cast(dwi), cast(dwh),
            cast(db) if ws["has_bias"][0] else None, cast(db) if ws["has_bias"][1] else None)
