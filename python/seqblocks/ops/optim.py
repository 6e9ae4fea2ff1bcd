"""In-place optimizer steps (PyTorch's single-tensor SGD and Adam/AdamW), fused per ISA.

Every array the step writes into must be C-contiguous, writable, of the param's dtype and shape;
anything else raises before a single element is written (a silent write into a temporary copy
would lose the update). grad is only read: other layouts are copied.
"""

from __future__ import annotations

import numpy as np

from .. import _core, reference
from .._backend import use_reference
from ._pairs import c_order
from ._checks import FLOAT_DTYPES, shape_str


def _target(arr, name: str, like: np.ndarray | None = None) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray updated in place, got {type(arr).__name__}")
    if arr.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float32 or float64, got {arr.dtype}")
    if like is not None:
        if arr.dtype != like.dtype:
            raise TypeError(f"{name}: expected dtype {like.dtype} (param's), got {arr.dtype}")
        if arr.shape != like.shape:
            raise ValueError(f"{name}: expected shape {shape_str(like.shape)} (param's), got {shape_str(arr.shape)}")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{name}: expected a C-contiguous array (it is updated in place), got strides {arr.strides}")
    if not arr.flags.writeable:
        raise ValueError(f"{name}: expected a writable array (it is updated in place), got a read-only one")
    return arr


def _grad(grad, param: np.ndarray) -> np.ndarray:
    g = grad if isinstance(grad, np.ndarray) else np.asarray(grad)
    if g.dtype != param.dtype:
        raise TypeError(f"grad: expected dtype {param.dtype} (param's), got {g.dtype}")
    if g.shape != param.shape:
        raise ValueError(f"grad: expected shape {shape_str(param.shape)} (param's), got {shape_str(g.shape)}")
    return c_order(g)


def sgd_step_(param, grad, momentum_buffer, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
              nesterov=False, maximize=False, first_step):
    """One SGD step on param (in place), as torch.optim.SGD: g = ±grad + wd param;
    buf = g on the first step else momentum buf + (1 - dampening) g; g = g + momentum buf if nesterov
    else buf; param -= lr g. momentum_buffer may be None when momentum == 0."""
    param = _target(param, "param")
    grad = _grad(grad, param)
    if momentum != 0:
        if momentum_buffer is None:
            raise ValueError("momentum_buffer: expected an array of param's shape when momentum != 0, got None")
        momentum_buffer = _target(momentum_buffer, "momentum_buffer", param)
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError(f"nesterov: expected momentum > 0 and dampening == 0, got momentum={momentum}, "
                         f"dampening={dampening}")
    if lr < 0:
        raise ValueError(f"lr: expected a value >= 0, got {lr}")
    if momentum < 0:
        raise ValueError(f"momentum: expected a value >= 0, got {momentum}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay: expected a value >= 0, got {weight_decay}")
    kwargs = dict(lr=float(lr), momentum=float(momentum), dampening=float(dampening),
                  weight_decay=float(weight_decay), nesterov=bool(nesterov), maximize=bool(maximize),
                  first_step=bool(first_step))
    if use_reference():
        reference.sgd_step_(param, grad, momentum_buffer if momentum != 0 else None, **kwargs)
        return
    _core.sgd_step_(param, grad, momentum_buffer if momentum != 0 else None, **kwargs)


def adam_step_(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, *, step, lr, beta1, beta2, eps,
               weight_decay=0.0, amsgrad=False, maximize=False, decoupled_weight_decay=False):
    """One Adam (or AdamW when decoupled_weight_decay) step on param, exp_avg, exp_avg_sq (and
    max_exp_avg_sq with amsgrad), in place, as torch.optim.Adam's single-tensor algorithm.
    ``step`` is the step count after this step (1 on the first)."""
    param = _target(param, "param")
    grad = _grad(grad, param)
    exp_avg = _target(exp_avg, "exp_avg", param)
    exp_avg_sq = _target(exp_avg_sq, "exp_avg_sq", param)
    if amsgrad:
        if max_exp_avg_sq is None:
            raise ValueError("max_exp_avg_sq: expected an array of param's shape when amsgrad=True, got None")
        max_exp_avg_sq = _target(max_exp_avg_sq, "max_exp_avg_sq", param)
    else:
        max_exp_avg_sq = None
    if isinstance(step, bool) or int(step) != step or step < 1:
        raise ValueError(f"step: expected an int >= 1 (the count after this step), got {step!r}")
    for name, value, lo, hi in (("beta1", beta1, 0.0, 1.0), ("beta2", beta2, 0.0, 1.0)):
        if not lo <= value < hi:
            raise ValueError(f"{name}: expected a value in [0, 1), got {value}")
    if lr < 0:
        raise ValueError(f"lr: expected a value >= 0, got {lr}")
    if eps < 0:
        raise ValueError(f"eps: expected a value >= 0, got {eps}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay: expected a value >= 0, got {weight_decay}")
    kwargs = dict(step=int(step), lr=float(lr), beta1=float(beta1), beta2=float(beta2), eps=float(eps),
                  weight_decay=float(weight_decay), amsgrad=bool(amsgrad), maximize=bool(maximize),
                  decoupled_weight_decay=bool(decoupled_weight_decay))
    if use_reference():
        reference.adam_step_(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, **kwargs)
        return
    _core.adam_step_(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, **kwargs)
