"""Transformer blocks with ``torch.nn``'s API: ``TransformerEncoderLayer``, ``TransformerDecoderLayer``,
``TransformerEncoder``, ``TransformerDecoder``, ``Transformer`` (constructor arguments, forward
arguments and masks, parameter names, so a torch ``state_dict`` loads unchanged), plus

- cached incremental decoding: ``TransformerDecoder.decode_step(tgt, memory, cache)`` ->
  ``(output, cache)`` with a ``KVCache`` (self-attention keys/values appended per step,
  cross-attention keys/values of ``memory`` computed once);
- attention weights of every layer and head on request (``need_weights=True``);
- ``EncoderOnlyTransformer`` (BERT-style) and ``DecoderOnlyTransformer`` (GPT-style: causal,
  pre-norm, with its own ``decode_step``), built from the same layers.

Everything is composed from ``F`` over autograd (either backend). The attention runs on
``ops.sdpa_forward`` directly with the ``MultiheadAttention`` module's parameters (one packed
Q/K/V product for self-attention, the causal kernel when the mask is causal), so it can also
take cached keys and values. Semantics and differences from PyTorch: docs/transformer.md.
"""

from __future__ import annotations

import copy
import math

import numpy as np

from .. import _core, ops
from .._backend import backend as _use_backend
from .._backend import get_backend
from .._random import next_seed
from ..autograd import Function, Tensor, _to_numpy, is_grad_enabled, no_grad
from . import functional as F
from . import init
from .attention import MultiheadAttention, _merge_heads, _split_heads, packed_attention
from .attention import _float_mask as _additive
from .container import ModuleList
from .functional import _OpsPair, _tensor
from .layers import Dropout, LayerNorm, Linear
from .module import Module

__all__ = ["DecoderOnlyTransformer", "EncoderOnlyTransformer", "KVCache", "Transformer", "TransformerDecoder",
           "TransformerDecoderLayer", "TransformerEncoder", "TransformerEncoderLayer"]


# ------------------------------------------------------------------------------ helpers


class _Attention(_OpsPair):
    """One autograd node over the ``ops.sdpa_forward``/``sdpa_backward`` pair (docs/ops.md)."""

    @staticmethod
    def forward(ctx, q, k, v, attn_mask, is_causal, dropout_p, seed):
        out, ws = ops.sdpa_forward(q, k, v, attn_mask, is_causal, None, dropout_p, seed=seed,
                                   needs_grad=ctx.needs_grad)
        _OpsPair._keep(ctx, "sdpa", ws, 7)
        return out


def _residual(x: Tensor, branch: Tensor) -> Tensor:
    """x + branch. Without autograd, ``branch`` (a fresh output of this layer that nothing else
    references) is updated in place by the native add: no new array, and all threads (NumPy's
    in-place add ran on one thread: 0.145 ms for B=8 L=128 d=512, ~0.05 ms native)."""
    b = branch.data
    if (not is_grad_enabled() and b.flags.writeable and b.flags.c_contiguous and branch.shape == x.shape
            and branch.dtype == x.dtype and b.dtype in (np.float32, np.float64) and not np.shares_memory(b, x.data)):
        ops.add_forward(b, x.data, needs_grad=False, out=b)
        return branch
    return x + branch


class _AddNorm(Function):
    """norm(x + r) as one node over ``ops.add_layer_norm_forward``/``backward``; with ``both`` it
    also returns s = x + r (the residual stream of pre-norm blocks)."""

    @staticmethod
    def forward(ctx, x, r, weight, bias, shape, eps, both):
        (y, s), ws = ops.add_layer_norm_forward(x, r, shape, weight, bias, eps, needs_grad=ctx.needs_grad)
        if ctx.needs_grad:
            ctx.ws = ws
            ctx.backend = get_backend()
        return (y, s) if both else y

    @staticmethod
    def backward(ctx, dy, ds=None):
        with _use_backend(ctx.backend):
            dx, dr, dw, db = ops.add_layer_norm_backward((dy, ds), ctx.ws)
        return dx, dr, dw, db, None, None, None


def _add_norm(norm, x: Tensor, r: Tensor, both: bool = False):
    """norm(x + r) (and x + r with ``both``), fused when ``norm`` is a LayerNorm. Without autograd
    r is a fresh output of this layer that nothing else references: norm(x + r) is written over
    it (no new array), or with ``both`` the add is done in place on r and norm runs alone.
    (In an encoder layer at B=8 L=128 d=512, 2 threads: 0.27 -> 0.13 ms per add and norm; the
    separate NumPy add ran on one thread, and the fused kernel's new outputs cost a line fetch
    per first write.)"""
    if isinstance(norm, LayerNorm) and x.shape == r.shape and x.dtype == r.dtype:
        if is_grad_enabled():
            return _AddNorm.apply(x, r, norm.weight, norm.bias, norm.normalized_shape, norm.eps, both)
        data = r.data
        if not both and data.flags.writeable and data.flags.c_contiguous and not np.shares_memory(x.data, data):
            w = None if norm.weight is None else norm.weight.data
            b = None if norm.bias is None else norm.bias.data
            ops.add_layer_norm_forward(x.data, data, norm.normalized_shape, w, b, norm.eps, needs_grad=False,
                                       in_place=True)
            return r
    s = _residual(x, r)
    return (norm(s), s) if both else norm(s)


