"""Attention: ``F.scaled_dot_product_attention`` (one ``Function`` over ``ops.sdpa_forward`` /
``ops.sdpa_backward``) and ``nn.MultiheadAttention`` with ``torch.nn``'s constructor, forward,
parameter names and initialisation.

Difference from PyTorch (docs/ops.md): a query row that may attend no key at all gives zeros
(and zero gradients) instead of NaN, in both SDPA and MultiheadAttention's output. The attention
weights MultiheadAttention returns on request are a plain softmax (NaN on such rows, as PyTorch).
"""

from __future__ import annotations

import math

import numpy as np

from .. import _core, ops
from .._backend import backend as _use_backend
from .._backend import get_backend
from .._random import next_seed
from ..autograd import Function, Tensor, _to_numpy, cat, is_grad_enabled
from . import functional as F
from . import init
from .functional import _OpsPair, _tensor
from .layers import Linear, _float_dtype
from .module import Module, Parameter

__all__ = ["MultiheadAttention", "scaled_dot_product_attention"]


class _SDPA(_OpsPair):
    @staticmethod
    def forward(ctx, q, k, v, attn_mask, is_causal, scale, dropout_p, seed):
        out, ws = ops.sdpa_forward(q, k, v, attn_mask, is_causal, scale, dropout_p, seed=seed,
                                   needs_grad=ctx.needs_grad)
        _OpsPair._keep(ctx, "sdpa", ws, 8)
        return out


def _mask_array(mask):
    if mask is None:
        return None
    return _to_numpy(mask)


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale=None, enable_gqa: bool = False) -> Tensor:
    """softmax(query @ key^T * scale + mask) @ value, as ``torch.nn.functional.
    scaled_dot_product_attention``: query (..., L, E), key (..., S, E), value (..., S, Ev);
    ``attn_mask`` broadcastable to (..., L, S), boolean (True = may attend) or float (added);
    ``is_causal`` masks keys j > i (not together with ``attn_mask``); ``scale`` defaults to
    1/sqrt(E). Dropout (``dropout_p`` > 0) draws a seed from the global generator. The mask gets
    no gradient. A row with no visible key gives zeros (PyTorch: NaN)."""
    if enable_gqa:
        raise NotImplementedError("scaled_dot_product_attention: enable_gqa is not supported")
    seed = next_seed() if dropout_p > 0 else None
    return _SDPA.apply(query, key, value, _mask_array(attn_mask), bool(is_causal), scale, dropout_p, seed)


# --------------------------------------------------------------------------- MultiheadAttention


def _copy(dst: np.ndarray, src: np.ndarray) -> None:
    """dst[...] = src; the row copies of a head split/merge natively (NumPy's strided copy of a
    transposed view is several times slower), any other layout by NumPy."""
    if dst.dtype == src.dtype and dst.dtype.kind == "f" and dst.ndim <= 4 and dst.strides[-1] == dst.itemsize \
            and src.strides[-1] == src.itemsize:
        _core.strided_copy(dst, src)
    else:
        np.copyto(dst, src)


class _SplitHeads(Function):
    """(B, L, n H D) -> n C-contiguous (B, H, L, D) arrays (the packed q/k/v of a projection);
    backward joins the n gradients back into (B, L, n H D). One copy each way, into blocks of the
    output cache (``_core.empty``: no fresh pages per call)."""

    @staticmethod
    def forward(ctx, x, n, heads):
        B, L, width = x.shape
        D = width // (n * heads)
        ctx.shape = x.shape
        y = _core.empty((n, B, heads, L, D), x.dtype)
        parts = x.reshape(B, L, n, heads, D)
        for i in range(n):
            _copy(y[i], parts[:, :, i].transpose(0, 2, 1, 3))
        return tuple(y[i] for i in range(n)) if n > 1 else y[0]

    @staticmethod
    def backward(ctx, *grads):
        B, L, width = ctx.shape
        _, heads, _, D = grads[0].shape
        g = _core.empty((B, L, len(grads), heads, D), grads[0].dtype)
        for i, d in enumerate(grads):
            _copy(g[:, :, i], d.transpose(0, 2, 1, 3))
        return g.reshape(ctx.shape), None, None


