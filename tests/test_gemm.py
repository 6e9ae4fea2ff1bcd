"""seqblocks.ops.matmul / linear / gemm: parity with the NumPy reference on every ISA, layouts,
broadcasting, zero sizes, NaN/inf, thread-count invariance and bad input."""

import concurrent.futures

import numpy as np
import pytest

import seqblocks
from seqblocks import ops, reference
from seqblocks.testing import assert_close, sum_factor

DTYPES = [np.float32, np.float64]
TAILS = [1, 3, 7, 15, 16, 17, 31, 33, 63, 65, 127, 129]


def check_product(actual, a, b, k, what="matmul"):
    """Compare with the float64 product, tolerance scaled by |a| @ |b| and sqrt(k)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    assert_close(actual, a64 @ b64, magnitude=np.abs(a64) @ np.abs(b64), factor=sum_factor(k),
                 dtype=actual.dtype, what=what)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,n,k", [(t, 17, 33) for t in TAILS] + [(15, t, 16) for t in TAILS]
                         + [(33, 31, t) for t in TAILS] + [(1000, 65, 127), (129, 1000, 63)])
def test_matmul_tail_shapes(isa, rng, dtype, m, n, k):
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    c = ops.matmul(a, b)
    assert c.dtype == dtype and c.shape == (m, n)
    check_product(c, a, b, k)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["aT", "bT", "both_T", "row_slice", "col_slice", "fortran", "reversed"])
def test_matmul_layouts(isa, rng, dtype, layout):
    m, n, k = 37, 45, 29
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    if layout == "aT":
        a = np.ascontiguousarray(a.T).T
    elif layout == "bT":
        b = np.ascontiguousarray(b.T).T
    elif layout == "both_T":
        a, b = np.ascontiguousarray(a.T).T, np.ascontiguousarray(b.T).T
    elif layout == "row_slice":
        a = rng.standard_normal((2 * m, k + 5)).astype(dtype)[::2, 2:2 + k]
    elif layout == "col_slice":
        b = rng.standard_normal((k, 2 * n)).astype(dtype)[:, ::2]
    elif layout == "fortran":
        a, b = np.asfortranarray(a), np.asfortranarray(b)
    elif layout == "reversed":
        a, b = a[::-1], b[:, ::-1]
    check_product(ops.matmul(a, b), a, b, k)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", [((4, 9, 7), (4, 7, 5)), ((4, 9, 7), (7, 5)), ((9, 7), (4, 7, 5)),
                                    ((1, 9, 7), (4, 7, 5)), ((4, 9, 7), (1, 7, 5)), ((3, 1, 33), (3, 33, 17))])
def test_matmul_batched_and_broadcast(isa, rng, dtype, shapes):
    a = rng.standard_normal(shapes[0]).astype(dtype)
    b = rng.standard_normal(shapes[1]).astype(dtype)
    c = ops.matmul(a, b)
    expected = reference.matmul(a, b)
    assert c.shape == expected.shape
    k = a.shape[-1]
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    assert_close(c, a64 @ b64, magnitude=np.abs(a64) @ np.abs(b64), factor=sum_factor(k))


def test_matmul_batched_transposed_views(isa, rng):
    a = rng.standard_normal((3, 20, 11)).astype(np.float32).transpose(0, 2, 1)  # (3, 11, 20)
    b = rng.standard_normal((3, 13, 20)).astype(np.float32).transpose(0, 2, 1)  # (3, 20, 13)
    check_product(ops.matmul(a, b), a, b, 20)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape", [(7,), (1, 33), (4, 33), (2, 3, 33), (2, 3, 5, 33)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_leading_shapes(isa, rng, dtype, x_shape, with_bias):
    x = rng.standard_normal(x_shape).astype(dtype)
    in_features = x_shape[-1]
    w = rng.standard_normal((17, in_features)).astype(dtype)
    bias = rng.standard_normal(17).astype(dtype) if with_bias else None
    y = ops.linear(x, w, bias)
    assert y.shape == x_shape[:-1] + (17,) and y.dtype == dtype
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    expected = reference.linear(x64, w64, None if bias is None else bias.astype(np.float64))
    magnitude = np.abs(x64) @ np.abs(w64).T + (0 if bias is None else np.abs(bias))
    assert_close(y, expected, magnitude=magnitude, factor=sum_factor(in_features))


@pytest.mark.parametrize("rows", [1, 4, 16, 64])
def test_linear_rnn_step_shapes(isa, rng, rows):
    x = rng.standard_normal((rows, 512)).astype(np.float32)
    w = rng.standard_normal((2048, 512)).astype(np.float32)
    bias = rng.standard_normal(2048).astype(np.float32)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    assert_close(ops.linear(x, w, bias), x64 @ w64.T + bias, magnitude=np.abs(x64) @ np.abs(w64).T + np.abs(bias),
                 factor=sum_factor(512))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,out_features,in_features",
                         [(1, n, 512) for n in (1, 3, 7, 17, 33, 129, 1000)]
                         + [(1, 2048, k) for k in (32, 33, 100)] + [(3, 65, 97), (16, 1000, 64)])
def test_repeated_gemv_is_identical_in_both_walk_directions(isa, rng, dtype, rows, out_features, in_features):
    """The dot path walks W forwards and backwards on alternate calls (and splits it per thread):
    every call, at every thread count, gives the same bits, and they are correct."""
    x = rng.standard_normal((rows, in_features)).astype(dtype)
    w = rng.standard_normal((out_features, in_features)).astype(dtype)
    bias = rng.standard_normal(out_features).astype(dtype)
    seqblocks.set_num_threads(1)
    first = ops.linear(x, w, bias)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    assert_close(first, x64 @ w64.T + bias, magnitude=np.abs(x64) @ np.abs(w64).T + np.abs(bias),
                 factor=sum_factor(in_features))
    for threads in (1, 2, 3):
        seqblocks.set_num_threads(threads)
        for _ in range(3):
            np.testing.assert_array_equal(ops.linear(x, w, bias), first)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (0.5, 1.0), (-2.0, 0.25)])
def test_gemm_alpha_beta_transposes(isa, rng, dtype, trans_a, trans_b, alpha, beta):
    m, n, k = 19, 23, 35
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    c = rng.standard_normal((m, n)).astype(dtype)
    out = ops.gemm(a, b, c, alpha=alpha, beta=beta, trans_a=trans_a, trans_b=trans_b)
    expected = reference.gemm(a.astype(np.float64), b.astype(np.float64), c.astype(np.float64),
                              alpha=alpha, beta=beta, trans_a=trans_a, trans_b=trans_b)
    op_a = np.abs(a.T if trans_a else a).astype(np.float64)
    op_b = np.abs(b.T if trans_b else b).astype(np.float64)
    assert_close(out, expected, magnitude=abs(alpha) * (op_a @ op_b) + abs(beta) * np.abs(c),
                 factor=sum_factor(k))
    assert out is not c


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [63, 65, 127, 129, 255, 257, 511, 512, 513])
@pytest.mark.parametrize("trans_a", [False, True])
def test_gemm_around_the_in_place_a_limit(isa, rng, dtype, n, trans_a):
    """n on both sides of the widths up to which a row-major A is read in place instead of packed
    (16 B micro-panels: 512 columns on AVX-512 float, 256 on AVX-512 double and AVX2 float, 128
    on AVX2 double), with m not a multiple of any panel height, a k longer than one cache block,
    alpha and beta, for both layouts of A."""
    m, k = 45, 600
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    c = rng.standard_normal((m, n)).astype(dtype)
    out = ops.gemm(a, b, c, alpha=0.5, beta=1.0, trans_a=trans_a)
    expected = reference.gemm(a.astype(np.float64), b.astype(np.float64), c.astype(np.float64),
                              alpha=0.5, beta=1.0, trans_a=trans_a)
    op_a = np.abs(a.T if trans_a else a).astype(np.float64)
    assert_close(out, expected, magnitude=0.5 * (op_a @ np.abs(b).astype(np.float64)) + np.abs(c),
                 factor=sum_factor(k))


def test_gemm_beta_zero_ignores_nan_in_c(isa, rng):
    a = rng.standard_normal((5, 6)).astype(np.float32)
    b = rng.standard_normal((6, 7)).astype(np.float32)
    c = np.full((5, 7), np.nan, np.float32)
    assert np.isfinite(ops.gemm(a, b, c, beta=0.0)).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_size_dimensions(isa, dtype):
    assert ops.matmul(np.ones((0, 5), dtype), np.ones((5, 3), dtype)).shape == (0, 3)
    assert ops.matmul(np.ones((4, 5), dtype), np.ones((5, 0), dtype)).shape == (4, 0)
    empty_k = ops.matmul(np.ones((4, 0), dtype), np.ones((0, 3), dtype))
    assert empty_k.shape == (4, 3) and (empty_k == 0).all()
    assert ops.matmul(np.ones((0, 4, 5), dtype), np.ones((5, 3), dtype)).shape == (0, 4, 3)
    bias = np.arange(3, dtype=dtype)
    y = ops.linear(np.ones((2, 0), dtype), np.ones((3, 0), dtype), bias)
    np.testing.assert_array_equal(y, np.broadcast_to(bias, (2, 3)))
    assert ops.linear(np.ones((0, 5), dtype), np.ones((3, 5), dtype), bias).shape == (0, 3)


def test_nan_and_inf_propagate(isa, rng):
    a = rng.uniform(0.5, 1.0, (20, 40)).astype(np.float32)
    b = rng.uniform(0.5, 1.0, (40, 33)).astype(np.float32)
    a[3, 7] = np.nan
    a[5, 1] = np.inf
    b[2, 30] = -np.inf
    c = ops.matmul(a, b)
    with np.errstate(invalid="ignore"):
        expected = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(c), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(c), np.isposinf(expected))
    np.testing.assert_array_equal(np.isneginf(c), np.isneginf(expected))
    assert np.isnan(c[3]).all() and np.isnan(c[5, 30])


def test_results_do_not_depend_on_thread_count(isa, rng):
    a = rng.standard_normal((301, 257)).astype(np.float32)
    b = rng.standard_normal((257, 299)).astype(np.float32)
    seqblocks.set_num_threads(1)
    one = ops.matmul(a, b)
    seqblocks.set_num_threads(2)
    two = ops.matmul(a, b)
    seqblocks.set_num_threads(3)
    three = ops.matmul(a, b)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(one, three)


@pytest.mark.parametrize("dtype", DTYPES)
def test_two_thread_halves_are_bit_identical_whoever_computes_a_block(rng, dtype):
    """At two threads a product is cut in two rectangles, one per thread, and the thread that
    finishes first computes chunks of the other's blocks (its PairShare queue); every tile must
    come out as on one thread. Cuts along M and along N, two matrices of a batch, several K
    blocks (k > 384) and column blocks (n > 384), transposed operands, partial chunks and
    panels, alpha/beta, bias and the activation epilogue; repeated, since who helps with what
    varies from call to call."""
    from seqblocks.ops.linear_act import linear_act_forward

    a = rng.standard_normal((1031, 389)).astype(dtype)
    b = rng.standard_normal((389, 1157)).astype(dtype)
    c = rng.standard_normal((1031, 1157)).astype(dtype)
    batch_a = rng.standard_normal((2, 301, 401)).astype(dtype)
    batch_b = rng.standard_normal((2, 401, 499)).astype(dtype)
    w = (rng.standard_normal((1157, 389)) / 20).astype(dtype)
    bias = rng.standard_normal(1157).astype(dtype)

    def products():
        return [ops.gemm(a, b, c, alpha=0.5, beta=-1.0),
                ops.gemm(a.T.copy(), b, trans_a=True),
                ops.gemm(a, b.T.copy(), trans_b=True),
                ops.matmul(w, b[:, :397].copy()),  # m > n: cut along M (the others, along N)
                ops.matmul(batch_a, batch_b),
                ops.linear(a, w, bias),
                linear_act_forward(a, w, bias, "gelu", needs_grad=False)[0]]

    before = seqblocks.get_num_threads()
    try:
        seqblocks.set_num_threads(1)
        want = products()
        seqblocks.set_num_threads(2)
        runs = [products() for _ in range(4)]
    finally:
        seqblocks.set_num_threads(before)
    for got in runs:
        for g, e in zip(got, want):
            np.testing.assert_array_equal(g, e)


def test_concurrent_calls_from_python_threads(rng):
    mats = [(rng.standard_normal((96, 80)).astype(np.float32), rng.standard_normal((80, 70)).astype(np.float32))
            for _ in range(8)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda ab: ops.matmul(*ab), mats * 4))
    for (a, b), c in zip(mats * 4, results):
        check_product(c, a, b, 80)


def test_inputs_are_not_modified(rng):
    a = rng.standard_normal((8, 9)).astype(np.float32)
    b = rng.standard_normal((9, 4)).astype(np.float32)
    c = rng.standard_normal((8, 4)).astype(np.float32)
    copies = [a.copy(), b.copy(), c.copy()]
    ops.gemm(a, b, c, alpha=2.0, beta=3.0)
    for before, after in zip(copies, [a, b, c]):
        np.testing.assert_array_equal(before, after)


# --- bad input -----------------------------------------------------------------------------

def test_one_dimensional_operand_raises():
    with pytest.raises(ValueError, match=r"a: expected a 2-D or 3-D array, got shape \(5,\)"):
        ops.matmul(np.ones(5, np.float32), np.ones((5, 2), np.float32))
    with pytest.raises(ValueError, match=r"b: expected a 2-D or 3-D array, got shape \(2, 3, 4, 5\)"):
        ops.matmul(np.ones((5, 2), np.float32), np.ones((2, 3, 4, 5), np.float32))


def test_mismatched_inner_dimensions_raise():
    with pytest.raises(ValueError, match=r"b: expected 3 rows .*\(4, 3\).*got shape \(4, 2\)"):
        ops.matmul(np.ones((4, 3), np.float32), np.ones((4, 2), np.float32))
    with pytest.raises(ValueError, match=r"x: expected last dimension 5 .*got shape \(2, 4\)"):
        ops.linear(np.ones((2, 4), np.float32), np.ones((3, 5), np.float32))
    with pytest.raises(ValueError, match=r"bias: expected shape \(3,\), got \(4,\)"):
        ops.linear(np.ones((2, 5), np.float32), np.ones((3, 5), np.float32), np.ones(4, np.float32))
    with pytest.raises(ValueError, match=r"batch size 4"):
        ops.matmul(np.ones((4, 2, 3), np.float32), np.ones((3, 3, 2), np.float32))


@pytest.mark.parametrize("bad", [np.ones((3, 3), np.int64), np.ones((3, 3), np.float16),
                                 np.array([[object()] * 3] * 3), np.ones((3, 3), np.complex64),
                                 [[1, 2, 3]] * 3])
def test_non_float_dtypes_raise_type_error(bad):
    with pytest.raises(TypeError, match=r"a: expected a float32 or float64 array, got dtype"):
        ops.matmul(bad, np.ones((3, 3), np.float32))


def test_mixed_dtypes_raise_type_error():
    with pytest.raises(TypeError, match=r"a is float32, b is float64"):
        ops.matmul(np.ones((3, 3), np.float32), np.ones((3, 3), np.float64))
    with pytest.raises(TypeError, match=r"bias is float64"):
        ops.linear(np.ones((2, 3), np.float32), np.ones((4, 3), np.float32), np.ones(4))


def test_overflowing_output_size_raises():
    a = np.broadcast_to(np.float32(1), (2**40, 1))
    b = np.broadcast_to(np.float32(1), (1, 2**40))
    with pytest.raises(ValueError, match="overflows"):
        ops.matmul(a, b)


def test_huge_output_raises_memory_error():
    a = np.broadcast_to(np.float32(1), (2**22, 1))
    b = np.broadcast_to(np.float32(1), (1, 2**22))
    with pytest.raises(MemoryError):
        ops.matmul(a, b)  # 16 TiB


def test_gemm_bad_arguments():
    a = np.ones((3, 4), np.float32)
    b = np.ones((4, 5), np.float32)
    with pytest.raises(ValueError, match=r"c: expected shape \(3, 5\), got \(5, 3\)"):
        ops.gemm(a, b, np.ones((5, 3), np.float32), beta=1.0)
    with pytest.raises(ValueError, match=r"c: expected an array of shape \(3, 5\) when beta != 0"):
        ops.gemm(a, b, beta=1.0)
    with pytest.raises(ValueError, match=r"op\(b\)"):
        ops.gemm(a, b, trans_b=True)


def test_core_rejects_bad_input_directly():
    """The private binding validates too: calling it wrongly never crashes the interpreter."""
    core = seqblocks._core
    with pytest.raises(ValueError):
        core.matmul(np.ones(3, np.float32), np.ones((3, 2), np.float32))
    with pytest.raises(ValueError):
        core.matmul(np.ones((2, 3), np.float32), np.ones((4, 2), np.float32))
    with pytest.raises(TypeError):
        core.matmul(np.ones((2, 3), np.int32), np.ones((3, 2), np.int32))
    with pytest.raises(TypeError):
        core.matmul(np.ones((2, 3), np.float32), np.ones((3, 2), np.float64))
    with pytest.raises(ValueError):
        core.linear(np.ones((2, 3), np.float32), np.ones((4, 3), np.float32), np.ones(5, np.float32))
