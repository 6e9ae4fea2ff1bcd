"""add_forward / add_backward (residual add, b broadcast to a's shape): every broadcast pattern,
deterministic reductions for db, ISA tails, finite differences, PyTorch parity, bad input."""

import numpy as np
import pytest

import seqblocks
from seqblocks import ops
from seqblocks.testing import assert_close, gradcheck, sum_factor

DTYPES = [np.float32, np.float64]
TAILS = [1, 3, 7, 15, 16, 17, 31, 33, 63, 65, 127, 129]
# (a shape, b shape): same shape, bias over rows (BK), per-row (KB), KBK, BKB, scalar, 4+ runs, 1-extents
PATTERNS = [((5, 7), (5, 7)), ((6, 33), (33,)), ((6, 33), (1, 33)), ((9, 4), (9, 1)), ((3, 5, 17), (3, 1, 17)),
            ((4, 6, 5), (6, 1)), ((4, 6, 5), (1,)), ((4, 6, 5), ()), ((2, 3, 4, 5), (3, 1, 5)),
            ((3, 1, 4), (1, 1, 4)), ((2, 1, 3), (2, 1, 1)), ((1, 1), (1,)), ((0, 5), (5,)), ((4, 0), (4, 1)),
            ((2, 3, 2, 3, 2), (3, 1, 3, 1))]


def check(a, b, dy):
    y, ws = ops.add_forward(a, b)
    da, db = ops.add_backward(dy, ws)
    a64, b64, dy64 = (x.astype(np.float64) for x in (a, b, dy))
    np.testing.assert_array_equal(y, (a + b).astype(a.dtype))  # one rounded addition
    np.testing.assert_array_equal(da, dy)
    assert da is not dy and y.dtype == a.dtype and db.dtype == a.dtype and db.shape == b.shape
    padded = (1,) * (a.ndim - b.ndim) + b.shape
    axes = tuple(i for i, (m, n) in enumerate(zip(a.shape, padded)) if n == 1 and m != 1)
    k = int(np.prod([a.shape[i] for i in axes], dtype=np.int64))
    exp = dy64.sum(axis=axes).reshape(b.shape)
    mag = np.abs(dy64).sum(axis=axes).reshape(b.shape)
    assert_close(db, exp, magnitude=mag, factor=sum_factor(k), what="db")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", PATTERNS)
def test_broadcast_patterns(isa, rng, dtype, shapes):
    a_shape, b_shape = shapes
    check(rng.standard_normal(a_shape).astype(dtype), rng.standard_normal(b_shape).astype(dtype),
          rng.standard_normal(a_shape).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", TAILS)
def test_tails(isa, rng, dtype, n):
    for a_shape, b_shape in [((5, n), (n,)), ((n, 3), (n, 1)), ((n,), (n,)), ((3, n, 2), (n, 1)),
                             ((n, 5, 17), (n, 1, 17))]:
        check(rng.standard_normal(a_shape).astype(dtype), rng.standard_normal(b_shape).astype(dtype),
              rng.standard_normal(a_shape).astype(dtype))


def test_large_column_sum_and_thread_invariance(rng):
    a = rng.standard_normal((20_000, 67)).astype(np.float32)
    b = rng.standard_normal(67).astype(np.float32)
    dy = rng.standard_normal(a.shape).astype(np.float32)
    check(a, b, dy)
    for b_shape in [(67,), (20_000, 1), ()]:
        results = []
        for threads in (1, 2, 3):
            seqblocks.set_num_threads(threads)
            _, ws = ops.add_forward(a, np.zeros(b_shape, np.float32))
            results.append(ops.add_backward(dy, ws)[1])
        for r in results[1:]:
            np.testing.assert_array_equal(r, results[0])


def test_strided_inputs(rng):
    a = rng.standard_normal((10, 20)).astype(np.float32)[::2, 1::2]
    b = rng.standard_normal(20).astype(np.float32)[::2]
    check(a, b, rng.standard_normal((10, 20)).astype(np.float32)[1::2, ::2])


@pytest.mark.parametrize("backend", ["numpy", "native"])
@pytest.mark.parametrize("shapes", [((3, 4), (4,)), ((3, 4, 2), (4, 1)), ((2, 3), ())])
def test_gradcheck(rng, backend, shapes):
    with seqblocks.backend(backend):
        gradcheck(ops.add_forward, ops.add_backward,
                  [rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1])])


@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_parity(rng, dtype):
    torch = pytest.importorskip("torch")
    a = rng.standard_normal((4, 9, 33)).astype(dtype)
    b = rng.standard_normal((9, 1)).astype(dtype)
    dy = rng.standard_normal(a.shape).astype(dtype)
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    (ta + tb).backward(torch.tensor(dy))
    y, ws = ops.add_forward(a, b)
    da, db = ops.add_backward(dy, ws)
    np.testing.assert_array_equal(y, (ta + tb).detach().numpy())
    np.testing.assert_array_equal(da, ta.grad.numpy())
    assert_close(db, tb.grad.numpy(), magnitude=np.abs(dy).sum(axis=(0, 2)).reshape(9, 1),
                 factor=2 * sum_factor(4 * 33))


