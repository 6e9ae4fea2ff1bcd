"""The embedding pair: row gather forward, deterministic scatter-add backward.

Backward groups the positions of every index value (a counting sort, in index order) and each
thread sums whole rows of dweight, so the result does not depend on the thread count.
"""

from __future__ import annotations

import numpy as np

from .. import _core, reference
from .._backend import use_reference
from ._checks import float_array, ndim_in
from ._pairs import c_order, check_grad_output


def _indices(indices) -> np.ndarray:
    idx = indices if isinstance(indices, np.ndarray) else np.asarray(indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"indices: expected an integer array, got dtype {idx.dtype}")
    return idx


def embedding_forward(indices, weight, padding_idx=None, *, needs_grad: bool = True):
    """indices (int, any shape), weight (num_embeddings, dim) -> out (*indices.shape, dim).

    An index outside [0, num_embeddings) raises IndexError naming it (before anything is written).
    padding_idx may be negative (counted from the end, as in PyTorch); its row gets no gradient."""
    idx = _indices(indices)
    weight = float_array(weight, "weight")
    ndim_in(weight, "weight", (2,))
    num_embeddings, dim = weight.shape
    pad = reference.embedding.normalize_padding_idx(padding_idx, num_embeddings)
    if use_reference():
        return reference.embedding_forward(idx, weight, pad, needs_grad=needs_grad)
    if idx.dtype == np.uint64 and idx.size and int(idx.max()) > np.iinfo(np.int64).max:
        reference.embedding.check_indices(idx, num_embeddings)
    idx64 = idx.astype(np.int64, order="C", copy=False)  # keeps 0-d arrays 0-d
    out = _core.embedding_forward(idx64.reshape(-1), c_order(weight))
    out = out.reshape(idx.shape + (dim,))
    return out, ((idx64, weight.shape, weight.dtype, pad) if needs_grad else None)


def embedding_backward(grad_output, workspace):
    """dout (*indices.shape, dim) -> (None, dweight (num_embeddings, dim))."""
    idx, shape, dtype, pad = workspace
    dy = check_grad_output(grad_output, idx.shape + (shape[1],), dtype)
    if use_reference():
        return reference.embedding_backward(dy, workspace)
    dweight = _core.embedding_backward(c_order(dy).reshape(-1, shape[1]), idx.reshape(-1),
                                       shape[0], -1 if pad is None else pad)
    return None, dweight
