"""Encoder-decoder (seq2seq) attentions: ``AdditiveAttention`` (Bahdanau), ``DotAttention`` and
``GeneralAttention`` (Luong), ``CosineAttention``.

Each module takes queries (B, Lq, Dq), keys (B, S, Dk), values (B, S, Dv) and optionally either a
``key_padding_mask`` (B, S) (bool, True = padding, PyTorch's convention) or ``lengths`` (B,)
(key j of batch b is visible iff j < lengths[b]), and returns ``(context (B, Lq, Dv),
weights (B, Lq, S))``; a query with no visible key gets zero weights and a zero context.

    dot:      score_ij = q_i . k_j
    general:  score_ij = q_i . (W k_j)            W = ``weight`` (Dq, Dk)
    cosine:   score_ij = cos(q_i, k_j) / temperature   (``temperature`` learnable, init 1/10)
    additive: score_ij = v . tanh(W_q q_i + W_k k_j)   (``query_proj``, ``key_proj``, ``v``)
    weights = softmax_j(score) over visible keys,  context_i = sum_j weights_ij value_j

The products run on the native GEMM (``ops.matmul``), the masked softmax + context product is
one fused ``Function`` (forward and backward), and the additive scores are one fused native pair
(``ops.additive_scores_forward``/``_backward``) that never stores the (B, Lq, S, H) activations.
"""

from __future__ import annotations

import math

import numpy as np

from .. import ops
from ..autograd import Function, _to_numpy
from . import functional as F
from . import init
from .functional import _tensor
from .layers import Linear, _float_dtype
from .module import Module, Parameter

__all__ = ["AdditiveAttention", "CosineAttention", "DotAttention", "GeneralAttention"]


def _swap(a: np.ndarray) -> np.ndarray:
    return np.swapaxes(a, -1, -2)


class _MatMulNT(Function):
    """a (B, M, K) @ b (B, N, K)^T on the native GEMM."""

    @staticmethod
    def forward(ctx, a, b):
        if ctx.needs_grad:
            ctx.save_for_backward(a, b)
        return ops.matmul(a, _swap(b))

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return ops.matmul(g, b), ops.matmul(_swap(g), a)


class _AdditiveScores(Function):
    @staticmethod
    def forward(ctx, qp, kp, w):
        scores, ws = ops.additive_scores_forward(qp, kp, w, needs_grad=ctx.needs_grad)
        ctx.ws = ws
        return scores

    @staticmethod
    def backward(ctx, g):
        return ops.additive_scores_backward(g, ctx.ws)


class _SoftmaxContext(Function):
    """(scores (B, Lq, S), values (B, S, Dv), visible (B, S) bool or None) -> (context, weights).

    w = softmax over visible keys (0 on rows with none), context = w @ values. Backward, with
    dw = dcontext @ values^T + dweights: dscores = w * (dw - sum_j dw w), dvalues = w^T @ dcontext."""

    @staticmethod
    def forward(ctx, scores, values, visible):
        s = scores if visible is None else np.where(visible[:, None, :], scores, -np.inf)
        m = s.max(axis=-1, keepdims=True, initial=-np.inf)
        ok = np.isfinite(m)
        with np.errstate(invalid="ignore"):
            e = np.exp(s - np.where(ok, m, 0))
        total = e.sum(axis=-1, keepdims=True)
        w = np.where(total > 0, e / np.where(total > 0, total, 1), 0).astype(scores.dtype, copy=False)
        context = ops.matmul(w, values)
        if ctx.needs_grad:
            ctx.save_for_backward(w, values)
        return context, w

    @staticmethod
    def backward(ctx, dcontext, dweights):
        w, values = ctx.saved_tensors
        dw = ops.matmul(dcontext, _swap(values)) + dweights
        ds = w * (dw - np.sum(dw * w, axis=-1, keepdims=True))
        return ds, ops.matmul(_swap(w), dcontext), None


def _visible(key_padding_mask, lengths, B: int, S: int):
    if key_padding_mask is not None and lengths is not None:
        raise ValueError("key_padding_mask, lengths: expected at most one of them")
    if key_padding_mask is not None:
        m = _to_numpy(key_padding_mask)
        if m.dtype != np.bool_:
            raise TypeError(f"key_padding_mask: expected a bool array (True = padding), got dtype {m.dtype}")
        if m.shape != (B, S):
            raise ValueError(f"key_padding_mask: expected shape ({B}, {S}), got {m.shape}")
        return ~m
    if lengths is not None:
        n = _to_numpy(lengths)
        if n.dtype.kind not in "iu":
            raise TypeError(f"lengths: expected an integer array, got dtype {n.dtype}")
        if n.shape != (B,):
            raise ValueError(f"lengths: expected shape ({B},), got {n.shape}")
        if (n < 0).any() or (n > S).any():
            raise ValueError(f"lengths: expected values in [0, {S}], got {n.tolist()}")
        return np.arange(S)[None, :] < n[:, None]
    return None


