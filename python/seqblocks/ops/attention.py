"""Scaled dot-product attention as ``torch.nn.functional.scaled_dot_product_attention``:
``sdpa_forward`` -> (out, workspace), ``sdpa_backward`` -> (dq, dk, dv, None).

Formulas in ``seqblocks.reference.attention``; native kernels in ``cpp/ops/attention*``: a tiled
forward with an online softmax that keeps only two numbers per row (the maximum and log-sum of the
scores), and a backward that recomputes the probabilities tile by tile, so neither direction
allocates an L x S buffer. The workspace keeps (references to) q, k, v, the mask, the output and
those row statistics.

Differences from PyTorch: a fully masked query row gives zeros and zero gradients (PyTorch: NaN).
"""

from __future__ import annotations

import math
import numbers
import operator

import numpy as np

from .. import _core, reference
from .._backend import use_reference
from ._checks import float_array, same_dtype, shape_str
from ._pairs import c_order, check_grad_output
from ..reference.attention import _merged, _unmerged


def _check_inputs(q, k, v):
    q, k, v = float_array(q, "query"), float_array(k, "key"), float_array(v, "value")
    same_dtype({"query": q, "key": k, "value": v})
    for name, a in (("query", q), ("key", k), ("value", v)):
        if a.ndim < 2:
            raise ValueError(f"{name}: expected an array of at least 2 dims (..., len, features), "
                             f"got shape {shape_str(a.shape)}")
    lead = q.shape[:-2]
    if k.shape[:-2] != lead or v.shape[:-2] != lead:
        raise ValueError(f"key, value: expected leading dims {shape_str(lead)} (query's), got key "
                         f"{shape_str(k.shape)} and value {shape_str(v.shape)}")
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(f"key: expected last dim {q.shape[-1]} (query's head size), got shape {shape_str(k.shape)}")
    if v.shape[-2] != k.shape[-2]:
        raise ValueError(f"value: expected {k.shape[-2]} rows (key's source length), got shape {shape_str(v.shape)}")
    return q, k, v


def _check_mask(attn_mask, q, target: tuple):
    """attn_mask as bool or q's float dtype, broadcastable to ``target`` (..., L, S)."""
    if attn_mask is None:
        return None
    m = attn_mask if isinstance(attn_mask, np.ndarray) else np.asarray(attn_mask)
    if m.dtype != np.bool_:
        if m.dtype.kind != "f":
            raise TypeError(f"attn_mask: expected a bool or {q.dtype} array, got dtype {m.dtype}")
        if m.dtype != q.dtype:
            raise TypeError(f"attn_mask: expected dtype bool or {q.dtype} (query's), got {m.dtype}")
    ok = m.ndim <= len(target) and all(a in (1, b) for a, b in zip(m.shape[::-1], target[::-1]))
    if not ok:
        raise ValueError(f"attn_mask: expected a shape broadcastable to {shape_str(target)} (..., L, S), "
                         f"got {shape_str(m.shape)}")
    return m


def _check_options(is_causal, attn_mask, scale, dropout_p, seed):
    if is_causal and attn_mask is not None:
        raise ValueError("attn_mask: expected None when is_causal=True (pass one or the other)")
    if scale is not None:
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
            raise TypeError(f"scale: expected a float or None, got {type(scale).__name__}")
        scale = float(scale)
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, numbers.Real):
        raise TypeError(f"dropout_p: expected a float in [0, 1], got {type(dropout_p).__name__}")
    dropout_p = float(dropout_p)
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"dropout_p: expected a probability in [0, 1], got {dropout_p}")
    if dropout_p > 0.0:
        if seed is None:
            raise TypeError("seed: expected an int when dropout_p > 0, got None")
        try:
            seed = operator.index(seed) % (1 << 64)
        except TypeError:
            raise TypeError(f"seed: expected an int, got {type(seed).__name__}") from None
    else:
        seed = 0
    return scale, dropout_p, seed


