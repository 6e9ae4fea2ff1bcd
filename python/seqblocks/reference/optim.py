"""NumPy reference for the in-place optimizer steps: PyTorch's single-tensor SGD and Adam/AdamW,
in the same order of operations, in the arrays' dtype."""

from __future__ import annotations

import numpy as np


def sgd_step_(param, grad, momentum_buffer, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
              nesterov=False, maximize=False, first_step):
    """g = ±grad + wd * param; buf = g (first step) or momentum * buf + (1 - dampening) * g;
    g = g + momentum * buf (nesterov) or buf; param -= lr * g."""
    t = param.dtype.type
    g = -grad if maximize else grad
    if weight_decay != 0:
        g = g + t(weight_decay) * param
    if momentum != 0:
        if first_step:
            momentum_buffer[...] = g
        else:
            momentum_buffer *= t(momentum)
            momentum_buffer += t(1 - dampening) * g
        g = g + t(momentum) * momentum_buffer if nesterov else momentum_buffer
    param -= t(lr) * g


def adam_step_(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, *, step, lr, beta1, beta2, eps,
               weight_decay=0.0, amsgrad=False, maximize=False, decoupled_weight_decay=False):
    """PyTorch's _single_tensor_adam (non-capturable path), step = count after this step."""
    t = param.dtype.type
    g = -grad if maximize else grad
    if weight_decay != 0:
        if decoupled_weight_decay:
            param *= t(1 - lr * weight_decay)
        else:
            g = g + t(weight_decay) * param
    exp_avg += t(1 - beta1) * (g - exp_avg)
    exp_avg_sq *= t(beta2)
    exp_avg_sq += t(1 - beta2) * (g * g)
    bias_correction1 = 1 - beta1**step
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5
    step_size = lr / bias_correction1
    if amsgrad:
        np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        v = max_exp_avg_sq
    else:
        v = exp_avg_sq
    denom = np.sqrt(v) / t(bias_correction2_sqrt) + t(eps)
    param += t(-step_size) * (exp_avg / denom)
