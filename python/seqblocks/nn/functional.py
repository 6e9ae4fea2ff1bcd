"""Autograd-aware functions with PyTorch's names and signatures (``import seqblocks.nn.functional as F``).

Each function is one ``Function`` over a ``seqblocks.ops`` forward/backward pair (docs/ops.md):
forward runs ``ops.X_forward(..., needs_grad=ctx.needs_grad)`` (inference mode, no workspace,
under ``no_grad`` or when no input requires grad) and backward runs ``ops.X_backward`` with the
workspace, on the backend that made it. Inputs may be Tensors or NumPy arrays; outputs are Tensors.
"""

from __future__ import annotations

import warnings

import numpy as np

from .. import ops
from .._backend import backend as _use_backend
from .._backend import get_backend
from .._random import next_seed
from ..autograd import Function, Tensor

__all__ = ["cross_entropy", "dropout", "embedding", "gelu", "layer_norm", "linear", "log_softmax",
           "relu", "sigmoid", "softmax", "tanh"]


class _OpsPair(Function):
    """Base of the ``F`` functions. ``apply`` takes the ops forward's array inputs first (in the
    ops order), then the options, so the ops backward's gradients (one per array input) line up
    with the first arguments and the options get None."""

    @staticmethod
    def _keep(ctx, op: str, workspace, n_args: int) -> None:
        if ctx.needs_grad:
            ctx.workspace = workspace
            ctx.op = op
            ctx.n_args = n_args
            ctx.backend = get_backend()

    @staticmethod
    def backward(ctx, grad):
        bwd = getattr(ops, ctx.op + "_backward")
        if ctx.backend != get_backend():  # the workspace belongs to the backend that made it
            with _use_backend(ctx.backend):
                grads = bwd(grad, ctx.workspace)
        else:
            grads = bwd(grad, ctx.workspace)
        grads = tuple(grads)
        return grads + (None,) * (ctx.n_args - len(grads))


def _tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(np.asarray(x))


# ------------------------------------------------------------------------------- linear layers


class _Linear(_OpsPair):
    @staticmethod
    def forward(ctx, x, weight, bias):
        y, ws = ops.linear_forward(x, weight, bias, needs_grad=ctx.needs_grad)
        _OpsPair._keep(ctx, "linear", ws, 3)
        return y


def linear(input, weight, bias=None) -> Tensor:
    """``input @ weight.T + bias``; input (..., in_features), weight (out_features, in_features)."""
    return _Linear.apply(input, weight, bias)


class _Embedding(_OpsPair):
    @staticmethod
    def forward(ctx, indices, weight, padding_idx):
        y, ws = ops.embedding_forward(indices, weight, padding_idx, needs_grad=ctx.needs_grad)
        _OpsPair._keep(ctx, "embedding", ws, 3)
        return y


def embedding(input, weight, padding_idx=None, max_norm=None, norm_type: float = 2.0,
              scale_grad_by_freq: bool = False, sparse: bool = False) -> Tensor:
    """Rows of ``weight`` (num_embeddings, dim) picked by integer ``input`` of any shape; the
    ``padding_idx`` row receives no gradient (a negative index counts from the end)."""
    if max_norm is not None or scale_grad_by_freq or sparse:
        raise NotImplementedError("embedding: max_norm, scale_grad_by_freq and sparse are not supported")
    if padding_idx is not None:
        n = np.shape(weight.data if isinstance(weight, Tensor) else weight)[0]
        if not -n <= padding_idx < n:
            raise ValueError(f"padding_idx: expected in [{-n}, {n - 1}] (num_embeddings = {n}), got {padding_idx}")
        padding_idx = int(padding_idx) % n
    return _Embedding.apply(input, weight, padding_idx)


# ----------------------------------------------------------------------------------- norm


class _LayerNorm(_OpsPair):
    @staticmethod
    def forward(ctx, x, weight, bias, normalized_shape, eps):
        y, ws = ops.layer_norm_forward(x, normalized_shape, weight, bias, eps, needs_grad=ctx.needs_grad)
        _OpsPair._keep(ctx, "layer_norm", ws, 5)
        return y


def layer_norm(input, normalized_shape, weight=None, bias=None, eps: float = 1e-5) -> Tensor:
    """Normalize over the trailing ``normalized_shape`` dimensions, then scale and shift."""
    if isinstance(normalized_shape, (int, np.integer)):
        normalized_shape = (int(normalized_shape),)
    return _LayerNorm.apply(input, weight, bias, tuple(normalized_shape), eps)


# ------------------------------------------------------------------------------- dropout


class _Dropout(_OpsPair):
    @staticmethod
    def forward(ctx, x, p, seed):
        y, ws = ops.dropout_forward(x, p, True, seed=seed, needs_grad=ctx.needs_grad)
        _OpsPair._keep(ctx, "dropout", ws, 3)
        return y