def _native_mask(mask, dtype, lead: tuple, L: int, S: int):
    """(flat additive mask, per-(flattened lead) element offsets, row stride, column stride)."""
    if mask is None:
        return None, None, 0, 0
    if mask.dtype == np.bool_:
        add = np.where(mask, dtype.type(0), dtype.type(-np.inf))
    else:
        add = c_order(mask)
    view = np.broadcast_to(add, lead + (L, S))
    item = add.itemsize
    strides = [s // item for s in view.strides]
    if lead:
        idx = np.indices(lead, dtype=np.int64).reshape(len(lead), -1)
        offsets = (idx * np.array(strides[:-2], np.int64)[:, None]).sum(axis=0)
    else:
        offsets = np.zeros(1, np.int64)
    return add.reshape(-1), np.ascontiguousarray(offsets, np.int64), strides[-2], strides[-1]


def sdpa_forward(q, k, v, attn_mask=None, is_causal=False, scale=None, dropout_p=0.0, *, seed=None,
                 needs_grad=True, merge_heads=False):
    """softmax(scale q k^T + mask) v over the last two dims; returns (out (..., L, Ev), workspace or None).

    With ``merge_heads`` (q, k, v of 4 dims (B, H, len, features)) out comes with the heads merged,
    (B, L, H Ev), as multi-head attention feeds it to its output projection. 4-D q, k, v are read
    in place with their strides (views of a packed (B, L, 3, H, E) projection need no copy), with
    or without autograd, and the merged out is written directly; the workspace references them
    (do not modify them before the backward).

    q (..., L, E), k (..., S, E), v (..., S, Ev) with equal leading dims; attn_mask broadcastable
    to (..., L, S): bool (True = may attend) or q's float dtype (added to the scores); is_causal
    lets query i attend keys j <= i (top-left aligned, as PyTorch); scale defaults to 1/sqrt(E);
    dropout on the probabilities uses the counter-based mask of ``dropout_forward`` keyed by
    (seed, n*L*S + i*S + j) with n the flattened leading index."""
    q, k, v = _check_inputs(q, k, v)
    lead, (L, E), S, Ev = q.shape[:-2], q.shape[-2:], k.shape[-2], v.shape[-1]
    merge_heads = bool(merge_heads)
    if merge_heads and q.ndim != 4:
        raise ValueError(f"merge_heads: expected 4-D query, key and value (B, H, len, features), got query "
                         f"{shape_str(q.shape)}")
    mask = _check_mask(attn_mask, q, lead + (L, S))
    scale, dropout_p, seed = _check_options(bool(is_causal), mask, scale, dropout_p, seed)
    N = math.prod(lead)
    if use_reference() or 0 in (N, L, S, E, Ev):
        out, ws = reference.sdpa_forward(q, k, v, mask, bool(is_causal), scale, dropout_p, seed=seed,
                                         needs_grad=needs_grad, merge_heads=merge_heads)
        if ws is not None:
            ws["backend"] = "numpy"
        return out, ws
    sc = 1.0 / math.sqrt(E) if scale is None else scale
    mflat, moff, msl, mss = _native_mask(mask, q.dtype, lead, L, S)
    if q.ndim == 4:  # read in place (views of a projection), out merged if asked
        q4, k4, v4 = (a if _rows_in_place(a) else np.ascontiguousarray(a) for a in (q, k, v))
        out, stats = _core.sdpa_forward(q4, k4, v4, mflat, moff, msl, mss, bool(is_causal), sc, dropout_p, seed,
                                        merge_heads)
        out4 = _unmerged(out, q.shape[:3] + (Ev,)) if merge_heads else out.reshape(lead + (L, Ev))
        if not needs_grad:
            return (out if merge_heads else out4), None
        ws = {"op": "sdpa", "backend": "native", "q": q, "k": k, "v": v, "mask": mask, "stats": stats, "out": out4,
              "native": (q4, k4, v4, out4, mflat, moff, msl, mss), "is_causal": bool(is_causal), "scale": sc,
              "dropout_p": dropout_p, "seed": seed, "merge_heads": merge_heads}
        return (out if merge_heads else out4), ws
    q3, k3, v3 = (c_order(a).reshape(N, a.shape[-2], a.shape[-1]) for a in (q, k, v))
    out3, stats = _core.sdpa_forward(q3, k3, v3, mflat, moff, msl, mss, bool(is_causal), sc, dropout_p, seed)
    out = out3.reshape(lead + (L, Ev))
    result = _merged(out) if merge_heads else out
    if not needs_grad:
        return result, None
    ws = {"op": "sdpa", "backend": "native", "q": q, "k": k, "v": v, "mask": mask, "stats": stats, "out": out,
          "native": (q3, k3, v3, out3, mflat, moff, msl, mss), "is_causal": bool(is_causal), "scale": sc,
          "dropout_p": dropout_p, "seed": seed, "merge_heads": merge_heads}
    return result, ws


def _merged_shape(shape: tuple) -> tuple:
    B, H, L, Ev = shape
    return (B, L, H * Ev)


def _rows_in_place(a: np.ndarray) -> bool:
    """Whether the kernel can read ``a`` (B, H, len, features) in place: non-negative strides,
    contiguous rows."""
    return all(st >= 0 for st in a.strides) and (a.shape[-1] <= 1 or a.strides[-1] == a.itemsize)


def _check_into(into, workspace, dy):
    """``into`` as a tuple of three writable arrays shaped and typed like q, k and v, sharing no
    memory with each other or with what the backward reads."""
    q, k, v = workspace["q"], workspace["k"], workspace["v"]
    if not isinstance(into, (tuple, list)) or len(into) != 3:
        raise TypeError(f"into: expected a tuple (dq, dk, dv) of arrays, got {type(into).__name__}")
    names = ("dq", "dk", "dv")
    for name, a, like in zip(names, into, (q, k, v)):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"into: expected {name} as a NumPy array, got {type(a).__name__}")
        if a.shape != like.shape or a.dtype != like.dtype:
            raise ValueError(f"into: expected {name} of shape {shape_str(like.shape)} and dtype {like.dtype}, got "
                             f"{shape_str(a.shape)} {a.dtype}")
        if not a.flags.writeable:
            raise ValueError(f"into: expected {name} writable, got a read-only array")
    read = (q, k, v, dy, workspace["out"])
    for i, a in enumerate(into):
        for b in tuple(into[i + 1:]) + read:
            if _overlaps(a, b):
                raise ValueError(f"into: {names[i]} shares memory with another gradient or with an input of the "
                                 f"backward")
    return tuple(into)


