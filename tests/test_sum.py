"""sum_forward / sum_backward (y = x summed over some axes; dx = dy broadcast back) and the
Tensor.sum / Tensor.mean / tensor() paths built on them: every run pattern of reduced and kept
axes, ISA tails, thread invariance, finite differences, PyTorch parity, bad input."""

import itertools

import numpy as np
import pytest

import seqblocks
from seqblocks import ops
from seqblocks.testing import assert_close, gradcheck, sum_factor

DTYPES = [np.float32, np.float64]
TAILS = [1, 3, 7, 15, 16, 17, 31, 33, 63, 65, 127, 129]
NATIVE_MIN = 16384  # ops.elementwise._NATIVE_SUM_MIN_SIZE: smaller arrays take NumPy's sum


def all_dims(ndim):
    yield None
    for r in range(1, ndim + 1):
        yield from itertools.combinations(range(ndim), r)


def check(x, dims, keepdim, dy=None):
    y, ws = ops.sum_forward(x, dims, keepdim)
    x64 = x.astype(np.float64)
    exp = x64.sum(axis=dims, keepdims=keepdim)
    mag = np.abs(x64).sum(axis=dims, keepdims=keepdim)
    k = x.size // max(exp.size, 1)
    assert y.shape == exp.shape and y.dtype == x.dtype
    assert_close(y, exp, magnitude=mag, factor=sum_factor(k), what=f"sum over {dims}")
    if dy is None:
        dy = np.random.default_rng(7).standard_normal(exp.shape).astype(x.dtype)
    (dx,) = ops.sum_backward(dy, ws)
    expanded = dy if dims is None or keepdim else np.expand_dims(dy, dims)
    assert dx.shape == x.shape and dx.dtype == x.dtype
    np.testing.assert_array_equal(dx, np.broadcast_to(expanded, x.shape))  # a copy: exact
    assert dx.flags.writeable and dx.flags.c_contiguous


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("keepdim", [False, True])
def test_every_axis_pattern(isa, rng, dtype, keepdim):
    for shape in [(9, 33, 65), (2, 3, 4, 5, 140), (3, 1, 7000), (NATIVE_MIN,)]:
        x = rng.standard_normal(shape).astype(dtype)
        for dims in all_dims(len(shape)):
            check(x, dims, keepdim)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", TAILS)