def _get_activation(activation):
    if isinstance(activation, str):
        if activation == "relu":
            return F.relu
        if activation == "gelu":
            return F.gelu
        raise RuntimeError(f"activation should be relu/gelu, not {activation}")
    if not callable(activation):
        raise TypeError(f"activation: expected 'relu', 'gelu' or a callable, got {type(activation).__name__}")
    # torch's own F.relu / F.gelu (e.g. from code written for torch) map to ours
    if getattr(activation, "__module__", "").startswith("torch") and getattr(activation, "__name__", "") in ("relu", "gelu"):
        return F.relu if activation.__name__ == "relu" else F.gelu
    return activation


def _square_subsequent(sz: int, dtype) -> np.ndarray:
    """(sz, sz): 0 on and below the diagonal, -inf above (float), or True above (bool)."""
    upper = np.triu(np.ones((sz, sz), bool), 1)
    if np.dtype(dtype) == np.bool_:
        return upper
    return np.where(upper, np.dtype(dtype).type(-np.inf), np.dtype(dtype).type(0))


def _detect_is_causal(mask, is_causal, size: int) -> bool:
    """PyTorch's rule: an explicit hint wins; else a mask equal to the square subsequent mask (same
    dtype kind) is causal."""
    if is_causal is not None:
        return bool(is_causal)
    if mask is None:
        return False
    m = _to_numpy(mask)
    if m.shape != (size, size):
        return False
    return bool(np.array_equal(m, _square_subsequent(size, m.dtype)))


class _Mask:
    """The masks of one attention (shared by every layer of a stack): ``mask`` an additive array
    broadcastable to (B, H, L, S) or None; ``causal`` True runs the causal kernel (``mask`` is then
    None; top-left aligned, so cached steps after the first pass an explicit mask instead)."""

    __slots__ = ("mask", "causal")

    def __init__(self, mask=None, causal=False):
        self.mask = mask
        self.causal = causal

    @staticmethod
    def build(attn_mask, kpm, is_causal, B, H, L, S, dtype, names, need_weights):
        am = _additive(attn_mask, names[0], dtype, ((L, S), (B * H, L, S)))
        kp = _additive(kpm, names[1], dtype, ((B, S),))
        if am is not None and am.ndim == 3:
            am = am.reshape(B, H, L, S)
        if kp is not None:
            kp = kp.reshape(B, 1, 1, S)
        if is_causal:
            if L != S:
                raise ValueError(f"{names[2]}: a causal mask needs equal target and source lengths, got {L} and {S}")
            # PyTorch trusts the hint: with no padding mask and no weights it runs causal attention
            # and ignores the mask's values; else it uses the mask (which must then be causal).
            if kp is None and not need_weights:
                return _Mask(None, True)
            if am is None:
                am = _square_subsequent(L, dtype)
        if am is None:
            return _Mask(kp, False)
        return _Mask(am if kp is None else am + kp, False)


class _LayerCache:
    """Keys and values of one layer: self-attention (B, H, t, D), appended per step; cross-attention
    (B, H, S, D) of the memory, computed once."""

    __slots__ = ("k", "v", "cross_k", "cross_v")

    def __init__(self):
        self.k = self.v = self.cross_k = self.cross_v = None


class KVCache:
    """Cached keys and values for incremental decoding (``decode_step``). ``len(cache)`` is the
    number of positions decoded so far; ``cache.reorder(index)`` selects batch rows (beam search).
    Arrays, no autograd: decoding steps are inference."""

    def __init__(self, num_layers: int) -> None:
        self.layers = [_LayerCache() for _ in range(num_layers)]

    def __len__(self) -> int:
        first = self.layers[0] if self.layers else None
        return 0 if first is None or first.k is None else first.k.shape[2]

    @property
    def batch_size(self):
        for lc in self.layers:
            for a in (lc.k, lc.cross_k):
                if a is not None:
                    return a.shape[0]
        return None

    def reorder(self, index) -> "KVCache":
        """Keep batch rows ``index`` (in that order, repeats allowed), in place; returns self."""
        index = np.asarray(_to_numpy(index))
        if index.dtype.kind not in "iu" or index.ndim != 1:
            raise TypeError(f"index: expected a 1-D integer array, got dtype {index.dtype} and shape {index.shape}")
        B = self.batch_size
        if B is not None and index.size and (index.min() < -B or index.max() >= B):
            raise IndexError(f"index: expected values in [0, {B}), got {index.min()}..{index.max()}")
        for lc in self.layers:
            for name in _LayerCache.__slots__:
                a = getattr(lc, name)
                if a is not None:
                    setattr(lc, name, np.ascontiguousarray(a[index]))
        return self

    def __repr__(self) -> str:
        return f"KVCache(layers={len(self.layers)}, length={len(self)}, batch_size={self.batch_size})"


