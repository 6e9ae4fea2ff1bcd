"""NumPy reference for dropout with the counter-based mask of docs/ops.md.

Element i (C order) is kept iff u_i >= p, where
    u_i = (splitmix64(seed + i * 0x9E3779B97F4A7C15 mod 2^64) >> 40) * 2^-24
and splitmix64(z) is the finalizer z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27;
z *= 0x94D049BB133111EB; z ^= z >> 31 (all mod 2^64). Kept values are scaled by 1/(1-p)
(rounded to the array's dtype); y = x * f with f = 1/(1-p) or 0 (so a dropped NaN stays NaN, as in
PyTorch's input * mask * scale).
"""

from __future__ import annotations

import numpy as np

GOLDEN_GAMMA = 0x9E3779B97F4A7C15


def splitmix64(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.uint64, copy=True)
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def dropout_mask(n: int, p: float, seed: int) -> np.ndarray:
    """Boolean keep-mask of n elements."""
    i = np.arange(n, dtype=np.uint64)
    z = i * np.uint64(GOLDEN_GAMMA)
    z += np.uint64(seed % (1 << 64))
    u24 = splitmix64(z) >> np.uint64(40)
    # u = u24 * 2^-24 >= p  <=>  u24 >= p * 2^24 (exact: both sides are exact in float64)
    return u24.astype(np.float64) >= p * 16777216.0


def _factors(n: int, p: float, seed: int, dtype) -> np.ndarray:
    if p >= 1.0:
        return np.zeros(n, dtype)
    scale = dtype.type(1.0 / (1.0 - p))
    return np.where(dropout_mask(n, p, seed), scale, dtype.type(0))


def dropout_forward(x: np.ndarray, p: float = 0.5, training: bool = True, *, seed: int, needs_grad: bool = True):
    """y = x * f (f per element, see module doc); identity (a copy) when not training.

    Workspace: ("identity", shape, dtype) or ("mask", factors)."""
    if not training:
        return x.copy(), (("identity", x.shape, x.dtype) if needs_grad else None)
    f = _factors(x.size, p, seed, x.dtype).reshape(x.shape)
    return x * f, (("mask", f) if needs_grad else None)


def dropout_backward(grad_output: np.ndarray, workspace):
    """dx = dy * f."""
    if workspace[0] == "identity":
        return (grad_output.copy(),)
    return (grad_output * workspace[1],)
