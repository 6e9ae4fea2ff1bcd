"""linear_forward / linear_backward: native (GEMM + deterministic column sums) against the float64
reference on every ISA, leading shapes, finite differences, PyTorch parity, thread-count
invariance and bad input."""

import numpy as np
import pytest

import seqblocks
from seqblocks import ops, reference
from seqblocks.testing import assert_close, gradcheck, sum_factor

DTYPES = [np.float32, np.float64]
TAILS = [1, 3, 7, 15, 16, 17, 31, 33, 63, 65, 127, 129]


def check_pair(x, w, b, dy):
    """Run the ops pair and compare with float64 math; tolerances scale with the sums' |terms|."""
    y, ws = ops.linear_forward(x, w, b)
    dx, dw, db = ops.linear_backward(dy, ws)
    x64, w64, dy64 = (a.astype(np.float64) for a in (x, w, dy))
    out_f, in_f = w.shape
    rows = int(np.prod(x.shape[:-1], dtype=np.int64))
    x2, dy2 = x64.reshape(-1, in_f), dy64.reshape(-1, out_f)
    assert y.shape == x.shape[:-1] + (out_f,) and dx.shape == x.shape and dw.shape == w.shape
    assert y.dtype == dx.dtype == dw.dtype == x.dtype
    exp_y = x64 @ w64.T + (0 if b is None else b)
    mag_y = np.abs(x64) @ np.abs(w64).T + (0 if b is None else np.abs(b))
    assert_close(y, exp_y, magnitude=mag_y, factor=sum_factor(in_f), what="y")
    assert_close(dx, dy64 @ w64, magnitude=np.abs(dy64) @ np.abs(w64), factor=sum_factor(out_f), what="dx")
    assert_close(dw, dy2.T @ x2, magnitude=np.abs(dy2).T @ np.abs(x2), factor=sum_factor(rows), what="dweight")
    if b is None:
        assert db is None
    else:
        assert db.shape == b.shape and db.dtype == b.dtype
        assert_close(db, dy2.sum(0), magnitude=np.abs(dy2).sum(0), factor=sum_factor(rows), what="dbias")
    return dx, dw, db


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,in_f,out_f", [(t, 17, 33) for t in TAILS] + [(9, t, 16) for t in TAILS]
                         + [(13, 31, t) for t in TAILS] + [(1000, 65, 127)])
def test_tail_shapes(isa, rng, dtype, rows, in_f, out_f):
    x = rng.standard_normal((rows, in_f)).astype(dtype)
    w = rng.standard_normal((out_f, in_f)).astype(dtype)
    b = rng.standard_normal(out_f).astype(dtype)
    dy = rng.standard_normal((rows, out_f)).astype(dtype)
    check_pair(x, w, b, dy)