def _attend(mha: MultiheadAttention, q, k, v, m: _Mask, training: bool, need_weights: bool):
    """Heads (B, H, L, D) of q, k, v -> (merged output (B, L, E) before out_proj, weights (B, H, L, S))."""
    p = mha.dropout if training else 0.0
    seed = next_seed() if p > 0 else None
    if not is_grad_enabled() and not need_weights:  # the kernel writes the heads merged
        out, _ = ops.sdpa_forward(q.data, k.data, v.data, m.mask, m.causal, None, p, seed=seed, needs_grad=False,
                                  merge_heads=True)
        return Tensor(out), None
    out = _Attention.apply(q, k, v, m.mask, m.causal, p, seed)
    weights = None
    if need_weights:
        D = q.shape[-1]
        scores = (q * q.dtype.type(1.0 / math.sqrt(D))) @ k.transpose(-2, -1)
        if m.causal:  # no weights are asked for when the causal kernel runs, but keep it complete
            scores = scores + _square_subsequent(q.shape[2], q.dtype)
        elif m.mask is not None:
            scores = scores + m.mask
        weights = F.softmax(scores, dim=-1)
        if p > 0:  # the dropout index of (b, h, i, j) is the C-order index of the weights
            weights = F._Dropout.apply(weights, p, seed)
    return _merge_heads(out), weights


def _in_place(need_weights: bool, cache) -> bool:
    """Whether training attention reads its heads in place from the projections (no weights to
    return, no cache to fill; inference reads them in place in ``_attend``)."""
    return is_grad_enabled() and not need_weights and cache is None


def _self_attention(mha, x, m: _Mask, training, need_weights, cache: _LayerCache | None = None):
    H = mha.num_heads
    E = mha.embed_dim
    proj = F.linear(x, mha.in_proj_weight, mha.in_proj_bias)
    if _in_place(need_weights, cache):
        p = mha.dropout if training else 0.0
        out = packed_attention((proj,), ((0, 0), (0, 1), (0, 2)), H, E, m.mask, m.causal, p)
        return mha.out_proj(out), None
    q, k, v = _split_heads(proj, 3, H)
    if cache is not None:  # inference: append this step's keys and values
        if cache.k is not None:
            k = Tensor(np.concatenate([cache.k, k.data], axis=2))
            v = Tensor(np.concatenate([cache.v, v.data], axis=2))
        cache.k, cache.v = k.data, v.data
    out, w = _attend(mha, q, k, v, m, training, need_weights)
    return mha.out_proj(out), w


class _SplitRows(Function):
    """Consecutive row blocks [bounds[i], bounds[i + 1]) of a packed weight or bias, as views;
    the backward joins their gradients into one array. (Indexing each block instead gives every
    block a zero-padded gradient of the whole weight, which then have to be added: 0.5 ms of
    zero-filling alone in a 100 ms decoder-layer training step.)"""

    @staticmethod
    def forward(ctx, a, bounds):
        ctx.shape = a.shape
        return tuple(a[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:]))

    @staticmethod
    def backward(ctx, *grads):
        joined = _core.empty(ctx.shape, grads[0].dtype)  # (not a reshaped view: autograd would copy it)
        np.concatenate([g.reshape(-1) for g in grads], out=joined.reshape(-1))
        return joined, None


def _cross_attention(mha, x, memory, m: _Mask, training, need_weights, cache: _LayerCache | None = None):
    H = mha.num_heads
    E = mha.embed_dim
    # The query rows of the packed projection apply to x, the key and value rows to memory.
    w_q, w_kv = _SplitRows.apply(mha.in_proj_weight, (0, E, 3 * E))
    b_q, b_kv = (None, None) if mha.in_proj_bias is None else _SplitRows.apply(mha.in_proj_bias, (0, E, 3 * E))
    cached = cache is not None and cache.cross_k is not None
    if memory is None and not cached:
        raise ValueError("memory: required (the cache holds no cross-attention keys yet)")
    q_proj = F.linear(x, w_q, b_q)
    if _in_place(need_weights, cache):
        p = mha.dropout if training else 0.0
        out = packed_attention((q_proj, F.linear(memory, w_kv, b_kv)), ((0, 0), (1, 0), (1, 1)), H, E, m.mask,
                               m.causal, p)
        return mha.out_proj(out), None
    q = _split_heads(q_proj, 1, H)
    if cached:
        k, v = Tensor(cache.cross_k), Tensor(cache.cross_v)
    else:
        k, v = _split_heads(F.linear(memory, w_kv, b_kv), 2, H)
        if cache is not None:
            cache.cross_k, cache.cross_v = k.data, v.data
    out, w = _attend(mha, q, k, v, m, training, need_weights)
    return mha.out_proj(out), w


