"""NumPy reference for the linear + activation pair: y = act(x @ W^T + b), act = relu | gelu (erf
or tanh form); the composition of the linear and activation references. And the feed-forward
pair, y = act(x @ W1^T + b1) @ W2^T + b2: linear + activation, then linear."""

from __future__ import annotations

from .activation import gelu_backward, gelu_forward, relu_backward, relu_forward
from .linear_pair import linear_backward, linear_forward

ACTIVATIONS = ("relu", "gelu", "gelu_tanh")


def linear_act_forward(x, weight, bias=None, activation: str = "relu", *, needs_grad: bool = True):
    """x (..., in), weight (out, in), bias (out,) or None -> y (..., out).

    Workspace: (linear workspace, activation name, activation workspace)."""
    z, lin_ws = linear_forward(x, weight, bias, needs_grad=needs_grad)
    if activation == "relu":
        y, act_ws = relu_forward(z, needs_grad=needs_grad)
    else:
        y, act_ws = gelu_forward(z, "none" if activation == "gelu" else "tanh", needs_grad=needs_grad)
    return y, ((lin_ws, activation, act_ws) if needs_grad else None)


def linear_act_backward(grad_output, workspace):
    """dy (..., out) -> (dx (..., in), dweight (out, in), dbias (out,) or None)."""
    lin_ws, activation, act_ws = workspace
    backward = relu_backward if activation == "relu" else gelu_backward
    (dz,) = backward(grad_output, act_ws)
    return linear_backward(dz, lin_ws)


def feed_forward_forward(x, weight1, bias1, weight2, bias2, activation: str = "relu", *, needs_grad: bool = True):
    """x (..., in), weight1 (hidden, in), weight2 (out, hidden), biases or None -> y (..., out).

    Workspace: (linear + activation workspace, second linear's workspace)."""
    h, ws1 = linear_act_forward(x, weight1, bias1, activation, needs_grad=needs_grad)
    y, ws2 = linear_forward(h, weight2, bias2, needs_grad=needs_grad)
    return y, ((ws1, ws2) if needs_grad else None)


def feed_forward_backward(grad_output, workspace):
    """dy (..., out) -> (dx, dweight1, dbias1, dweight2, dbias2); biases' gradients None without."""
    ws1, ws2 = workspace
    dh, dweight2, dbias2 = linear_backward(grad_output, ws2)
    dx, dweight1, dbias1 = linear_act_backward(dh, ws1)
    return dx, dweight1, dbias1, dweight2, dbias2