@pytest.mark.parametrize("x_shape", [(7,), (1, 33), (2, 3, 33), (2, 3, 5, 33), (0, 33), (4, 0, 33)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_leading_shapes(rng, x_shape, with_bias):
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal((19, x_shape[-1])).astype(np.float32)
    b = rng.standard_normal(19).astype(np.float32) if with_bias else None
    dy = rng.standard_normal(x_shape[:-1] + (19,)).astype(np.float32)
    dx, dw, db = check_pair(x, w, b, dy)
    if x.size == 0:
        assert (dw == 0).all() and (db is None or (db == 0).all())


def test_zero_in_features(rng):
    x = np.zeros((4, 0), np.float32)
    w = np.zeros((3, 0), np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    y, ws = ops.linear_forward(x, w, b)
    np.testing.assert_array_equal(y, np.broadcast_to(b, (4, 3)))
    dx, dw, db = ops.linear_backward(np.ones((4, 3), np.float32), ws)
    assert dx.shape == (4, 0) and dw.shape == (3, 0)
    np.testing.assert_array_equal(db, [4, 4, 4])


def test_strided_inputs(rng):
    x = rng.standard_normal((10, 40)).astype(np.float32)[::2, ::2]
    w = np.asfortranarray(rng.standard_normal((7, 20)).astype(np.float32))
    b = rng.standard_normal(14).astype(np.float32)[::2]
    dy = rng.standard_normal((5, 14)).astype(np.float32)[:, ::2]
    check_pair(x, w, b, dy)


@pytest.mark.parametrize("backend", ["numpy", "native"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_gradcheck(rng, backend, with_bias):
    x = rng.standard_normal((2, 3, 5))
    w = rng.standard_normal((4, 5))
    arrays = [x, w] + ([rng.standard_normal(4)] if with_bias else [])
    with seqblocks.backend(backend):
        if with_bias:
            gradcheck(lambda x, w, b: ops.linear_forward(x, w, b), ops.linear_backward, arrays)
        else:
            gradcheck(lambda x, w: ops.linear_forward(x, w), lambda g, ws: ops.linear_backward(g, ws)[:2], arrays)


def test_dbias_and_dweight_do_not_depend_on_thread_count(rng):
    x = rng.standard_normal((3001, 67)).astype(np.float32)
    w = rng.standard_normal((129, 67)).astype(np.float32)
    b = rng.standard_normal(129).astype(np.float32)
    dy = rng.standard_normal((3001, 129)).astype(np.float32)
    results = []
    for threads in (1, 2, 3):
        seqblocks.set_num_threads(threads)
        _, ws = ops.linear_forward(x, w, b)
        results.append(ops.linear_backward(dy, ws))
    for r in results[1:]:
        for a, e in zip(r, results[0]):
            np.testing.assert_array_equal(a, e)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_pair_is_bit_identical_whoever_computes_a_block(rng, dtype, activation):
    """At two threads dX and dW run one per thread and the thread that finishes first computes
    chunks of the other's blocks (gemm_pair); every tile must come out as on one thread. Shapes
    with several K blocks (rows > 384), column blocks (> 384 features), partial chunks and panels,
    bias sums and the activation epilogue on dX; repeated, since who helps with what varies."""
    rows, d_in, hidden, d_out = 1031, 389, 1157, 401
    x = rng.standard_normal((rows, d_in)).astype(dtype)
    w1 = (rng.standard_normal((hidden, d_in)) / 20).astype(dtype)
    b1 = rng.standard_normal(hidden).astype(dtype)
    w2 = (rng.standard_normal((d_out, hidden)) / 30).astype(dtype)
    b2 = rng.standard_normal(d_out).astype(dtype)
    dy = rng.standard_normal((rows, d_out)).astype(dtype)
    before = seqblocks.get_num_threads()
    try:
        runs = []
        for threads in (1, 2, 2, 2, 2):
            seqblocks.set_num_threads(threads)
            _, ws = ops.feed_forward_forward(x, w1, b1, w2, b2, activation)
            runs.append(ops.feed_forward_backward(dy, ws))
    finally:
        seqblocks.set_num_threads(before)
    for r in runs[1:]:
        for got, want in zip(r, runs[0]):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_parity(rng, dtype):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((3, 17, 65)).astype(dtype)
    w = rng.standard_normal((33, 65)).astype(dtype)
    b = rng.standard_normal(33).astype(dtype)
    dy = rng.standard_normal((3, 17, 33)).astype(dtype)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.linear(tx, tw, tb)
    ty.backward(torch.tensor(dy))
    y, ws = ops.linear_forward(x, w, b)
    dx, dw, db = ops.linear_backward(dy, ws)
    x2, dy2 = np.abs(x.reshape(-1, 65)).astype(np.float64), np.abs(dy.reshape(-1, 33)).astype(np.float64)
    # both sides carry sum rounding errors: twice the one-sided budget
    assert_close(y, ty.detach().numpy(), magnitude=np.abs(x) @ np.abs(w).T + np.abs(b), factor=2 * sum_factor(65))
    assert_close(dx, tx.grad.numpy(), magnitude=np.abs(dy) @ np.abs(w), factor=2 * sum_factor(33))
    assert_close(dw, tw.grad.numpy(), magnitude=dy2.T @ x2, factor=2 * sum_factor(51))
    assert_close(db, tb.grad.numpy(), magnitude=dy2.sum(0), factor=2 * sum_factor(51))


def test_needs_grad_false(rng):
    y, ws = ops.linear_forward(np.ones((2, 3), np.float32), np.ones((4, 3), np.float32), needs_grad=False)
    assert ws is None and y.shape == (2, 4)


def test_bad_input():
    x, w = np.ones((2, 3), np.float32), np.ones((4, 3), np.float32)
    with pytest.raises(TypeError, match="expected arrays of one dtype, got x is float32, weight is float64"):
        ops.linear_forward(x, w.astype(np.float64))
    with pytest.raises(ValueError, match=r"x: expected last dimension 3 .*got shape \(2, 5\)"):
        ops.linear_forward(np.ones((2, 5), np.float32), w)
    with pytest.raises(ValueError, match=r"bias: expected shape \(4,\), got \(3,\)"):
        ops.linear_forward(x, w, np.ones(3, np.float32))
    with pytest.raises(ValueError, match=r"weight: expected a 2-D array, got shape \(3,\)"):
        ops.linear_forward(x, np.ones(3, np.float32))
    _, ws = ops.linear_forward(x, w)
    with pytest.raises(ValueError, match=r"grad_output: expected shape \(2, 4\).*got \(2, 3\)"):
        ops.linear_backward(np.ones((2, 3), np.float32), ws)
    with pytest.raises(TypeError, match="grad_output: expected dtype float32.*got float64"):
        ops.linear_backward(np.ones((2, 4)), ws)


def test_dx_has_the_input_shape_without_a_view(rng):
    """dx of a 3-D x comes back in x's shape as its own array (not a reshaped view, which autograd
    would copy before storing it as a gradient)."""
    x = rng.standard_normal((4, 300, 64)).astype(np.float32)  # dx: 300 KiB, an output-cache block
    w = rng.standard_normal((8, 64)).astype(np.float32)
    _, ws = ops.linear_forward(x, w)
    dx = ops.linear_backward(np.ones((4, 300, 8), np.float32), ws)[0]
    assert dx.shape == x.shape and not isinstance(dx.base, np.ndarray)
    np.testing.assert_allclose(dx, np.broadcast_to(w.sum(0), x.shape), rtol=1e-5)
    with pytest.raises(ValueError, match=r"dx_shape: expected a shape \(\.\.\., 2\) of 8 elements"):
        seqblocks._core.linear_backward(np.ones((4, 3), np.float32), np.ones((4, 2), np.float32),
                                        np.ones((3, 2), np.float32), False, (3, 3))


def grouped_column_sums(dy: np.ndarray) -> np.ndarray:
    """Column sums of dy in the native order (gemm/pack.h, kRowSumGroup): groups of 8 rows from
    row 0, each summed in order from zero, the group sums added in order -- in dy's dtype."""
    total = np.zeros(dy.shape[1], dy.dtype)
    for g in range(0, dy.shape[0], 8):
        part = np.zeros(dy.shape[1], dy.dtype)
        for row in dy[g:g + 8]:
            part = part + row
        total = total + part
    return total


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,in_f,out_f", [
    (1031, 389, 401),  # dy^T packed: several K blocks (rows > KC), sums read while packing
    (77, 20, 45),      # dW with few columns: dy^T read in place (not packed), sums in a separate pass
    (300, 64, 600),    # the same over several strips of 256 outputs
    (5, 300, 3),       # few rows and outputs
    (700, 2000, 40),   # wide dW: at 2-3 threads its columns are split, one rectangle sums
])
def test_dbias_is_summed_in_one_order_on_every_path(isa, rng, dtype, rows, in_f, out_f):
    """db is summed while the dW product packs dy^T, or in a pass of its own where that product
    does not pack it; both give the documented order bit for bit, at any thread count."""
    x = rng.standard_normal((rows, in_f)).astype(dtype)
    w = rng.standard_normal((out_f, in_f)).astype(dtype)
    b = rng.standard_normal(out_f).astype(dtype)
    dy = rng.standard_normal((rows, out_f)).astype(dtype)
    want = grouped_column_sums(dy)
    before = seqblocks.get_num_threads()
    try:
        for threads in (1, 2, 3):
            seqblocks.set_num_threads(threads)
            _, ws = ops.linear_forward(x, w, b)
            np.testing.assert_array_equal(ops.linear_backward(dy, ws)[2], want)
    finally:
        seqblocks.set_num_threads(before)