def _step_mask(L: int, past: int, dtype) -> _Mask:
    """Causal mask of L new queries at positions past..past+L-1 over past + L keys."""
    if L == 1:
        return _Mask()
    if past == 0:
        return _Mask(None, True)
    j = np.arange(past + L)
    i = np.arange(L)[:, None] + past
    return _Mask(np.where(j[None, :] > i, dtype.type(-np.inf), dtype.type(0)), False)


class _LinearAct(_OpsPair):
    @staticmethod
    def forward(ctx, x, weight, bias, activation):
        y, ws = ops.linear_act_forward(x, weight, bias, activation, needs_grad=ctx.needs_grad)
        _OpsPair._keep(ctx, "linear_act", ws, 4)
        return y


class _FeedForward(_OpsPair):
    @staticmethod
    def forward(ctx, x, weight1, bias1, weight2, bias2, activation):
        y, ws = ops.feed_forward_forward(x, weight1, bias1, weight2, bias2, activation, needs_grad=ctx.needs_grad)
        _OpsPair._keep(ctx, "feed_forward", ws, 6)
        return y


def _feed_forward(layer, x: Tensor, middle_dropout) -> Tensor:
    """linear2(dropout(activation(linear1(x)))): one node over ops.feed_forward_forward/backward
    (act' in the epilogue of the dh GEMM) for relu and gelu on plain Linears when the middle
    dropout does nothing (p = 0 or eval); otherwise linear + activation, dropout, linear."""
    act = "relu" if layer.activation is F.relu else "gelu" if layer.activation is F.gelu else None
    identity = not (middle_dropout.training and middle_dropout.p > 0)
    if act is not None and identity and type(layer.linear1) is Linear and type(layer.linear2) is Linear:
        l1, l2 = layer.linear1, layer.linear2
        return _FeedForward.apply(x, l1.weight, l1.bias, l2.weight, l2.bias, act)
    return layer.linear2(middle_dropout(_ffn_hidden(layer, x)))


def _ffn_hidden(layer, x: Tensor) -> Tensor:
    """activation(linear1(x)) of a feed-forward block: one GEMM with the activation as its epilogue
    (ops.linear_act_forward) for relu and gelu on a plain Linear; otherwise the two steps."""
    act = "relu" if layer.activation is F.relu else "gelu" if layer.activation is F.gelu else None
    if act is not None and type(layer.linear1) is Linear:
        return _LinearAct.apply(x, layer.linear1.weight, layer.linear1.bias, act)
    return _activate(layer.activation, layer.linear1(x))


def _activate(activation, h: Tensor) -> Tensor:
    """activation(h); ReLU without autograd in place on the fresh linear1 output."""
    if activation is F.relu and not is_grad_enabled() and h.data.flags.writeable:
        np.maximum(h.data, 0, out=h.data)
        return h
    return activation(h)


def _to_bf(x, batch_first: bool, name: str):
    """(L, B, E) / (B, L, E) / unbatched (L, E) -> (B, L, E) Tensor, and whether it was batched."""
    x = _tensor(x)
    if x.ndim == 2:
        return x.unsqueeze(0), False
    if x.ndim != 3:
        raise ValueError(f"{name}: expected a 3-D (batched) or 2-D (unbatched) array, got shape {x.shape}")
    return (x if batch_first else x.transpose(0, 1)), True


def _from_bf(x: Tensor, batch_first: bool, batched: bool) -> Tensor:
    if not batched:
        return x.squeeze(0)
    return x if batch_first else x.transpose(0, 1)


def _unbatch_weights(w, batched):
    if w is None or batched:
        return w
    if isinstance(w, tuple):
        return tuple(_unbatch_weights(a, batched) for a in w)
    return w.squeeze(0)


def _check_d_model(x: Tensor, d_model: int, name: str) -> None:
    if x.shape[-1] != d_model:
        raise ValueError(f"{name}: expected feature size d_model={d_model} as last dim, got shape {x.shape}")


def _kpm_batched(kpm, batched: bool):
    if kpm is None or batched:
        return kpm
    return _to_numpy(kpm)[None]


# ------------------------------------------------------------------------------- layers