class _MergeHeads(Function):
    """(B, H, L, D) -> (B, L, H D), the inverse layout change (one copy each way, as above)."""

    @staticmethod
    def forward(ctx, x):
        B, H, L, D = x.shape
        ctx.saved_heads = H
        y = _core.empty((B, L, H, D), x.dtype)
        _copy(y, x.transpose(0, 2, 1, 3))
        return y.reshape(B, L, H * D)

    @staticmethod
    def backward(ctx, g):
        B, L, E = g.shape
        H = ctx.saved_heads
        dx = _core.empty((B, H, L, E // H), g.dtype)
        _copy(dx, g.reshape(B, L, H, E // H).transpose(0, 2, 1, 3))
        return dx


class _PackedHeadsAttention(Function):
    """Multi-head attention between projections, with no copy of the heads in either direction:
    q, k and v are (B, H, len, D) views of column blocks of the projections (B, len, n E), read
    in place by the kernel; the output comes with the heads merged, (B, L, H D); the backward
    writes dq, dk and dv straight into the projections' gradients (``ops.sdpa_backward(into=)``).

    ``blocks``: for q, k and v, (index into ``sources``, block b) -> columns [b E, (b + 1) E).
    Every block of every source is used exactly once, so the gradients are written whole."""

    @staticmethod
    def forward(ctx, mask, causal, dropout_p, seed, heads, embed, blocks, *sources):
        views = tuple(_heads_view(sources[i], b, heads, embed) for i, b in blocks)
        out, ws = ops.sdpa_forward(*views, mask, causal, None, dropout_p, seed=seed, needs_grad=ctx.needs_grad,
                                   merge_heads=True)
        if ctx.needs_grad:
            ctx.ws, ctx.blocks, ctx.heads, ctx.embed, ctx.backend = ws, blocks, heads, embed, get_backend()
            ctx.sources = tuple((s.shape, s.dtype) for s in sources)
        return out

    @staticmethod
    def backward(ctx, g):
        grads = tuple(_core.empty(shape, dtype) for shape, dtype in ctx.sources)
        into = tuple(_heads_view(grads[i], b, ctx.heads, ctx.embed) for i, b in ctx.blocks)
        with _use_backend(ctx.backend):  # the workspace belongs to the backend that made it
            ops.sdpa_backward(g, ctx.ws, into=into)
        return (None,) * 7 + grads


def _heads_view(proj: np.ndarray, block: int, heads: int, embed: int) -> np.ndarray:
    """Columns [block E, (block + 1) E) of a (B, len, n E) projection as (B, H, len, D) heads."""
    B, L, width = proj.shape
    return proj.reshape(B, L, width // embed, heads, embed // heads)[:, :, block].transpose(0, 2, 1, 3)


def packed_attention(sources, blocks, heads: int, embed: int, mask, causal: bool, dropout_p: float) -> Tensor:
    """The merged (B, L, H D) attention output of q, k, v = the column ``blocks`` of the projections
    ``sources`` (see ``_PackedHeadsAttention``); dropout draws a seed from the global generator."""
    for i, src in enumerate(sources):
        used = sorted(b for j, b in blocks if j == i)
        if src.ndim != 3 or used != list(range(len(used))) or src.shape[-1] != len(used) * embed:
            raise ValueError(f"sources: expected source {i} of shape (B, len, {len(used)} x {embed}) with each "
                             f"block used once, got shape {src.shape} and blocks {used}")
    seed = next_seed() if dropout_p > 0 else None
    return _PackedHeadsAttention.apply(mask, bool(causal), dropout_p, seed, heads, embed, tuple(blocks), *sources)


def _merge_heads(x: Tensor) -> Tensor:
    """(B, H, L, D) -> (B, L, H D)."""
    return _MergeHeads.apply(x)


def _split_heads(proj: Tensor, n: int, heads: int):
    """The n (B, H, L, D) heads of a packed (B, L, n H D) projection. Recorded by autograd as one
    copy each way; without autograd, views of the projection that the attention kernel reads in
    place (no copy)."""
    if is_grad_enabled():
        return _SplitHeads.apply(proj, n, heads)
    B, L, width = proj.shape
    parts = proj.data.reshape(B, L, n, heads, width // (n * heads))
    views = tuple(Tensor(parts[:, :, i].transpose(0, 2, 1, 3)) for i in range(n))
    return views if n > 1 else views[0]



def _float_mask(mask, name: str, dtype, shapes: tuple) -> np.ndarray | None:
    """A bool (True = masked out) or float mask of one of ``shapes`` as an additive float array."""
    if mask is None:
        return None
    m = _to_numpy(mask)
    if m.shape not in shapes:
        want = " or ".join(str(s) for s in shapes)
        raise ValueError(f"{name}: expected shape {want}, got {m.shape}")
    if m.dtype == np.bool_:
        return np.where(m, dtype.type(-np.inf), dtype.type(0))
    if m.dtype.kind != "f":
        raise TypeError(f"{name}: expected a bool or float array, got dtype {m.dtype}")
    return m.astype(dtype, copy=False)


def _heads_mask(am, kpm, B: int, H: int, L: int, S: int):
    """The additive (L, S) or (B H, L, S) attention mask and (B, S) key padding mask as one mask
    broadcastable to (B, H, L, S), or None."""
    mask = None
    if am is not None:
        mask = am.reshape(1, 1, L, S) if am.ndim == 2 else am.reshape(B, H, L, S)
    if kpm is not None:
        kp = kpm.reshape(B, 1, 1, S)
        mask = kp if mask is None else mask + kp
    return mask


class MultiheadAttention(Module):
    """``torch.nn.MultiheadAttention``: in-projection (packed ``in_proj_weight`` (3E, E) when
    kdim == vdim == embed_dim, else ``q_proj_weight``/``k_proj_weight``/``v_proj_weight``),
    ``num_heads`` heads of scaled dot-product attention, ``out_proj``. Inputs (L, B, E) or with
    ``batch_first`` (B, L, E), or unbatched (L, E). Masks as PyTorch: boolean True = *not* allowed,
    float = added. Returns ``(output, weights or None)``."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim=None, vdim=None,
                 batch_first: bool = False, device=None, dtype=None) -> None:
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(f"embed_dim and num_heads must be greater than 0, got embed_dim={embed_dim} "
                             f"and num_heads={num_heads} instead")
        self.embed_dim = int(embed_dim)
        self.kdim = int(kdim) if kdim is not None else self.embed_dim
        self.vdim = int(vdim) if vdim is not None else self.embed_dim
        self._qkv_same_embed_dim = self.kdim == self.embed_dim and self.vdim == self.embed_dim
        self.num_heads = int(num_heads)
        self.dropout = float(dropout)
        self.batch_first = bool(batch_first)
        self.head_dim = self.embed_dim // self.num_heads
        if self.head_dim * self.num_heads != self.embed_dim:
            raise ValueError(f"embed_dim: must be divisible by num_heads ({num_heads}), got {embed_dim}")
        dt = _float_dtype(dtype)
        E = self.embed_dim
        if not self._qkv_same_embed_dim:
            self.q_proj_weight = Parameter(np.empty((E, E), dt))
            self.k_proj_weight = Parameter(np.empty((E, self.kdim), dt))
            self.v_proj_weight = Parameter(np.empty((E, self.vdim), dt))
            self.register_parameter("in_proj_weight", None)
        else:
            self.in_proj_weight = Parameter(np.empty((3 * E, E), dt))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        if bias:
            self.in_proj_bias = Parameter(np.empty((3 * E,), dt))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(E, E, bias=bias, dtype=dt)
        if add_bias_kv:
            self.bias_k = Parameter(np.empty((1, 1, E), dt))
            self.bias_v = Parameter(np.empty((1, 1, E), dt))
        else:
            self.bias_k = self.bias_v = None
        self.add_zero_attn = bool(add_zero_attn)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            init.xavier_uniform_(self.q_proj_weight)
            init.xavier_uniform_(self.k_proj_weight)
            init.xavier_uniform_(self.v_proj_weight)
        if self.in_proj_bias is not None:
            init.constant_(self.in_proj_bias, 0.0)
            init.constant_(self.out_proj.bias, 0.0)
        if self.bias_k is not None:
            init.xavier_normal_(self.bias_k)
        if self.bias_v is not None:
            init.xavier_normal_(self.bias_v)

    def _projections(self, query, key, value, same: bool):
        E = self.embed_dim
        if same and self._qkv_same_embed_dim:
            # self-attention: one (B, L, 3E) product with the packed weight, as PyTorch
            return F.linear(query, self.in_proj_weight, self.in_proj_bias), None, None
        b = self.in_proj_bias
        bq = bk = bv = None
        if b is not None:
            bq, bk, bv = b[0:E], b[E:2 * E], b[2 * E:3 * E]
        if self._qkv_same_embed_dim:
            w = self.in_proj_weight
            wq, wk, wv = w[0:E], w[E:2 * E], w[2 * E:3 * E]
        else:
            wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        return F.linear(query, wq, bq), F.linear(key, wk, bk), F.linear(value, wv, bv)

    def forward(self, query, key, value, key_padding_mask=None, need_weights: bool = True, attn_mask=None,
                average_attn_weights: bool = True, is_causal: bool = False):
        same = query is key and key is value  # self-attention: one packed in-projection
        query, key, value = _tensor(query), _tensor(key), _tensor(value)
        if same:
            key = value = query
        if query.ndim not in (2, 3):
            raise ValueError(f"query: expected a 2-D (unbatched) or 3-D array, got shape {query.shape}")
        batched = query.ndim == 3
        if key.ndim != query.ndim or value.ndim != query.ndim:
            raise ValueError(f"key, value: expected {query.ndim}-D arrays like query, got shapes {key.shape} and "
                             f"{value.shape}")
        if is_causal and attn_mask is None:
            raise RuntimeError("Need attn_mask if specifying the is_causal hint. You may use the Transformer "
                               "module method `generate_square_subsequent_mask` to create this mask.")
        if not batched:
            query = query.unsqueeze(0)
            key, value = (query, query) if same else (key.unsqueeze(0), value.unsqueeze(0))
            if key_padding_mask is not None:
                key_padding_mask = _to_numpy(key_padding_mask)[None]
        elif not self.batch_first:
            query = query.transpose(0, 1)
            key, value = (query, query) if same else (key.transpose(0, 1), value.transpose(0, 1))
        B, L, E = query.shape
        S = key.shape[1]
        H, D = self.num_heads, self.head_dim
        if E != self.embed_dim:
            raise ValueError(f"query: expected embed_dim {self.embed_dim} as last dim, got shape {query.shape}")
        if key.shape[:2] != value.shape[:2] or key.shape[0] != B:
            raise ValueError(f"key, value: expected matching batch and source length, got {key.shape} and "
                             f"{value.shape}")
        if key.shape[2] != self.kdim or value.shape[2] != self.vdim:
            raise ValueError(f"key, value: expected feature dims kdim={self.kdim}, vdim={self.vdim}, got "
                             f"{key.shape[2]} and {value.shape[2]}")
        dt = query.dtype
        am = _float_mask(attn_mask, "attn_mask", dt, ((L, S), (B * H, L, S)))
        kpm = _float_mask(key_padding_mask, "key_padding_mask", dt, ((B, S),))
        q, k, v = self._projections(query, key, value, same)
        packed = k is None  # self-attention: q is the (B, L, 3E) packed projection
        if packed and (self.bias_k is not None or self.add_zero_attn):
            q, k, v = q[..., 0:E], q[..., E:2 * E], q[..., 2 * E:3 * E]
            packed = False
        if self.bias_k is not None:
            zeros = np.zeros((B, 1, E), dt)
            k = cat([k, self.bias_k + zeros], 1)
            v = cat([v, self.bias_v + zeros], 1)
            am = None if am is None else np.pad(am, [(0, 0)] * (am.ndim - 1) + [(0, 1)])
            kpm = None if kpm is None else np.pad(kpm, [(0, 0), (0, 1)])
        p = self.dropout if self.training else 0.0
        if is_grad_enabled() and not need_weights and not self.add_zero_attn:
            # training: heads read in place from the projections, gradients written in place
            mask = _heads_mask(am, kpm, B, H, L, k.shape[1] if k is not None else L)
            sources, blocks = ((q,), ((0, 0), (0, 1), (0, 2))) if packed else ((q, k, v), ((0, 0), (1, 0), (2, 0)))
            return self._finish(packed_attention(sources, blocks, H, E, mask, False, p), None, batched)
        if packed:
            q, k, v = _split_heads(q, 3, H)
        else:
            q, k, v = (_split_heads(t, 1, H) for t in (q, k, v))
        if self.add_zero_attn:
            z = np.zeros((B, H, 1, D), dt)
            k = cat([k, z], 2)
            v = cat([v, z], 2)
            am = None if am is None else np.pad(am, [(0, 0)] * (am.ndim - 1) + [(0, 1)])
            kpm = None if kpm is None else np.pad(kpm, [(0, 0), (0, 1)])
        mask = _heads_mask(am, kpm, B, H, L, k.shape[2])
        seed = next_seed() if p > 0 else None
        # The output always comes from the fused op (zeros on rows with no visible key); the
        # weights, when asked for, from an explicit softmax with the same dropout mask (the
        # dropout index of (b, h, i, j) is the C-order index of the (B, H, L, S) weights).
        if not is_grad_enabled() and not need_weights:  # heads read in place, output written merged
            merged, _ = ops.sdpa_forward(q.data, k.data, v.data, mask, False, None, p, seed=seed, needs_grad=False,
                                         merge_heads=True)
            return self._finish(Tensor(merged), None, batched)
        out = _SDPA.apply(q, k, v, mask, False, None, p, seed)
        weights = None
        if need_weights:
            scores = (q * dt.type(1.0 / math.sqrt(D))) @ k.transpose(-2, -1)
            if mask is not None:
                scores = scores + mask
            w = F.softmax(scores, dim=-1)
            if p > 0:
                w = F._Dropout.apply(w, p, seed)
            weights = w.mean(1) if average_attn_weights else w
        return self._finish(_merge_heads(out), weights, batched)

    def _finish(self, merged: Tensor, weights, batched: bool):
        """The output projection of the merged heads (B, L, E), in the caller's layout."""
        out = self.out_proj(merged)
        if not batched:
            out = out.squeeze(0)
            weights = None if weights is None else weights.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights

    def extra_repr(self) -> str:
        return ""