def _check_qkv(query, key, value, dq=None, dk=None):
    query, key, value = _tensor(query), _tensor(key), _tensor(value)
    for name, t in (("queries", query), ("keys", key), ("values", value)):
        if t.ndim != 3:
            raise ValueError(f"{name}: expected a 3-D array (B, len, dim), got shape {t.shape}")
    B, S = key.shape[0], key.shape[1]
    if query.shape[0] != B or value.shape[:2] != (B, S):
        raise ValueError(f"queries, keys, values: expected (B, Lq, Dq), (B, S, Dk), (B, S, Dv), got {query.shape}, "
                         f"{key.shape}, {value.shape}")
    if dq is not None and query.shape[2] != dq:
        raise ValueError(f"queries: expected last dim {dq}, got shape {query.shape}")
    if dk is not None and key.shape[2] != dk:
        raise ValueError(f"keys: expected last dim {dk}, got shape {key.shape}")
    return query, key, value


class _Seq2SeqAttention(Module):
    def _scores(self, query, key):
        raise NotImplementedError

    def forward(self, queries, keys, values, key_padding_mask=None, lengths=None):
        q, k, v = _check_qkv(queries, keys, values, getattr(self, "query_dim", None), getattr(self, "key_dim", None))
        visible = _visible(key_padding_mask, lengths, k.shape[0], k.shape[1])
        return _SoftmaxContext.apply(self._scores(q, k), v, visible)


class DotAttention(_Seq2SeqAttention):
    """Luong dot: score = q . k (Dq == Dk); ``scale`` (default 1) multiplies the scores."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = float(scale)

    def _scores(self, q, k):
        if q.shape[2] != k.shape[2]:
            raise ValueError(f"keys: expected last dim {q.shape[2]} (the queries'), got shape {k.shape}")
        s = _MatMulNT.apply(q, k)
        return s if self.scale == 1.0 else s * self.scale


class GeneralAttention(_Seq2SeqAttention):
    """Luong general: score = q . (W k), ``weight`` (query_dim, key_dim) ~ U(+-1/sqrt(key_dim))."""

    def __init__(self, query_dim: int, key_dim: int, dtype=None) -> None:
        super().__init__()
        self.query_dim, self.key_dim = int(query_dim), int(key_dim)
        self.weight = Parameter(np.empty((self.query_dim, self.key_dim), _float_dtype(dtype)))
        bound = 1 / math.sqrt(self.key_dim) if self.key_dim else 0
        init.uniform_(self.weight, -bound, bound)

    def _scores(self, q, k):
        return _MatMulNT.apply(q, F.linear(k, self.weight))


class CosineAttention(_Seq2SeqAttention):
    """score = cos(q, k) / temperature; ``temperature`` a learnable scalar (shape (1,)), init 0.1;
    norms are clamped below at ``eps``."""

    def __init__(self, temperature: float = 0.1, eps: float = 1e-8, dtype=None) -> None:
        super().__init__()
        self.eps = float(eps)
        self.temperature = Parameter(np.full((1,), temperature, _float_dtype(dtype)))

    def _normalize(self, x):
        norm = ((x * x).sum(-1, keepdim=True) + self.eps * self.eps).sqrt()
        return x / norm

    def _scores(self, q, k):
        if q.shape[2] != k.shape[2]:
            raise ValueError(f"keys: expected last dim {q.shape[2]} (the queries'), got shape {k.shape}")
        return _MatMulNT.apply(self._normalize(q), self._normalize(k)) / self.temperature


class AdditiveAttention(_Seq2SeqAttention):
    """Bahdanau: score = v . tanh(W_q q + W_k k); ``query_proj`` Linear(query_dim, hidden_dim),
    ``key_proj`` Linear(key_dim, hidden_dim, bias=False), ``v`` Linear(hidden_dim, 1, bias=False).
    The scores are one fused op (``ops.additive_scores_forward``): the (B, Lq, S, hidden_dim)
    activations are never stored."""

    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int, dtype=None) -> None:
        super().__init__()
        self.query_dim, self.key_dim, self.hidden_dim = int(query_dim), int(key_dim), int(hidden_dim)
        self.query_proj = Linear(query_dim, hidden_dim, dtype=dtype)
        self.key_proj = Linear(key_dim, hidden_dim, bias=False, dtype=dtype)
        self.v = Linear(hidden_dim, 1, bias=False, dtype=dtype)

    def _scores(self, q, k):
        return _AdditiveScores.apply(self.query_proj(q), self.key_proj(k), self.v.weight.reshape(-1))
