"""NumPy reference for ``seqblocks.ops.add_layer_norm_forward`` / ``add_layer_norm_backward``:

    s = x + residual,  y = layer_norm(s, normalized_shape, weight, bias, eps)
    backward (dy, ds or None):  dx = dresidual = layer_norm_backward(dy at s) + ds

Layer norm's formulas are in ``seqblocks.reference.layer_norm`` (float64, rounded to the dtype).
``s`` is rounded to the input dtype before it is normalized, as the native kernel does.
"""

from __future__ import annotations

import numpy as np

from .layer_norm import layer_norm_backward, layer_norm_forward


def add_layer_norm_forward(x, residual, normalized_shape, weight=None, bias=None, eps=1e-5, *, needs_grad=True,
                           in_place=False):
    """x, residual (..., *normalized_shape), same shape; weight, bias (*normalized_shape) or None.

    Returns ((y, s), workspace); workspace is None when ``needs_grad`` is false. ``in_place``
    (with needs_grad False): y is written into ``residual`` and returned as y; s is None.
    """
    s = np.add(x, residual, dtype=x.dtype)
    y, ln_ws = layer_norm_forward(s, normalized_shape, weight, bias, eps, needs_grad=needs_grad)
    if in_place:
        residual[...] = y
        return (residual, None), None
    if not needs_grad:
        return (y, s), None
    return (y, s), {"op": "add_layer_norm", "backend": "numpy", "s": s, "ln": ln_ws}


def add_layer_norm_backward(grad_output, workspace):
    """grad_output = (dy, ds or None) -> (dx, dresidual, dweight or None, dbias or None);
    dresidual is dx (the same array: the two gradients are equal)."""
    dy, ds = grad_output
    dx, dw, db = layer_norm_backward(dy, workspace["ln"])
    if ds is not None:
        dx = (dx.astype(np.float64) + np.asarray(ds, np.float64)).astype(dx.dtype)
    return dx, dx, dw, db
