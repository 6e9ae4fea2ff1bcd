"""NumPy reference for scaled dot-product attention (the twin of ``seqblocks.ops.sdpa_*``).

Shapes: q (..., L, E), k (..., S, E), v (..., S, Ev) with equal leading dims (flattened to N);
attn_mask broadcastable to (..., L, S), either additive (float, q's dtype) or boolean (True = may
attend). The reference materialises the (N, L, S) scores; the native kernel does not.

    s = scale * q @ k^T  (+ mask, or -inf where a boolean mask is False or j > i when causal)
    m = max_j s,  l = sum_j exp(s - m),  p = exp(s - m) / l
    pd = p * f   (f the counter-based dropout factors of docs/ops.md, keyed by (seed, n*L*S + i*S + j))
    out = pd @ v
A row whose every score is -inf (fully masked) has l = 0, p = 0 and out = 0 (PyTorch: NaN).
The backward recomputes p from q and k the same way.

Backward, with D_i = sum_e dout_ie out_ie:
    dv = pd^T @ dout,  dp = (dout @ v^T) * f,  ds = p * (dp - D),  dq = scale ds @ k,  dk = scale ds^T @ q
"""

from __future__ import annotations

import numpy as np

from .dropout import dropout_mask


def _flat(a: np.ndarray, lead: tuple) -> np.ndarray:
    n = int(np.prod(lead, dtype=np.int64)) if lead else 1
    return a.reshape((n,) + a.shape[len(lead):])


def _scores(q, k, mask, is_causal, scale):
    """(N, L, S) scores with masking applied (-inf where masked). q, k flattened."""
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * q.dtype.type(scale)
    L, S = s.shape[-2:]
    if mask is not None:
        if mask.dtype == np.bool_:
            s = np.where(mask, s, -np.inf).astype(q.dtype, copy=False)
        else:
            s = s + mask
    if is_causal:
        keep = np.tril(np.ones((L, S), dtype=bool))
        s = np.where(keep, s, -np.inf).astype(q.dtype, copy=False)
    return s


def _probs(s):
    """Row softmax of the masked scores, 0 on a row with no finite score. As exp(s - m) / l, not
    exp(s - lse): at |m| near the type's limit (a float mask of finfo.min on a whole row) m + log l
    rounds to m, and exp(s - lse) would sum to l instead of 1."""
    with np.errstate(invalid="ignore", over="ignore"):
        m = s.max(axis=-1, initial=-np.inf)
        e = np.exp(s - np.where(np.isfinite(m), m, 0)[..., None])
        l = e.sum(axis=-1)
        p = np.where((l > 0)[..., None], e / np.where(l > 0, l, 1)[..., None], 0)
    return p.astype(s.dtype, copy=False)


def _factors(shape, dtype, p, seed):
    if p == 0.0:
        return None
    if p >= 1.0:
        return np.zeros(shape, dtype)
    keep = dropout_mask(int(np.prod(shape)), p, seed).reshape(shape)
    return np.where(keep, dtype.type(1.0 / (1.0 - p)), dtype.type(0))


def sdpa_forward(q, k, v, attn_mask=None, is_causal=False, scale=None, dropout_p=0.0, *, seed=None,
                 needs_grad=True, merge_heads=False):
    """Returns (out (..., L, Ev), workspace or None); with ``merge_heads`` (4-D q (B, H, L, E)) out is
    (B, L, H Ev). ``attn_mask`` already broadcast to (..., L, S)."""
    lead = q.shape[:-2]
    L, E = q.shape[-2:]
    S = k.shape[-2]
    scale = 1.0 / np.sqrt(E) if scale is None else float(scale)
    qf, kf, vf = _flat(q, lead), _flat(k, lead), _flat(v, lead)
    mf = None if attn_mask is None else _flat(np.broadcast_to(attn_mask, lead + (L, S)), lead)
    with np.errstate(invalid="ignore", over="ignore"):
        s = _scores(qf, kf, mf, is_causal, scale)
    p = _probs(s)
    f = _factors(p.shape, q.dtype, float(dropout_p), 0 if seed is None else int(seed))
    pd = p if f is None else p * f
    out = np.matmul(pd, vf).astype(q.dtype, copy=False).reshape(lead + (L, vf.shape[-1]))
    result = _merged(out) if merge_heads else out
    if not needs_grad:
        return result, None
    ws = {"op": "sdpa", "backend": "numpy", "q": q, "k": k, "v": v, "mask": attn_mask, "out": out,
          "is_causal": bool(is_causal), "scale": scale, "dropout_p": float(dropout_p),
          "seed": 0 if seed is None else int(seed), "merge_heads": bool(merge_heads)}
    return result, ws