class TransformerEncoderLayer(Module):
    """``torch.nn.TransformerEncoderLayer``: self-attention and a feed-forward block, each with a
    residual connection and layer norm (after, or before with ``norm_first=True``).

    ``forward(src, src_mask=None, src_key_padding_mask=None, is_causal=False, need_weights=False)``;
    with ``need_weights=True`` returns ``(output, weights (B, H, L, L))`` (seqblocks extension).
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation="relu", layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first,
                                            dtype=dtype)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, dtype=dtype)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, dtype=dtype)
        self.norm_first = bool(norm_first)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.activation = _get_activation(activation)
        self.batch_first = bool(batch_first)

    def _ff_block(self, x):
        return self.dropout2(_feed_forward(self, x, self.dropout))

    def _block(self, x, m: _Mask, need_weights: bool, cache=None):
        """x (B, L, E) -> (B, L, E), weights."""
        if self.norm_first:
            a, w = _self_attention(self.self_attn, self.norm1(x), m, self.training, need_weights, cache)
            h, x = _add_norm(self.norm2, x, self.dropout1(a), both=True)  # x += a; h = norm2(x)
            x = _residual(x, self._ff_block(h))
        else:
            a, w = _self_attention(self.self_attn, x, m, self.training, need_weights, cache)
            x = _add_norm(self.norm1, x, self.dropout1(a))
            x = _add_norm(self.norm2, x, self._ff_block(x))
        return x, w

    def _masks(self, x, src_mask, kpm, is_causal, need_weights):
        B, L, _ = x.shape
        return _Mask.build(src_mask, kpm, is_causal, B, self.self_attn.num_heads, L, L, x.dtype,
                           ("src_mask", "src_key_padding_mask", "is_causal"), need_weights)

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal: bool = False,
                need_weights: bool = False):
        x, batched = _to_bf(src, self.batch_first, "src")
        _check_d_model(x, self.self_attn.embed_dim, "src")
        m = self._masks(x, src_mask, _kpm_batched(src_key_padding_mask, batched), is_causal, need_weights)
        y, w = self._block(x, m, need_weights)
        y = _from_bf(y, self.batch_first, batched)
        return (y, _unbatch_weights(w, batched)) if need_weights else y


class TransformerDecoderLayer(Module):
    """``torch.nn.TransformerDecoderLayer``: self-attention, cross-attention over ``memory`` and a
    feed-forward block, each with a residual connection and layer norm.

    ``forward(tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
    memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False, need_weights=False)``;
    with ``need_weights=True`` returns ``(output, (self_weights (B, H, L, L), cross_weights (B, H, L, S)))``.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation="relu", layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first,
                                            dtype=dtype)
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                                 batch_first=batch_first, dtype=dtype)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, dtype=dtype)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, dtype=dtype)
        self.norm_first = bool(norm_first)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm3 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.dropout3 = Dropout(dropout)
        self.activation = _get_activation(activation)
        self.batch_first = bool(batch_first)

    def _ff_block(self, x):
        return self.dropout3(_feed_forward(self, x, self.dropout))

    def _block(self, x, memory, sm: _Mask, cm: _Mask, need_weights: bool, cache=None):
        t = self.training
        if self.norm_first:
            a, w1 = _self_attention(self.self_attn, self.norm1(x), sm, t, need_weights, cache)
            h, x = _add_norm(self.norm2, x, self.dropout1(a), both=True)
            a, w2 = _cross_attention(self.multihead_attn, h, memory, cm, t, need_weights, cache)
            h, x = _add_norm(self.norm3, x, self.dropout2(a), both=True)
            x = _residual(x, self._ff_block(h))
        else:
            a, w1 = _self_attention(self.self_attn, x, sm, t, need_weights, cache)
            x = _add_norm(self.norm1, x, self.dropout1(a))
            a, w2 = _cross_attention(self.multihead_attn, x, memory, cm, t, need_weights, cache)
            x = _add_norm(self.norm2, x, self.dropout2(a))
            x = _add_norm(self.norm3, x, self._ff_block(x))
        return x, ((w1, w2) if need_weights else None)

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal: bool = False, memory_is_causal: bool = False,
                need_weights: bool = False):
        x, batched = _to_bf(tgt, self.batch_first, "tgt")
        mem, _ = _to_bf(memory, self.batch_first, "memory")
        sm, cm = _decoder_masks(self.self_attn.num_heads, self.self_attn.embed_dim, x, mem, tgt_mask, memory_mask,
                                _kpm_batched(tgt_key_padding_mask, batched),
                                _kpm_batched(memory_key_padding_mask, batched), tgt_is_causal, memory_is_causal,
                                need_weights)
        y, w = self._block(x, mem, sm, cm, need_weights)
        y = _from_bf(y, self.batch_first, batched)
        return (y, _unbatch_weights(w, batched)) if need_weights else y