def dropout(input, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero each element with probability ``p`` and scale the rest by ``1/(1-p)``.

    The mask comes from a 64-bit seed drawn from the global generator (``seqblocks.manual_seed``),
    so runs are reproducible and identical on both backends. With ``training=False`` or ``p == 0``
    the input is returned unchanged and no seed is drawn. ``inplace`` is accepted and ignored.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p: dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return _tensor(input)
    return _Dropout.apply(input, float(p), next_seed())


# ---------------------------------------------------------------------------- activations


class _ReLU(_OpsPair):
    @staticmethod
    def forward(ctx, x):
        y, ws = ops.relu_forward(x, needs_grad=ctx.needs_grad)
        _OpsPair._keep(ctx, "relu", ws, 1)
        return y


class _GELU(_OpsPair):
    @staticmethod
    def forward(ctx, x, approximate):
        y, ws = ops.gelu_forward(x, approximate, needs_grad=ctx.needs_grad)
        _OpsPair._keep(ctx, "gelu", ws, 2)
        return y


class _Tanh(_OpsPair):
    @staticmethod
    def forward(ctx, x):
        y, ws = ops.tanh_forward(x, needs_grad=ctx.needs_grad)
        _OpsPair._keep(ctx, "tanh", ws, 1)
        return y


class _Sigmoid(_OpsPair):
    @staticmethod
    def forward(ctx, x):
        y, ws = ops.sigmoid_forward(x, needs_grad=ctx.needs_grad)
        _OpsPair._keep(ctx, "sigmoid", ws, 1)
        return y


def relu(input, inplace: bool = False) -> Tensor:
    """max(x, 0). ``inplace`` is accepted and ignored (outputs are always new arrays)."""
    return _ReLU.apply(input)


def gelu(input, approximate: str = "none") -> Tensor:
    """x * Phi(x) (``approximate="none"``) or its tanh approximation (``"tanh"``)."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate: expected 'none' or 'tanh', got {approximate!r}")
    return _GELU.apply(input, approximate)


def tanh(input) -> Tensor:
    return _Tanh.apply(input)


def sigmoid(input) -> Tensor:
    return _Sigmoid.apply(input)


# ------------------------------------------------------------------------------- softmax


def _softmax_dim(name: str, ndim: int, dim) -> int:
    if dim is None:
        # PyTorch's legacy rule for an implicit dim, with its warning.
        warnings.warn(f"Implicit dimension choice for {name} has been deprecated. "
                      "Change the call to include dim=X as an argument.", UserWarning, stacklevel=3)
        return 0 if ndim in (0, 1, 3) else 1
    return dim


class _Softmax(_OpsPair):
    @staticmethod
    def forward(ctx, x, dim):
        y, ws = ops.softmax_forward(x, dim, needs_grad=ctx.needs_grad)
        _OpsPair._keep(ctx, "softmax", ws, 2)
        return y


class _LogSoftmax(_OpsPair):
    @staticmethod
    def forward(ctx, x, dim):
        y, ws = ops.log_softmax_forward(x, dim, needs_grad=ctx.needs_grad)
        _OpsPair._keep(ctx, "log_softmax", ws, 2)
        return y


def _cast(input, dtype):
    if dtype is None:
        return input
    t = _tensor(input)
    return t.to(dtype)


def softmax(input, dim=None, dtype=None) -> Tensor:
    """exp(x) / sum(exp(x)) along ``dim``."""
    input = _cast(input, dtype)
    return _Softmax.apply(input, _softmax_dim("softmax", np.ndim(input.data if isinstance(input, Tensor) else input), dim))


def log_softmax(input, dim=None, dtype=None) -> Tensor:
    """x - log(sum(exp(x))) along ``dim``."""
    input = _cast(input, dtype)
    return _LogSoftmax.apply(input, _softmax_dim("log_softmax", np.ndim(input.data if isinstance(input, Tensor) else input), dim))


# ------------------------------------------------------------------------------------- loss


class _CrossEntropy(_OpsPair):
    @staticmethod
    def forward(ctx, input, target, weight, ignore_index, reduction, label_smoothing):
        y, ws = ops.cross_entropy_forward(input, target, weight, ignore_index, reduction, label_smoothing,
                                          needs_grad=ctx.needs_grad)
        _OpsPair._keep(ctx, "cross_entropy", ws, 6)
        return y


def cross_entropy(input, target, weight=None, ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """Fused log-softmax + negative log-likelihood, PyTorch's ``F.cross_entropy``.

    input (C,), (N, C) or (N, C, d1, ...); target class indices (integers, input's shape without
    C) or class probabilities (floats, input's shape). With ``reduction="mean"`` and every target
    equal to ``ignore_index`` the result is 0 with zero gradient (PyTorch: NaN).
    """
    if isinstance(target, Tensor) and target.requires_grad:
        raise NotImplementedError("cross_entropy: gradients with respect to target are not supported")
    if isinstance(weight, Tensor) and weight.requires_grad:
        raise NotImplementedError("cross_entropy: gradients with respect to weight are not supported")
    return _CrossEntropy.apply(input, target, weight, ignore_index, reduction, label_smoothing)



# ----------------------------------------------------------------------------- attention

from .attention import scaled_dot_product_attention  # noqa: E402  (attention.py builds on the above)

__all__ += ["scaled_dot_product_attention"]
