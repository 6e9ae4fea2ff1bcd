"""SGD with momentum, dampening, weight decay, Nesterov and maximize (PyTorch's algorithm),
one fused in-place ``ops.sgd_step_`` per parameter."""

from __future__ import annotations

import numpy as np

from .. import ops
from .optimizer import Optimizer, _required

__all__ = ["SGD"]


class SGD(Optimizer):
    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False,
                 foreach=None, differentiable: bool = False, fused=None) -> None:
        if lr is not _required and lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize))

    def _update(self, p, grad, group, state) -> None:
        momentum = group["momentum"]
        buf = state.get("momentum_buffer")
        first = buf is None
        if momentum != 0 and first:
            buf = np.zeros_like(p.data)
        ops.sgd_step_(p.data, grad, buf if momentum != 0 else None, lr=group["lr"], momentum=momentum,
                      dampening=group["dampening"], weight_decay=group["weight_decay"], nesterov=group["nesterov"],
                      maximize=group["maximize"], first_step=first)
        if momentum != 0:
            state["momentum_buffer"] = buf
