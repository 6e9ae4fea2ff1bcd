"""The one tolerance policy used to compare seqblocks against its references.

A result is accepted when, element-wise,

    |actual - expected| <= factor * eps(dtype) * magnitude + tiny(dtype)

where ``magnitude`` is what the rounding errors of the computation scale with (``|expected|`` by
default; for a sum or product of ``k`` terms the caller passes the sum of absolute terms, e.g.
``|A| @ |B|`` for a matrix product, and ``factor`` grows with ``sqrt(k)``), and ``tiny`` is the
smallest normal number (results below it may be flushed to zero by the kernels).
NaN must match NaN and infinities must match exactly.
"""

from __future__ import annotations

import math

import numpy as np

#: Rounding-error growth assumed for a k-term sum: a few units of eps times sqrt(k).
SUM_FACTOR = 4.0


def sum_factor(k: int) -> float:
    """Tolerance factor for results that are sums of ``k`` rounded products."""
    return SUM_FACTOR * math.sqrt(max(k, 1)) + 2.0


def assert_close(actual, expected, *, magnitude=None, factor: float = 4.0, dtype=None,
                 what: str = "result") -> None:
    """Raise AssertionError naming the worst element if ``actual`` is not within the policy."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {actual.shape} != expected {expected.shape}")
    dtype = np.dtype(dtype or actual.dtype)
    finfo = np.finfo(dtype)
    exp64 = expected.astype(np.float64)
    act64 = actual.astype(np.float64)
    nan_a, nan_e = np.isnan(act64), np.isnan(exp64)
    if not np.array_equal(nan_a, nan_e):
        idx = np.argwhere(nan_a != nan_e)[0]
        raise AssertionError(f"{what}: NaN mismatch at {tuple(idx)}: {act64[tuple(idx)]} vs {exp64[tuple(idx)]}")
    inf_e = np.isinf(exp64)
    if not np.array_equal(act64[inf_e], exp64[inf_e]) or np.isinf(act64[~inf_e & ~nan_e]).any():
        raise AssertionError(f"{what}: infinities differ")
    finite = ~nan_e & ~inf_e
    mag = np.abs(exp64) if magnitude is None else np.broadcast_to(np.abs(np.asarray(magnitude, np.float64)), exp64.shape)
    err = np.abs(act64 - exp64)
    bound = factor * float(finfo.eps) * mag + float(finfo.tiny)
    bad = finite & ~(err <= bound)
    if bad.any():
        ratio = np.where(finite, err / bound, 0.0)
        idx = np.unravel_index(np.argmax(ratio), ratio.shape)
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} elements out of tolerance; worst at {tuple(idx)}: "
            f"actual {act64[idx]!r}, expected {exp64[idx]!r}, error {err[idx]:.3g} > bound {bound[idx]:.3g} "
            f"(factor {factor:g} x eps({dtype}) x magnitude {mag[idx]:.3g})"
        )


def gradcheck(forward, backward, arrays, *, eps: float = 1e-6, rtol: float = 1e-6, atol: float = 1e-9,
              seed: int = 0, what: str = "gradient") -> None:
    """Check an ops forward/backward pair against central finite differences, in float64.

    forward(*arrays) -> (out, workspace), out an array or a tuple of arrays;
    backward(grad_out, workspace) -> one gradient per entry of ``arrays`` (None = not
    differentiable, skipped). A random ``grad_out`` defines the scalar L = sum(out * grad_out);
    each analytic gradient must match dL/d(array) by central differences elementwise within
    ``atol + rtol * max|numeric|``.
    """
    arrays = [np.array(a, dtype=np.float64) if np.asarray(a).dtype.kind == "f" else np.asarray(a) for a in arrays]
    rng = np.random.default_rng(seed)
    out, workspace = forward(*arrays)
    outs = out if isinstance(out, tuple) else (out,)
    grad_outs = tuple(rng.standard_normal(np.shape(o)) for o in outs)
    grads = backward(grad_outs if isinstance(out, tuple) else grad_outs[0], workspace)
    if len(grads) != len(arrays):
        raise AssertionError(f"{what}: backward returned {len(grads)} gradients for {len(arrays)} inputs")

    def loss() -> float:
        o, _ = forward(*arrays)
        o = o if isinstance(o, tuple) else (o,)
        return float(sum(np.sum(np.asarray(a, np.float64) * g) for a, g in zip(o, grad_outs)))

    for index, (array, grad) in enumerate(zip(arrays, grads)):
        if grad is None:
            continue
        grad = np.asarray(grad)
        if grad.shape != array.shape:
            raise AssertionError(f"{what}: gradient {index} has shape {grad.shape}, input has {array.shape}")
        numeric = np.zeros_like(array)
        flat, num_flat = array.reshape(-1), numeric.reshape(-1)
        for i in range(flat.size):
            saved = flat[i]
            flat[i] = saved + eps
            plus = loss()
            flat[i] = saved - eps
            minus = loss()
            flat[i] = saved
            num_flat[i] = (plus - minus) / (2 * eps)
        bound = atol + rtol * max(float(np.abs(numeric).max(initial=0.0)), 1.0)
        err = np.abs(grad - numeric)
        if not (err <= bound).all():
            i = np.unravel_index(np.argmax(err), err.shape)
            raise AssertionError(f"{what}: input {index} at {tuple(i)}: analytic {grad[i]!r}, numeric {numeric[i]!r}, "
                                 f"error {err[i]:.3g} > {bound:.3g}")