def _decoder_masks(H, E, x, mem, tgt_mask, memory_mask, tkpm, mkpm, tgt_causal, mem_causal, need_weights):
    _check_d_model(x, E, "tgt")
    _check_d_model(mem, E, "memory")
    B, L, _ = x.shape
    if mem.shape[0] != B:
        raise ValueError(f"memory: expected batch size {B} (tgt's), got shape {mem.shape}")
    S = mem.shape[1]
    sm = _Mask.build(tgt_mask, tkpm, tgt_causal, B, H, L, L, x.dtype,
                     ("tgt_mask", "tgt_key_padding_mask", "tgt_is_causal"), need_weights)
    cm = _Mask.build(memory_mask, mkpm, mem_causal, B, H, L, S, x.dtype,
                     ("memory_mask", "memory_key_padding_mask", "memory_is_causal"), need_weights)
    return sm, cm


# ------------------------------------------------------------------------------- stacks


def _clones(layer: Module, n: int) -> ModuleList:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"num_layers: expected a positive int, got {n!r}")
    return ModuleList([copy.deepcopy(layer) for _ in range(int(n))])


class TransformerEncoder(Module):
    """``torch.nn.TransformerEncoder``: ``num_layers`` copies of ``encoder_layer`` and an optional
    final ``norm``. ``forward(src, mask=None, src_key_padding_mask=None, is_causal=None,
    need_weights=False)``; ``need_weights=True`` returns ``(output, [weights (B, H, L, L) per layer])``."""

    def __init__(self, encoder_layer: TransformerEncoderLayer, num_layers: int, norm=None,
                 enable_nested_tensor: bool = True, mask_check: bool = True) -> None:
        super().__init__()
        self.layers = _clones(encoder_layer, num_layers)
        self.num_layers = int(num_layers)
        self.norm = norm
        self.enable_nested_tensor = enable_nested_tensor
        self.mask_check = mask_check

    def _run(self, x, m: _Mask, need_weights, caches=None):
        weights = []
        for i, layer in enumerate(self.layers):
            x, w = layer._block(x, m, need_weights, None if caches is None else caches.layers[i])
            weights.append(w)
        if self.norm is not None:
            x = self.norm(x)
        return x, weights

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=None, need_weights: bool = False):
        first = self.layers[0]
        x, batched = _to_bf(src, first.batch_first, "src")
        _check_d_model(x, first.self_attn.embed_dim, "src")
        causal = _detect_is_causal(mask, is_causal, x.shape[1])
        m = first._masks(x, mask, _kpm_batched(src_key_padding_mask, batched), causal, need_weights)
        y, weights = self._run(x, m, need_weights)
        y = _from_bf(y, first.batch_first, batched)
        if need_weights:
            return y, [_unbatch_weights(w, batched) for w in weights]
        return y