def test_bad_input():
    with pytest.raises(ValueError, match=r"b: expected a shape that broadcasts to a's shape \(3, 4\), got \(3,\)"):
        ops.add_forward(np.ones((3, 4), np.float32), np.ones(3, np.float32))
    with pytest.raises(ValueError, match=r"b: expected a shape that broadcasts to a's shape \(4,\), got \(3, 4\)"):
        ops.add_forward(np.ones(4, np.float32), np.ones((3, 4), np.float32))
    with pytest.raises(TypeError, match="expected arrays of one dtype, got a is float32, b is float64"):
        ops.add_forward(np.ones(4, np.float32), np.ones(4))
    _, ws = ops.add_forward(np.ones((3, 4), np.float32), np.ones(4, np.float32))
    with pytest.raises(ValueError, match=r"grad_output: expected shape \(3, 4\).*got \(4,\)"):
        ops.add_backward(np.ones(4, np.float32), ws)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", ["numpy", "native"])
def test_out_in_place_and_apart(isa, rng, dtype, backend):
    """out = a (an in-place add) or a separate array: the same bits as a new y, out returned."""
    with seqblocks.backend(backend):
        for a_shape, b_shape in PATTERNS + [((1000, 129), (129,))]:
            a = rng.standard_normal(a_shape).astype(dtype)
            b = rng.standard_normal(b_shape).astype(dtype)
            want, _ = ops.add_forward(a, b)
            apart = np.empty_like(a)
            got, ws = ops.add_forward(a, b, needs_grad=False, out=apart)
            assert got is apart and ws is None
            np.testing.assert_array_equal(got, want)
            got, _ = ops.add_forward(a, b, out=a)
            assert got is a
            np.testing.assert_array_equal(a, want)


def test_out_bad_input(rng):
    a = rng.standard_normal((6, 33)).astype(np.float32)
    b = rng.standard_normal(33).astype(np.float32)
    with pytest.raises(ValueError, match=r"out: expected shape \(6, 33\) and dtype float32 \(a's\), got \(6, 32\)"):
        ops.add_forward(a, b, out=np.empty((6, 32), np.float32))
    with pytest.raises(ValueError, match="out: expected shape .* got \\(6, 33\\) and float64"):
        ops.add_forward(a, b, out=np.empty((6, 33)))
    with pytest.raises(ValueError, match="out: expected a writable C-contiguous array"):
        ops.add_forward(a, b, out=np.empty((33, 6), np.float32).T)
    ro = np.empty_like(a)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out: expected a writable C-contiguous array"):
        ops.add_forward(a, b, out=ro)
    with pytest.raises(TypeError, match="out: expected an ndarray or None, got list"):
        ops.add_forward(a, b, out=[0.0])
    big = rng.standard_normal((7, 33)).astype(np.float32)
    with pytest.raises(ValueError, match="out: expected a itself or memory apart from a and b"):
        ops.add_forward(big[1:], b, out=big[:6])
    with pytest.raises(ValueError, match="out: expected a itself or memory apart from a and b"):
        ops.add_forward(a, big[0], out=big[:6])
    flat = b.reshape(-1)
    with pytest.raises(ValueError, match="out: expected a itself or memory apart"):  # the binding checks too
        seqblocks._core.add_broadcast(big[1:].reshape(-1), flat, 0, 1, 6, 33, big[:6].reshape(-1))


def test_twin_signatures():
    """Every ops function of this task has a reference twin with the same signature."""
    import inspect

    names = ["linear_forward", "linear_backward", "embedding_forward", "embedding_backward", "dropout_forward",
             "dropout_backward", "relu_forward", "relu_backward", "gelu_forward", "gelu_backward", "tanh_forward",
             "tanh_backward", "sigmoid_forward", "sigmoid_backward", "add_forward", "add_backward", "sgd_step_",
             "adam_step_"]
    for name in names:
        ours, twin = inspect.signature(getattr(ops, name)), inspect.signature(getattr(seqblocks.reference, name))
        assert [(p.name, p.kind, p.default) for p in ours.parameters.values()] == \
            [(p.name, p.kind, p.default) for p in twin.parameters.values()], name
        assert name in ops.__all__ and name in seqblocks.reference.__all__


def test_zero_dimensional():
    y, ws = ops.add_forward(np.array(2.0), np.array(3.0))
    da, db = ops.add_backward(np.array(1.5), ws)
    assert y.shape == () and y == 5.0 and da.shape == () and db.shape == () and db == 1.5
