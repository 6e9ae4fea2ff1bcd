"""NumPy reference for the embedding pair: row gather and its scatter-add gradient."""

from __future__ import annotations

import numpy as np


def normalize_padding_idx(padding_idx, num_embeddings: int):
    """PyTorch's rule: padding_idx in [-num_embeddings, num_embeddings), negative counts from the end."""
    if padding_idx is None:
        return None
    if isinstance(padding_idx, (bool, np.bool_)) or not isinstance(padding_idx, (int, np.integer)):
        raise TypeError(f"padding_idx: expected an int or None, got {type(padding_idx).__name__}")
    p = int(padding_idx)
    if not -num_embeddings <= p < num_embeddings:
        raise ValueError(f"padding_idx: expected a value in [{-num_embeddings}, {num_embeddings}) "
                         f"(weight has {num_embeddings} rows), got {p}")
    return p + num_embeddings if p < 0 else p


def check_indices(indices: np.ndarray, num_embeddings: int) -> None:
    """IndexError naming the first out-of-range index (in C order)."""
    if indices.size == 0:
        return
    bad = (indices < 0) | (indices >= num_embeddings)
    if bad.any():
        value = int(indices.reshape(-1)[np.argmax(bad.reshape(-1))])
        raise IndexError(f"indices: expected values in [0, {num_embeddings}) (weight has {num_embeddings} rows), "
                         f"got {value}")


def embedding_forward(indices: np.ndarray, weight: np.ndarray, padding_idx=None, *, needs_grad: bool = True):
    """indices (int, any shape), weight (num_embeddings, dim) -> out (*indices.shape, dim) = weight[indices].

    Workspace: (indices, weight shape, dtype, normalized padding_idx)."""
    indices = np.asarray(indices)
    num_embeddings = weight.shape[0]
    pad = normalize_padding_idx(padding_idx, num_embeddings)
    check_indices(indices, num_embeddings)
    out = weight[indices]
    return out, ((indices, weight.shape, weight.dtype, pad) if needs_grad else None)


def embedding_backward(grad_output: np.ndarray, workspace):
    """dout (*indices.shape, dim) -> (None, dweight): dweight[v] = sum of dout rows with index v, in index order;
    the padding_idx row is zero."""
    indices, shape, dtype, pad = workspace
    dweight = np.zeros(shape, dtype)
    np.add.at(dweight, indices.reshape(-1), grad_output.reshape(-1, shape[1]))
    if pad is not None:
        dweight[pad] = 0
    return None, dweight