def _overlaps(a: np.ndarray, b: np.ndarray) -> bool:
    try:
        return bool(np.shares_memory(a, b, max_work=100_000))
    except np.exceptions.TooHardError:  # undecided: treat as overlapping
        return True


def sdpa_backward(grad_output, workspace, *, into=None):
    """grad_output (..., L, Ev) -> (dq, dk, dv, None); probabilities recomputed per tile.

    ``into`` = (dq, dk, dv): arrays shaped like q, k and v to write the gradients into (returned);
    views of one packed (B, S, 3, H, E) array give multi-head attention the gradient of its packed
    projection directly. For 4-D q, k, v the native backward reads q, k, v and a merged
    grad_output in place and writes ``into`` in place."""
    if not isinstance(workspace, dict) or workspace.get("op") != "sdpa":
        raise ValueError(f"workspace: expected the workspace returned by sdpa_forward(..., needs_grad=True), "
                         f"got {type(workspace).__name__}")
    out = workspace["out"]
    merged = workspace.get("merge_heads", False)
    dy = check_grad_output(grad_output, _merged_shape(out.shape) if merged else out.shape, out.dtype)
    if into is not None:
        into = _check_into(into, workspace, dy)
    if workspace["backend"] == "numpy":
        return reference.sdpa_backward(dy, workspace, into=into)
    q, k, v = workspace["q"], workspace["k"], workspace["v"]
    q_, k_, v_, out_, mflat, moff, msl, mss = workspace["native"]
    args = (workspace["stats"], mflat, moff, msl, mss, workspace["is_causal"], workspace["scale"],
            workspace["dropout_p"], workspace["seed"])
    if q_.ndim == 4:  # in place, into the given arrays or new contiguous ones
        dout = _unmerged(c_order(dy), out.shape) if merged else dy
        if not _rows_in_place(dout):
            dout = np.ascontiguousarray(dout)
        if into is None:
            into = tuple(_core.empty(a.shape, a.dtype) for a in (q, k, v))
        targets = tuple(a if _rows_in_place(a) else _core.empty(a.shape, a.dtype) for a in into)
        _core.sdpa_backward(dout, q_, k_, v_, out_, *args, targets)
        for a, t in zip(into, targets):
            if a is not t:
                np.copyto(a, t)
        return into + (None,)
    if merged:
        dy = _unmerged(dy, out.shape)
    dq, dk, dv = _core.sdpa_backward(c_order(dy).reshape(out_.shape), q_, k_, v_, out_, *args)
    grads = dq.reshape(q.shape), dk.reshape(k.shape), dv.reshape(v.shape)
    if into is None:
        return grads + (None,)
    for a, g in zip(into, grads):
        np.copyto(a, g)
    return into + (None,)


