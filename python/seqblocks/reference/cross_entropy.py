"""NumPy reference for ``cross_entropy_forward`` / ``cross_entropy_backward`` (PyTorch's
``F.cross_entropy``): log-softmax over the class dim followed by the negative log-likelihood.

Shapes: input (C,), (N, C) or (N, C, d1, ...), seen as (N, C, S) with S = d1 * ...; class-index
targets have the input's shape without C, probability targets the input's shape.
With logp = log_softmax(input) over C, w = weight (ones if None), eps = label_smoothing:

class indices t (a row is *counted* iff t != ignore_index; other rows lose 0):
    loss_i = (1 - eps) * w[t_i] * (-logp_i[t_i]) + (eps / C) * sum_c w[c] * (-logp_i[c])
    "mean" divides the sum by D = sum over counted rows of w[t_i] (both terms, as PyTorch)
probabilities q (q <- q * (1 - eps) + eps / C first):
    loss_i = sum_c w[c] * q_i[c] * (-logp_i[c]);  "mean" divides the sum by N * S

Gradient (p = exp(logp), s_i = dL/dloss_i):
    indices: dinput_i = s_i * (p_i * ((1 - eps) w[t_i] + (eps / C) sum(w)) - (1 - eps) w[t_i] onehot(t_i)
                               - (eps / C) w)         (0 on rows that are not counted)
    probs:   dinput_i = s_i * (p_i * sum_c(q_i[c] w[c]) - q_i * w)

Defined where PyTorch gives NaN: "mean" with no counted row (every target ignore_index, or an
empty batch) returns 0 and a zero gradient. Computed in float64, rounded to the input dtype.
"""

from __future__ import annotations

import math

import numpy as np


def _as_ncs(input: np.ndarray) -> np.ndarray:
    if input.ndim == 1:
        return input.reshape(1, input.shape[0], 1)
    return input.reshape(input.shape[0], input.shape[1], math.prod(input.shape[2:]))


def _loss_shape(input: np.ndarray) -> tuple:
    return () if input.ndim == 1 else (input.shape[0],) + input.shape[2:]


def cross_entropy_forward(input, target, weight=None, ignore_index=-100, reduction="mean",
                          label_smoothing=0.0, *, needs_grad=True):
    """Returns (loss, workspace or None); loss is 0-d for "mean"/"sum", else the target's shape
    (class indices) or the input's shape without C (probabilities)."""
    x = _as_ncs(np.asarray(input, np.float64))
    n, c, s = x.shape
    with np.errstate(invalid="ignore", over="ignore"):
        m = x.max(axis=1, keepdims=True) if c else np.zeros((n, 1, s))
        logp = (x - m) - np.log(np.exp(x - m).sum(axis=1, keepdims=True))
    w = np.ones(c) if weight is None else np.asarray(weight, np.float64)
    eps = float(label_smoothing)
    probs = np.asarray(target).dtype.kind == "f"
    if probs:
        q = np.asarray(target, np.float64).reshape(n, c, s)
        if eps > 0:
            q = q * (1.0 - eps) + eps / c
        loss = -(logp * q * w[None, :, None]).sum(axis=1)  # (n, s)
        counted = np.ones((n, s), bool)
        denom = float(n * s)
        ws = {"q": q}
    else:
        t = np.asarray(target).astype(np.int64).reshape(n, s)
        counted = t != ignore_index
        tc = np.where(counted, t, 0)
        wt = w[tc] * counted  # (n, s)
        picked = np.take_along_axis(logp, tc[:, None, :], axis=1)[:, 0, :]
        loss = -(1.0 - eps) * wt * picked
        if eps > 0:
            loss = loss - (eps / c) * (logp * w[None, :, None]).sum(axis=1) * counted
        loss = np.where(counted, loss, 0.0)
        denom = float(wt.sum())
        ws = {"t": tc, "wt": wt}
    if reduction == "none":
        out = loss.reshape(_loss_shape(input))
    elif reduction == "sum":
        out = np.asarray(loss.sum())
    elif not counted.any():
        out = np.asarray(0.0)  # documented: PyTorch returns NaN
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.asarray(loss.sum() / denom)
    out = out.astype(input.dtype)
    if not needs_grad:
        return out, None
    ws.update({"op": "cross_entropy", "backend": "numpy", "loss_shape": out.shape, "logp": logp, "w": w,
               "eps": eps, "counted": counted, "denom": denom, "reduction": reduction, "shape": input.shape,
               "dtype": input.dtype})
    return out, ws


def cross_entropy_backward(grad_output, workspace):
    """grad_output (shape of the loss) -> (dinput, None, None)."""
    logp, w, eps = workspace["logp"], workspace["w"], workspace["eps"]
    counted, reduction = workspace["counted"], workspace["reduction"]
    n, c, s = logp.shape
    g = np.asarray(grad_output, np.float64)
    if reduction == "none":
        scale = g.reshape(n, s)
    elif reduction == "sum":
        scale = np.full((n, s), float(g))
    elif not counted.any():
        scale = np.zeros((n, s))
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = np.full((n, s), float(g) / workspace["denom"])
    scale = np.where(counted, scale, 0.0)
    p = np.exp(logp)
    if "q" in workspace:
        qw = workspace["q"] * w[None, :, None]
        dx = p * qw.sum(axis=1, keepdims=True) - qw
    else:
        t, wt = workspace["t"], workspace["wt"]
        a = (1.0 - eps) * wt + (eps / c) * w.sum()
        dx = p * a[:, None, :] - (eps / c) * w[None, :, None]
        onehot = np.zeros_like(dx)
        np.put_along_axis(onehot, t[:, None, :], 1.0, axis=1)
        dx = dx - onehot * ((1.0 - eps) * wt)[:, None, :]
    with np.errstate(invalid="ignore"):
        dx = np.where(counted[:, None, :], dx * scale[:, None, :], 0.0)
    return dx.reshape(workspace["shape"]).astype(workspace["dtype"]), None, None