def test_tails(isa, rng, dtype, n):
    """Reduced and kept extents that end in a SIMD tail, all above the native threshold."""
    rows = NATIVE_MIN // n + 1
    for shape, dims in [((rows, n), None), ((rows, n), (0,)), ((rows, n), (1,)), ((n, 5, 4000 // n + 1000), (0, 2)),
                        ((rows * n + 1,), None)]:
        check(rng.standard_normal(shape).astype(dtype), dims, False)


def test_accuracy_of_a_long_sum(rng):
    """2^21 float32 terms: within a few eps of sum |x| (NumPy's pairwise sum is the bar)."""
    x = rng.uniform(-1, 3, 1 << 21).astype(np.float32)
    y, _ = ops.sum_forward(x)
    exact = x.astype(np.float64).sum()
    scale = np.abs(x.astype(np.float64)).sum()
    assert abs(float(y) - exact) <= 16 * np.finfo(np.float32).eps * scale
    assert abs(float(y) - exact) <= 4 * abs(float(x.sum()) - exact) + 4 * np.finfo(np.float32).eps * scale


def test_thread_invariance(rng):
    x = rng.standard_normal((40, 33, 129)).astype(np.float32)
    for dims in [None, (0,), (1,), (0, 2), (2,)]:
        results = []
        for threads in (1, 2, 3):
            seqblocks.set_num_threads(threads)
            results.append(ops.sum_forward(x, dims)[0])
        for r in results[1:]:
            np.testing.assert_array_equal(r, results[0])


def test_strided_and_negative_dims(rng):
    base = rng.standard_normal((60, 700)).astype(np.float32)
    x = base[::2, 1::3].T  # not contiguous
    y, ws = ops.sum_forward(x, -1, True)
    assert_close(y, x.astype(np.float64).sum(axis=-1, keepdims=True), factor=sum_factor(30),
                 magnitude=np.abs(x.astype(np.float64)).sum(axis=-1, keepdims=True))
    assert ws[1] == (1,)
    check(np.ascontiguousarray(x), (1,), True)


@pytest.mark.parametrize("backend", ["numpy", "native"])
@pytest.mark.parametrize("dims", [None, (1,), (0, 2)])
def test_gradcheck(rng, backend, dims):
    x = rng.standard_normal((8, 43, 48))  # 16512 elements: the native path
    with seqblocks.backend(backend):
        gradcheck(lambda a: ops.sum_forward(a, dims), ops.sum_backward, [x],
                  what=f"sum over {dims} ({backend})")


@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_parity(rng, dtype):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((16, 33, 65)).astype(dtype)
    for dims, keepdim in [(None, False), ((1,), False), ((0, 2), True)]:
        tx = torch.tensor(x, requires_grad=True)
        ty = tx.sum() if dims is None else tx.sum(dim=dims, keepdim=keepdim)
        dy = rng.standard_normal(tuple(ty.shape)).astype(dtype)
        ty.backward(torch.tensor(dy))
        y, ws = ops.sum_forward(x, dims, keepdim)
        k = x.size // max(y.size, 1)
        mag = np.abs(x.astype(np.float64)).sum(axis=dims, keepdims=keepdim)
        assert_close(y, ty.detach().numpy(), magnitude=mag, factor=2 * sum_factor(k))
        np.testing.assert_array_equal(ops.sum_backward(dy, ws)[0], tx.grad.numpy())


def test_bad_input():
    x = np.ones((3, 4, 5000), np.float32)
    with pytest.raises(ValueError, match=r"dims: expected axes in \[-3, 2\], got 3"):
        ops.sum_forward(x, (0, 3))
    with pytest.raises(ValueError, match=r"dims: expected distinct axes, got \(1, -2\)"):
        ops.sum_forward(x, (1, -2))
    with pytest.raises(TypeError, match="dims: expected ints, got float"):
        ops.sum_forward(x, (1.0,))
    with pytest.raises(TypeError, match="x: expected a float32 or float64 array, got dtype int64"):
        ops.sum_forward(np.ones(5, np.int64))
    _, ws = ops.sum_forward(x, (2,))
    with pytest.raises(ValueError, match=r"grad_output: expected shape \(3, 4\).*got \(3, 4, 1\)"):
        ops.sum_backward(np.ones((3, 4, 1), np.float32), ws)
    with pytest.raises(TypeError, match="grad_output: expected dtype float32 \\(the forward's\\), got float64"):
        ops.sum_backward(np.ones((3, 4)), ws)


def test_twin_signatures():
    import inspect

    for name in ["sum_forward", "sum_backward"]:
        ours, twin = inspect.signature(getattr(ops, name)), inspect.signature(getattr(seqblocks.reference, name))
        assert [(p.name, p.kind, p.default) for p in ours.parameters.values()] == \
            [(p.name, p.kind, p.default) for p in twin.parameters.values()], name


def test_empty_and_zero_dimensional():
    for shape, dims in [((0, 5), None), ((0, 5), (0,)), ((4, 0), (1,)), ((), None)]:
        x = np.ones(shape, np.float32)
        y, ws = ops.sum_forward(x, dims)
        np.testing.assert_array_equal(y, x.sum(axis=dims))
        assert ops.sum_backward(np.ones(y.shape, np.float32), ws)[0].shape == shape
    # a 0-d array's dim 0 or -1 is all of it, as in PyTorch
    for dims in (0, -1, (0,)):
        for keepdim in (False, True):
            y, ws = ops.sum_forward(np.array(2.5, np.float32), dims, keepdim)
            assert y.shape == () and y == 2.5 and ops.sum_backward(np.float32(3.0), ws)[0] == 3.0
    t = seqblocks.tensor(5.0, requires_grad=True)
    t.sum(0).backward()
    assert float(t.grad) == 1.0 and float(seqblocks.tensor(4.0).mean(-1, keepdim=True).data) == 4.0


# ------------------------------------------------------------------ the autograd layer on top


@pytest.mark.parametrize("dtype", DTYPES)
def test_tensor_sum_and_mean(rng, dtype):
    x = rng.standard_normal((64, 32, 24)).astype(dtype)
    for dims, keepdim in [(None, False), (1, False), ((0, 2), True)]:
        t = seqblocks.tensor(x, requires_grad=True)
        s = t.sum(dims, keepdim)
        m = seqblocks.tensor(x, requires_grad=True)
        avg = m.mean(dims, keepdim)
        y, _ = ops.sum_forward(x, dims, keepdim)
        count = x.size // max(y.size, 1)
        np.testing.assert_array_equal(s.data, y)
        np.testing.assert_array_equal(avg.data, (y / dtype(count)).astype(dtype))
        g = rng.standard_normal(s.data.shape).astype(dtype)
        s.backward(g)
        avg.backward(g)
        expanded = g if dims is None or keepdim else np.expand_dims(g, dims)
        np.testing.assert_array_equal(t.grad, np.broadcast_to(expanded, x.shape))
        np.testing.assert_array_equal(m.grad, np.broadcast_to(expanded / count, x.shape))


def test_tensor_sum_of_integers_and_small_arrays_is_numpys():
    t = seqblocks.tensor(np.arange(20000, dtype=np.int64))
    assert t.sum().data.dtype == np.int64 and int(t.sum().data) == 20000 * 19999 // 2
    assert float(seqblocks.tensor(np.arange(6, dtype=np.int32)).mean().data) == 2.5
    small = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    assert seqblocks.tensor(small).sum().data == small.sum()


def test_tensor_copies_its_data(rng):
    """tensor() of a large float array is a C-ordered copy (natively, above 65536 elements)."""
    for x in [rng.standard_normal((70, 33, 31)).astype(np.float32), rng.standard_normal((300, 700))[:, ::2],
              rng.standard_normal((1, 2, 3, 4, 3000)).astype(np.float32), rng.standard_normal((400, 300)).T]:
        t = seqblocks.tensor(x)
        np.testing.assert_array_equal(t.data, x)
        assert not np.shares_memory(t.data, x) and t.data.dtype == x.dtype and t.data.flags.writeable
        x_before = x.copy()
        t.data[...] = 0
        np.testing.assert_array_equal(x, x_before)
    t64 = seqblocks.tensor(rng.standard_normal((300, 300)).astype(np.float32), dtype=np.float64)
    assert t64.data.dtype == np.float64
    c = seqblocks.tensor(rng.standard_normal((300, 300)), requires_grad=True)
    d = c.clone()
    assert not np.shares_memory(c.data, d.data)
    np.testing.assert_array_equal(c.data, d.data)
