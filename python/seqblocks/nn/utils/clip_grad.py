"""Gradient clipping by total norm and by value (PyTorch's ``nn.utils``), for the exploding
gradients of recurrent models."""

from __future__ import annotations

import math

import numpy as np

from ...autograd import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def _grads(parameters) -> list:
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p for p in parameters if p.grad is not None]


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False,
                    foreach=None) -> Tensor:
    """Scale all gradients together so that their total ``norm_type``-norm is at most ``max_norm``.

    The total norm is the norm of the per-parameter norms (computed in float64); every gradient is
    multiplied by ``min(1, max_norm / (total + 1e-6))`` (a new array is stored in ``.grad``).
    Returns the total norm (before clipping) as a 0-d Tensor in the gradients' dtype. With
    ``error_if_nonfinite=True`` a NaN/inf total norm raises RuntimeError and nothing is changed.
    """
    params = _grads(parameters)
    max_norm = float(max_norm)
    norm_type = float(norm_type)
    if not params:
        return Tensor(np.array(0.0, np.float32))
    dtype = np.result_type(*[p.grad.dtype for p in params])
    if math.isinf(norm_type):
        norms = [np.max(np.abs(p.grad), initial=0.0) for p in params]
        total = max(float(n) for n in norms)
    else:
        norms = [np.sum(np.abs(p.grad.astype(np.float64)) ** norm_type) ** (1.0 / norm_type) for p in params]
        total = float(np.sum(np.asarray(norms) ** norm_type) ** (1.0 / norm_type))
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, "
                           "so it cannot be clipped. To disable this error and scale the gradients by the "
                           "non-finite norm anyway, set `error_if_nonfinite=False`")
    coef = min(max_norm / (total + 1e-6), 1.0) if not math.isnan(total) else float("nan")
    for p in params:
        p.grad = p.grad * p.grad.dtype.type(coef)
    return Tensor(np.array(total, dtype=dtype))


def clip_grad_value_(parameters, clip_value: float, foreach=None) -> None:
    """Clamp every gradient element to ``[-clip_value, clip_value]`` (new arrays in ``.grad``)."""
    clip_value = float(clip_value)
    for p in _grads(parameters):
        p.grad = np.clip(p.grad, -clip_value, clip_value).astype(p.grad.dtype, copy=False)