def _merged(out):
    """(B, H, L, Ev) -> (B, L, H Ev)."""
    B, H, L, Ev = out.shape
    return np.ascontiguousarray(out.transpose(0, 2, 1, 3)).reshape(B, L, H * Ev)


def _unmerged(grad, shape):
    """(B, L, H Ev) -> (B, H, L, Ev), the inverse of _merged."""
    B, H, L, Ev = shape
    return grad.reshape(B, L, H, Ev).transpose(0, 2, 1, 3)


def sdpa_backward(grad_output, workspace, *, into=None):
    """Returns (dq, dk, dv, None); probabilities recomputed from q and k (_probs). With ``into``
    = (dq, dk, dv) (arrays shaped like q, k, v) the gradients are written there and returned."""
    q, k, v, mask = workspace["q"], workspace["k"], workspace["v"], workspace["mask"]
    lead = q.shape[:-2]
    L, S = q.shape[-2], k.shape[-2]
    scale = workspace["scale"]
    qf, kf, vf = _flat(q, lead), _flat(k, lead), _flat(v, lead)
    mf = None if mask is None else _flat(np.broadcast_to(mask, lead + (L, S)), lead)
    if workspace.get("merge_heads"):
        grad_output = _unmerged(grad_output, workspace["out"].shape)
    dout = _flat(grad_output, lead)
    out = _flat(workspace["out"], lead)
    with np.errstate(invalid="ignore", over="ignore"):
        s = _scores(qf, kf, mf, workspace["is_causal"], scale)
    p = _probs(s)
    f = _factors(p.shape, q.dtype, workspace["dropout_p"], workspace["seed"])
    pd = p if f is None else p * f
    dv = np.matmul(np.swapaxes(pd, -1, -2), dout)
    dp = np.matmul(dout, np.swapaxes(vf, -1, -2))
    if f is not None:
        dp = dp * f
    d = np.sum(dout * out, axis=-1, keepdims=True)
    ds = p * (dp - d) * q.dtype.type(scale)
    dq = np.matmul(ds, kf)
    dk = np.matmul(np.swapaxes(ds, -1, -2), qf)
    dt = q.dtype
    grads = dq.astype(dt).reshape(q.shape), dk.astype(dt).reshape(k.shape), dv.astype(dt).reshape(v.shape)
    if into is None:
        return grads + (None,)
    for a, g in zip(into, grads):
        np.copyto(a, g)
    return tuple(into) + (None,)


def additive_scores_forward(qp, kp, w, *, needs_grad=True):
    """scores[b,i,j] = sum_h w_h tanh(qp[b,i,h] + kp[b,j,h]); qp (B, Lq, H), kp (B, S, H), w (H,)."""
    t = np.tanh(qp[:, :, None, :] + kp[:, None, :, :])
    scores = (t @ w).astype(qp.dtype, copy=False)
    return scores, ({"op": "additive_scores", "backend": "numpy", "qp": qp, "kp": kp, "w": w, "scores": scores}
                    if needs_grad else None)


def additive_scores_backward(grad_output, workspace):
    """(dqp, dkp, dw): g = ds w (1 - t^2) summed over j (dqp) and i (dkp); dw = sum ds t."""
    qp, kp, w = workspace["qp"], workspace["kp"], workspace["w"]
    t = np.tanh(qp[:, :, None, :] + kp[:, None, :, :])
    ds = grad_output[..., None]
    g = ds * w * (1 - t * t)
    return g.sum(2), g.sum(1), (ds * t).sum((0, 1, 2)).astype(qp.dtype, copy=False)
