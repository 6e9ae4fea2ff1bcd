"""Numerical coverage of the native GEMM kernels (cpp/gemm/) on every ISA this CPU runs.

Shapes are chosen to hit the micro-kernel edges (tile heights 4/6/14, widths 4..32, KC blocks),
the unpacked paths (small m with B read in place; x @ W^T dot products) and the threaded split.
The reference is NumPy in float64; the tolerance is one policy:
    |ours - ref| <= 8 * sqrt(k) * eps(dtype) * (max|A| * max|B| * sqrt(k) + |beta| * max|C| + max|bias|)
(the sqrt(k) * eps factor bounds the accumulated rounding of a length-k dot product).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided

import seqblocks
from seqblocks import ops

ISAS = seqblocks.available_isas()
DTYPES = [np.float32, np.float64]
EDGE = [1, 3, 7, 15, 16, 17, 31, 33, 63, 65, 127, 129]


def _tol(dt, k, a, b, c=None, beta=0.0, bias=None):
    eps = np.finfo(dt).eps
    mag = (np.abs(a).max(initial=0) * np.abs(b).max(initial=0)) * np.sqrt(max(k, 1))
    if c is not None:
        mag += abs(beta) * np.abs(c).max(initial=0)
    if bias is not None:
        mag += np.abs(bias).max(initial=0)
    return 8 * np.sqrt(max(k, 1)) * eps * (mag + np.finfo(dt).tiny)


def _check(got, ref, tol):
    assert got.shape == ref.shape
    err = np.abs(got.astype(np.float64) - ref).max(initial=0)
    assert err <= tol, f"max abs error {err:.3g} > tolerance {tol:.3g}"


def _rand(rng, shape, dt):
    return rng.standard_normal(shape).astype(dt)


def _sweep(seed, count):
    """A fixed pseudo-random subset of the edge-size cube (the full cube is too slow for 3 ISAs)."""
    rng = np.random.default_rng(seed)
    cube = list(itertools.product(EDGE, EDGE, EDGE))
    picks = rng.choice(len(cube), size=count, replace=False)
    return [cube[i] for i in picks]


@pytest.fixture(params=ISAS)
def isa(request):
    with seqblocks.use_isa(request.param):
        yield request.param


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("m,n,k", _sweep(0, 40) + [(1000, 33, 17), (17, 1000, 65), (65, 63, 1000)])
def test_matmul_edges(isa, dt, m, n, k):
    rng = np.random.default_rng(m * 10007 + n * 101 + k)
    a, b = _rand(rng, (m, k), dt), _rand(rng, (k, n), dt)
    _check(ops.matmul(a, b), a.astype(np.float64) @ b, _tol(dt, k, a, b))


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("m,n,k", _sweep(1, 24))
@pytest.mark.parametrize("trans_a,trans_b", [(False, True), (True, False), (True, True)])
def test_transposed_views(isa, dt, m, n, k, trans_a, trans_b):
    rng = np.random.default_rng(m + 7 * n + 13 * k)
    a = _rand(rng, (k, m), dt).T if trans_a else _rand(rng, (m, k), dt)
    b = _rand(rng, (n, k), dt).T if trans_b else _rand(rng, (k, n), dt)
    _check(ops.matmul(a, b), a.astype(np.float64) @ b, _tol(dt, k, a, b))


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("m,n,k", [(1, 2048, 512), (4, 129, 512), (16, 65, 33), (33, 17, 129),
                                   (64, 300, 512), (65, 31, 7), (127, 33, 1000)])
def test_linear_bias(isa, dt, m, n, k):
    rng = np.random.default_rng(m * n + k)
    x, w, bias = _rand(rng, (m, k), dt), _rand(rng, (n, k), dt), _rand(rng, (n,), dt)
    ref = x.astype(np.float64) @ w.T.astype(np.float64) + bias
    _check(ops.linear(x, w, bias), ref, _tol(dt, k, x, w, bias=bias))


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("m,n,k", [(3, 7, 15), (17, 33, 400), (129, 65, 385), (16, 16, 16)])
@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (0.5, 1.0), (-2.0, 0.25), (1.0, -1.0)])
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, True)])
def test_gemm_alpha_beta(isa, dt, m, n, k, alpha, beta, trans_a, trans_b):
    rng = np.random.default_rng(m + n + k)
    a = _rand(rng, (k, m) if trans_a else (m, k), dt)
    b = _rand(rng, (n, k) if trans_b else (k, n), dt)
    c = _rand(rng, (m, n), dt)
    opa = a.T if trans_a else a
    opb = b.T if trans_b else b
    ref = alpha * (opa.astype(np.float64) @ opb) + beta * c
    got = ops.gemm(a, b, c, alpha=alpha, beta=beta, trans_a=trans_a, trans_b=trans_b)
    _check(got, ref, _tol(dt, k, a, b, c, beta) * max(1.0, abs(alpha)))


@pytest.mark.parametrize("dt", DTYPES)
def test_beta_zero_ignores_nan_in_c(isa, dt):
    rng = np.random.default_rng(5)
    a, b = _rand(rng, (17, 33), dt), _rand(rng, (33, 31), dt)
    c = np.full((17, 31), np.nan, dt)
    got = ops.gemm(a, b, c, alpha=1.0, beta=0.0)
    _check(got, a.astype(np.float64) @ b, _tol(dt, 33, a, b))


@pytest.mark.parametrize("dt", DTYPES)
def test_alpha_zero_does_not_read_a_b(isa, dt):
    # BLAS semantics: alpha == 0 gives beta * C without forming A @ B (Inf/NaN in A stay out).
    a = np.full((9, 17), np.inf, dt)
    b = np.ones((17, 33), dt)
    c = np.arange(9 * 33, dtype=dt).reshape(9, 33)
    np.testing.assert_array_equal(ops.gemm(a, b, c, alpha=0.0, beta=2.0), 2 * c)


@pytest.mark.parametrize("dt", DTYPES)
def test_non_contiguous_slices(isa, dt):
    rng = np.random.default_rng(6)
    big_a, big_b = _rand(rng, (80, 90), dt), _rand(rng, (100, 70), dt)
    a = big_a[3:70, 5:82]  # 67 x 77, row stride 90
    b = big_b[10:87, 1:66]  # 77 x 65, row stride 70
    _check(ops.matmul(a, b), a.astype(np.float64) @ b, _tol(dt, 77, a, b))
    a2 = big_a[::2, ::3]  # neither row- nor column-major: copied by the binding
    b2 = big_b[:30, :41]
    _check(ops.matmul(a2, b2), a2.astype(np.float64) @ b2, _tol(dt, 30, a2, b2))


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("batch,m,n,k", [(5, 7, 33, 17), (3, 65, 17, 129), (64, 4, 4, 4), (1, 31, 15, 63)])
def test_batched_and_broadcast(isa, dt, batch, m, n, k):
    rng = np.random.default_rng(batch * m + n * k)
    a, b = _rand(rng, (batch, m, k), dt), _rand(rng, (batch, k, n), dt)
    tol = _tol(dt, k, a, b)
    _check(ops.matmul(a, b), a.astype(np.float64) @ b, tol)
    b2 = _rand(rng, (k, n), dt)  # shared 2-D B
    _check(ops.matmul(a, b2), a.astype(np.float64) @ b2, _tol(dt, k, a, b2))
    a1 = _rand(rng, (1, m, k), dt)  # batch of 1 broadcast over b's batch
    _check(ops.matmul(a1, b), a1.astype(np.float64) @ b, _tol(dt, k, a1, b))
    bt = np.swapaxes(_rand(rng, (batch, n, k), dt), 1, 2)  # batched transposed views
    _check(ops.matmul(a, bt), a.astype(np.float64) @ bt, _tol(dt, k, a, bt))


def _empty(rows, cols, dt):
    # NumPy gives zero-size arrays zero strides; give them C-order strides so the binding sees
    # an ordinary row-major operand and the kernel's k == 0 path is what is tested.
    return as_strided(np.zeros(1, dt), shape=(rows, cols),
                      strides=(max(cols, 1) * np.dtype(dt).itemsize, np.dtype(dt).itemsize))


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("m,n", [(5, 7), (17, 33), (1, 1)])
def test_k_zero(isa, dt, m, n):
    a, b = _empty(m, 0, dt), _empty(0, n, dt)
    np.testing.assert_array_equal(ops.matmul(a, b), np.zeros((m, n)))
    c = np.arange(m * n, dtype=dt).reshape(m, n)
    np.testing.assert_array_equal(ops.gemm(a, b, c, alpha=2.0, beta=0.5), 0.5 * c)
    np.testing.assert_array_equal(ops.gemm(a, b, np.full((m, n), np.nan, dt), beta=0.0), np.zeros((m, n)))


@pytest.mark.parametrize("dt", DTYPES)
def test_empty_outputs(isa, dt):
    assert ops.matmul(_empty(0, 5, dt), np.zeros((5, 3), dt)).shape == (0, 3)
    assert ops.matmul(np.zeros((4, 5), dt), _empty(5, 0, dt)).shape == (4, 0)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("m,n,k,trans_b", [(300, 257, 129, False), (1, 2048, 512, True),
                                           (64, 2048, 512, True), (129, 65, 800, True),
                                           # more than one MC, NC and KC block on one thread
                                           (2030, 650, 400, True)])
def test_bit_identical_across_thread_counts(isa, dt, m, n, k, trans_b):
    rng = np.random.default_rng(7)
    a = _rand(rng, (m, k), dt)
    b = _rand(rng, (n, k), dt) if trans_b else _rand(rng, (k, n), dt)
    opb = b.T if trans_b else b
    before = seqblocks.get_num_threads()
    try:
        results = []
        for nt in (1, 2, 3):
            seqblocks.set_num_threads(nt)
            results.append(ops.matmul(a, opb))
    finally:
        seqblocks.set_num_threads(before)
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    _check(results[0], a.astype(np.float64) @ opb, _tol(dt, k, a, opb))