class TransformerDecoder(Module):
    """``torch.nn.TransformerDecoder``: ``num_layers`` copies of ``decoder_layer`` and an optional
    final ``norm``. ``forward(tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
    memory_key_padding_mask=None, tgt_is_causal=None, memory_is_causal=False, need_weights=False)``;
    ``need_weights=True`` returns ``(output, [(self_weights, cross_weights) per layer])``.

    ``decode_step(tgt, memory, cache=None, memory_key_padding_mask=None)`` -> ``(output, cache)``:
    incremental causal decoding (docs/transformer.md)."""

    def __init__(self, decoder_layer: TransformerDecoderLayer, num_layers: int, norm=None) -> None:
        super().__init__()
        self.layers = _clones(decoder_layer, num_layers)
        self.num_layers = int(num_layers)
        self.norm = norm

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=None, memory_is_causal: bool = False,
                need_weights: bool = False):
        first = self.layers[0]
        x, batched = _to_bf(tgt, first.batch_first, "tgt")
        mem, _ = _to_bf(memory, first.batch_first, "memory")
        causal = _detect_is_causal(tgt_mask, tgt_is_causal, x.shape[1])
        sm, cm = _decoder_masks(first.self_attn.num_heads, first.self_attn.embed_dim, x, mem, tgt_mask, memory_mask,
                                _kpm_batched(tgt_key_padding_mask, batched),
                                _kpm_batched(memory_key_padding_mask, batched), causal, memory_is_causal,
                                need_weights)
        weights = []
        for layer in self.layers:
            x, w = layer._block(x, mem, sm, cm, need_weights)
            weights.append(w)
        if self.norm is not None:
            x = self.norm(x)
        y = _from_bf(x, first.batch_first, batched)
        if need_weights:
            return y, [_unbatch_weights(w, batched) for w in weights]
        return y

    def init_cache(self) -> KVCache:
        """An empty cache for ``decode_step``."""
        return KVCache(len(self.layers))

    @no_grad()
    def decode_step(self, tgt, memory, cache: KVCache | None = None, memory_key_padding_mask=None,
                    need_weights: bool = False):
        """Decode the next position(s) causally, reusing the keys and values of the previous ones.

        ``tgt``: the new position(s) only, (T, B, E) / (B, T, E) with ``batch_first`` (usually
        T = 1); they attend every cached position and each other causally. ``memory`` as in
        ``forward`` (its keys and values are computed on the first step and cached; pass the same
        memory each step, or None after the first). Returns ``(output for the new positions,
        cache)``; the output equals the last T positions of ``forward`` on the whole prefix with a
        causal ``tgt_mask``. ``need_weights=True`` returns ``(output, cache, [(self_weights
        (B, H, T, t), cross_weights (B, H, T, S)) per layer])``. Runs without autograd (inference)."""
        first = self.layers[0]
        x, batched = _to_bf(tgt, first.batch_first, "tgt")
        cache = self.init_cache() if cache is None else cache
        if not isinstance(cache, KVCache) or len(cache.layers) != len(self.layers):
            raise TypeError(f"cache: expected a KVCache of {len(self.layers)} layers (decoder.init_cache()), got {cache!r}")
        E, H = first.self_attn.embed_dim, first.self_attn.num_heads
        _check_d_model(x, E, "tgt")
        B, T, _ = x.shape
        if cache.batch_size is not None and cache.batch_size != B:
            raise ValueError(f"tgt: expected batch size {cache.batch_size} (the cache's), got shape {tuple(x.shape)}")
        mem = None
        S = cache.layers[0].cross_k.shape[2] if cache.layers[0].cross_k is not None else None
        if memory is not None and cache.layers[0].cross_k is None:
            mem, _ = _to_bf(memory, first.batch_first, "memory")
            _check_d_model(mem, E, "memory")
            if mem.shape[0] != B:
                raise ValueError(f"memory: expected batch size {B} (tgt's), got shape {mem.shape}")
            S = mem.shape[1]
        if S is None:
            raise ValueError("memory: required on the first decoding step")
        sm = _step_mask(T, len(cache), x.dtype)
        cm = _Mask.build(None, _kpm_batched(memory_key_padding_mask, batched), False, B, H, T, S, x.dtype,
                         ("memory_mask", "memory_key_padding_mask", "memory_is_causal"), need_weights)
        weights = []
        for layer, lc in zip(self.layers, cache.layers):
            x, w = layer._block(x, mem, sm, cm, need_weights, lc)
            weights.append(w)
        if self.norm is not None:
            x = self.norm(x)
        y = _from_bf(x, first.batch_first, batched)
        if need_weights:
            return y, cache, [_unbatch_weights(w, batched) for w in weights]
        return y, cache


class Transformer(Module):
    """``torch.nn.Transformer``: an encoder (``num_encoder_layers`` layers + final LayerNorm) and
    a decoder (``num_decoder_layers`` layers + final LayerNorm); parameters with more than one
    dimension are re-initialised with xavier_uniform, as PyTorch does."""

    def __init__(self, d_model: int = 512, nhead: int = 8, num_encoder_layers: int = 6,
                 num_decoder_layers: int = 6, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation="relu", custom_encoder=None, custom_decoder=None, layer_norm_eps: float = 1e-5,
                 batch_first: bool = False, norm_first: bool = False, bias: bool = True, device=None,
                 dtype=None) -> None:
        super().__init__()
        kw = dict(dim_feedforward=dim_feedforward, dropout=dropout, activation=activation,
                  layer_norm_eps=layer_norm_eps, batch_first=batch_first, norm_first=norm_first, bias=bias,
                  dtype=dtype)
        if custom_encoder is not None:
            self.encoder = custom_encoder
        else:
            self.encoder = TransformerEncoder(TransformerEncoderLayer(d_model, nhead, **kw), num_encoder_layers,
                                              LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype))
        if custom_decoder is not None:
            self.decoder = custom_decoder
        else:
            self.decoder = TransformerDecoder(TransformerDecoderLayer(d_model, nhead, **kw), num_decoder_layers,
                                              LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype))
        self._reset_parameters()
        self.d_model = d_model
        self.nhead = nhead
        self.batch_first = batch_first

    def _reset_parameters(self) -> None:
        for p in self.parameters():
            if p.ndim > 1:
                init.xavier_uniform_(p)

    @staticmethod
    def generate_square_subsequent_mask(sz: int, device=None, dtype=None) -> Tensor:
        """(sz, sz) float mask: -inf above the diagonal (position i may not attend j > i), 0 elsewhere."""
        return Tensor(_square_subsequent(int(sz), np.float32 if dtype is None else dtype))

    def forward(self, src, tgt, src_mask=None, tgt_mask=None, memory_mask=None, src_key_padding_mask=None,
                tgt_key_padding_mask=None, memory_key_padding_mask=None, src_is_causal=None, tgt_is_causal=None,
                memory_is_causal: bool = False):
        src, tgt = _tensor(src), _tensor(tgt)
        if src.ndim != tgt.ndim:
            raise ValueError(f"src, tgt: expected the same number of dims, got shapes {src.shape} and {tgt.shape}")
        if src.ndim == 3:
            bdim = 0 if self.batch_first else 1
            if src.shape[bdim] != tgt.shape[bdim]:
                raise ValueError(f"the batch number of src and tgt must be equal, got shapes {src.shape} and {tgt.shape}")
        if src.shape[-1] != self.d_model or tgt.shape[-1] != self.d_model:
            raise ValueError(f"the feature number of src and tgt must be equal to d_model={self.d_model}, got shapes "
                             f"{src.shape} and {tgt.shape}")
        memory = self.encoder(src, mask=src_mask, src_key_padding_mask=src_key_padding_mask, is_causal=src_is_causal)
        return self.decoder(tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                            tgt_key_padding_mask=tgt_key_padding_mask,
                            memory_key_padding_mask=memory_key_padding_mask, tgt_is_causal=tgt_is_causal,
                            memory_is_causal=memory_is_causal)


