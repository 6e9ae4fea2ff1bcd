"""Helpers shared by the Python-layer tests: finite-difference checks through the autograd tape,
and torch/NumPy conversion."""

from __future__ import annotations

import numpy as np

import seqblocks
from seqblocks.testing import gradcheck


def tape_gradcheck(fn, *arrays, what="tape gradient", differentiable=None, **kwargs):
    """``seqblocks.testing.gradcheck`` of ``fn(*tensors) -> Tensor`` through the tape, in float64.

    Float arrays become leaf tensors requiring grad (unless ``differentiable[i]`` is False), other
    arguments are passed through; the analytic gradients are the leaves' ``.grad`` after
    ``out.backward(grad_out)``.
    """
    def make(arrs):
        leaves = []
        for i, a in enumerate(arrs):
            diff = isinstance(a, np.ndarray) and a.dtype.kind == "f" and (differentiable is None or differentiable[i])
            leaves.append(seqblocks.tensor(a, requires_grad=True) if diff else a)
        return leaves

    def forward(*arrs):
        leaves = make(arrs)
        out = fn(*leaves)
        return out.data, (leaves, out)

    def backward(grad_out, ws):
        leaves, out = ws
        out.backward(grad_out)
        return [l.grad if isinstance(l, seqblocks.Tensor) else None for l in leaves]

    gradcheck(forward, backward, list(arrays), what=what, **kwargs)


def to_numpy(t):
    return t.detach().cpu().numpy()


def assert_same(actual, expected, k: int = 1, what: str = "result"):
    """Two float32 (or float64) computations of the same quantity, each rounding a ``k``-term
    sum: policy of ``assert_close`` with magnitude |expected| + rms(expected) (the size of the
    terms that were added, where results cancel) and factor ``2 * sum_factor(k)`` (both sides
    carry rounding error)."""
    from seqblocks.testing import assert_close, sum_factor

    actual = np.asarray(actual)
    expected = np.asarray(expected)
    e64 = expected.astype(np.float64)
    rms = float(np.sqrt(np.mean(e64 ** 2))) if e64.size else 0.0
    assert_close(actual, expected, magnitude=np.abs(e64) + rms, factor=2 * sum_factor(k), what=what)