# ------------------------------------------------------------------------ additive scores


def additive_scores_forward(qp, kp, w, *, needs_grad=True):
    """Bahdanau scores, fused: scores[b,i,j] = sum_h w_h tanh(qp[b,i,h] + kp[b,j,h]).

    qp (B, Lq, H) (projected queries), kp (B, S, H) (projected keys), w (H,). Returns
    ((B, Lq, S) scores, workspace or None); the (B, Lq, S, H) activations are never stored (the
    native backward recomputes them). The workspace keeps qp, kp and w."""
    qp, kp, w = float_array(qp, "qp"), float_array(kp, "kp"), float_array(w, "w")
    same_dtype({"qp": qp, "kp": kp, "w": w})
    if qp.ndim != 3:
        raise ValueError(f"qp: expected a 3-D array (B, Lq, H), got shape {shape_str(qp.shape)}")
    B, _, H = qp.shape
    if kp.ndim != 3 or kp.shape[0] != B or kp.shape[2] != H:
        raise ValueError(f"kp: expected shape ({B}, S, {H}), got {shape_str(kp.shape)}")
    if w.shape != (H,):
        raise ValueError(f"w: expected shape ({H},), got {shape_str(w.shape)}")
    if use_reference():
        return reference.additive_scores_forward(qp, kp, w, needs_grad=needs_grad)
    qp, kp, w = c_order(qp), c_order(kp), c_order(w)
    scores = _core.additive_scores_forward(qp, kp, w)
    ws = {"op": "additive_scores", "backend": "native", "qp": qp, "kp": kp, "w": w, "scores": scores}
    return scores, (ws if needs_grad else None)


def additive_scores_backward(grad_output, workspace):
    """grad_output (B, Lq, S) -> (dqp, dkp, dw)."""
    if not isinstance(workspace, dict) or workspace.get("op") != "additive_scores":
        raise ValueError("workspace: expected the workspace returned by additive_scores_forward(..., "
                         f"needs_grad=True), got {type(workspace).__name__}")
    s = workspace["scores"]
    ds = check_grad_output(grad_output, s.shape, s.dtype)
    if workspace["backend"] == "numpy":
        return reference.additive_scores_backward(ds, workspace)
    dqp, dkp, dw_partial = _core.additive_scores_backward(c_order(ds), workspace["qp"], workspace["kp"],
                                                          workspace["w"])
    # per-batch partial sums of dw added in batch order: independent of the thread count
    dw = np.zeros(dw_partial.shape[1], dw_partial.dtype)
    for row in dw_partial:
        dw += row
    return dqp, dkp, dw