# ------------------------------------------------------------------- encoder-only / decoder-only


class EncoderOnlyTransformer(TransformerEncoder):
    """BERT-style encoder stack: ``num_layers`` ``TransformerEncoderLayer`` (bidirectional
    attention, post-norm by default as BERT; GELU) and an optional final LayerNorm
    (``final_norm``, default ``norm_first``). Input (B, L, E) by default (``batch_first=True``).
    ``forward(src, src_key_padding_mask=None, mask=None, need_weights=False)``."""

    def __init__(self, d_model: int, nhead: int, num_layers: int, dim_feedforward: int = 2048,
                 dropout: float = 0.1, activation="gelu", layer_norm_eps: float = 1e-12,
                 batch_first: bool = True, norm_first: bool = False, bias: bool = True, final_norm=None,
                 dtype=None) -> None:
        layer = TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps,
                                        batch_first, norm_first, bias, dtype=dtype)
        final_norm = norm_first if final_norm is None else final_norm
        norm = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype) if final_norm else None
        super().__init__(layer, num_layers, norm)
        for lyr in self.layers:  # independent initial weights per layer
            for p in lyr.parameters():
                if p.ndim > 1:
                    init.xavier_uniform_(p)

    def forward(self, src, src_key_padding_mask=None, mask=None, need_weights: bool = False):
        return super().forward(src, mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=False,
                               need_weights=need_weights)


class DecoderOnlyTransformer(TransformerEncoder):
    """GPT-style decoder stack: ``num_layers`` pre-norm ``TransformerEncoderLayer`` with causal
    self-attention (no cross-attention) and a final LayerNorm. Input (B, L, E) by default.
    ``forward(x, key_padding_mask=None, need_weights=False)`` is always causal;
    ``decode_step(x_new, cache=None)`` -> ``(output, cache)`` decodes incrementally."""

    def __init__(self, d_model: int, nhead: int, num_layers: int, dim_feedforward: int = 2048,
                 dropout: float = 0.1, activation="gelu", layer_norm_eps: float = 1e-5,
                 batch_first: bool = True, bias: bool = True, dtype=None) -> None:
        layer = TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps,
                                        batch_first, True, bias, dtype=dtype)
        super().__init__(layer, num_layers, LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype))
        for lyr in self.layers:
            for p in lyr.parameters():
                if p.ndim > 1:
                    init.xavier_uniform_(p)

    def forward(self, x, key_padding_mask=None, need_weights: bool = False):
        return super().forward(x, mask=None, src_key_padding_mask=key_padding_mask, is_causal=True,
                               need_weights=need_weights)

    def init_cache(self) -> KVCache:
        return KVCache(len(self.layers))

    @no_grad()
    def decode_step(self, x, cache: KVCache | None = None):
        """The next position(s) ``x`` ((B, T, E) with batch_first, usually T = 1) attending every
        cached position and each other causally -> ``(output (B, T, E), cache)``; equal to the last
        T positions of ``forward`` on the whole prefix. Inference (no autograd)."""
        first = self.layers[0]
        h, batched = _to_bf(x, first.batch_first, "x")
        cache = self.init_cache() if cache is None else cache
        if not isinstance(cache, KVCache) or len(cache.layers) != len(self.layers):
            raise TypeError(f"cache: expected a KVCache of {len(self.layers)} layers (model.init_cache()), got {cache!r}")
        _check_d_model(h, first.self_attn.embed_dim, "x")
        if cache.batch_size is not None and cache.batch_size != h.shape[0]:
            raise ValueError(f"x: expected batch size {cache.batch_size} (the cache's), got shape {tuple(h.shape)}")
        m = _step_mask(h.shape[1], len(cache), h.dtype)
        y, _ = self._run(h, m, False, cache)
        return _from_bf(y, first.batch_first, batched), cache
