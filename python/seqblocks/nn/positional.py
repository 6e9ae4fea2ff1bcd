"""Positional encodings added to a sequence of embeddings: ``SinusoidalPositionalEncoding`` (fixed,
Vaswani et al. 2017, section 3.5) and ``LearnedPositionalEmbedding`` (a trained table, as BERT/GPT).
Both take ``offset`` (the position of the first element, for cached incremental decoding)."""

from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from . import init
from .functional import _tensor
from .layers import Dropout, _float_dtype, _positive_int
from .module import Module, Parameter

__all__ = ["LearnedPositionalEmbedding", "SinusoidalPositionalEncoding"]


def _positions(x: Tensor, batch_first: bool, offset: int, max_len: int, d_model: int, name: str):
    """(start, length, the sequence axis) of input x, checked."""
    if x.ndim not in (2, 3):
        raise ValueError(f"{name}: expected a 3-D (batched) or 2-D (unbatched) array, got shape {x.shape}")
    if x.shape[-1] != d_model:
        raise ValueError(f"{name}: expected d_model={d_model} as last dim, got shape {x.shape}")
    axis = 1 if (x.ndim == 3 and batch_first) else 0
    length = x.shape[axis]
    if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) or offset < 0:
        raise ValueError(f"offset: expected a non-negative int, got {offset!r}")
    if offset + length > max_len:
        raise ValueError(f"{name}: positions {offset}..{offset + length - 1} exceed max_len={max_len}")
    return int(offset), length, axis


def _table_view(table, start: int, length: int, axis: int, ndim: int):
    """Rows start..start+length of a (max_len, E) table shaped to broadcast over x."""
    rows = table[start:start + length]
    if ndim == 3:
        rows = rows.reshape(1, length, -1) if axis == 1 else rows.reshape(length, 1, -1)
    return rows


class SinusoidalPositionalEncoding(Module):
    """x + PE[offset : offset + L], then dropout, with PE[pos, 2i] = sin(pos / 10000^(2i/d_model))
    and PE[pos, 2i+1] = cos(pos / 10000^(2i/d_model)). Input (L, B, E), (B, L, E) with
    ``batch_first``, or unbatched (L, E). The table (max_len, d_model) is a non-persistent buffer
    ``pe`` (not in the state_dict)."""

    def __init__(self, d_model: int, max_len: int = 5000, dropout: float = 0.0, batch_first: bool = False,
                 dtype=None) -> None:
        super().__init__()
        self.d_model = _positive_int(d_model, "d_model")
        self.max_len = _positive_int(max_len, "max_len")
        self.batch_first = bool(batch_first)
        self.dropout = Dropout(dropout)
        self.register_buffer("pe", self.table(self.max_len, self.d_model).astype(_float_dtype(dtype)),
                             persistent=False)

    @staticmethod
    def table(max_len: int, d_model: int) -> np.ndarray:
        """The (max_len, d_model) float64 table."""
        pos = np.arange(max_len, dtype=np.float64)[:, None]
        inv = np.power(10000.0, -np.arange(0, d_model, 2, dtype=np.float64) / d_model)  # 1/10000^(2i/d)
        pe = np.zeros((max_len, d_model))
        pe[:, 0::2] = np.sin(pos * inv)
        pe[:, 1::2] = np.cos(pos * inv[: d_model // 2])
        return pe

    def forward(self, x, offset: int = 0):
        x = _tensor(x)
        start, length, axis = _positions(x, self.batch_first, offset, self.max_len, self.d_model, "x")
        pe = self.pe.data if isinstance(self.pe, Tensor) else self.pe
        rows = _table_view(pe, start, length, axis, x.ndim).astype(x.dtype, copy=False)
        return self.dropout(x + rows)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, max_len={self.max_len}, batch_first={self.batch_first}"


class LearnedPositionalEmbedding(Module):
    """x + weight[offset : offset + L], ``weight`` (max_len, d_model) a trained parameter ~ N(0, 0.02^2)
    (BERT's/GPT-2's init; a torch ``nn.Embedding(max_len, d_model)`` state dict loads into it).
    Input (L, B, E), (B, L, E) with ``batch_first``, or unbatched (L, E)."""

    def __init__(self, max_len: int, d_model: int, batch_first: bool = False, dtype=None) -> None:
        super().__init__()
        self.max_len = _positive_int(max_len, "max_len")
        self.d_model = _positive_int(d_model, "d_model")
        self.batch_first = bool(batch_first)
        self.weight = Parameter(np.empty((self.max_len, self.d_model), _float_dtype(dtype)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.normal_(self.weight, 0.0, 0.02)

    def forward(self, x, offset: int = 0):
        x = _tensor(x)
        start, length, axis = _positions(x, self.batch_first, offset, self.max_len, self.d_model, "x")
        rows = self.weight[start:start + length]
        if x.ndim == 3:
            rows = rows.reshape(1, length, self.d_model) if axis == 1 else rows.reshape(length, 1, self.d_model)
        return x + rows

    def extra_repr(self) -> str:
        return f"{self.max_len}, {self.d_model}, batch_first={self.batch_first}"
