"""embedding_forward / embedding_backward: gather parity, deterministic scatter-add (thread-count
invariant), padding_idx (also negative), index checks before any write, PyTorch parity."""

import numpy as np
import pytest

import seqblocks
from seqblocks import ops, reference
from seqblocks.testing import assert_close, gradcheck, sum_factor

DTYPES = [np.float32, np.float64]
TAILS = [1, 3, 7, 15, 16, 17, 31, 33, 63, 65, 127, 129]


def expected_dweight(idx, dy, num, pad):
    dw = np.zeros((num, dy.shape[-1]))
    mag = np.zeros_like(dw)
    np.add.at(dw, idx.reshape(-1), dy.reshape(-1, dy.shape[-1]).astype(np.float64))
    np.add.at(mag, idx.reshape(-1), np.abs(dy.reshape(-1, dy.shape[-1]).astype(np.float64)))
    if pad is not None:
        dw[pad] = 0
    return dw, mag


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", TAILS)
@pytest.mark.parametrize("idx_dtype", [np.int64, np.int32, np.uint8])
def test_native_matches_reference(isa, rng, dtype, dim, idx_dtype):
    num = 50
    idx = rng.integers(0, num, (7, 9)).astype(idx_dtype)
    w = rng.standard_normal((num, dim)).astype(dtype)
    dy = rng.standard_normal((7, 9, dim)).astype(dtype)
    out, ws = ops.embedding_forward(idx, w, padding_idx=3)
    np.testing.assert_array_equal(out, w[idx])
    none, dw = ops.embedding_backward(dy, ws)
    assert none is None and dw.shape == w.shape and dw.dtype == dtype
    exp, mag = expected_dweight(idx, dy, num, 3)
    counts = np.bincount(idx.reshape(-1), minlength=num).max()
    assert_close(dw, exp, magnitude=mag, factor=sum_factor(counts))
    assert (dw[3] == 0).all()


@pytest.mark.parametrize("padding_idx,row", [(None, None), (0, 0), (-1, 9), (-10, 0), (9, 9)])
def test_padding_idx(rng, padding_idx, row):
    w = rng.standard_normal((10, 4)).astype(np.float32)
    idx = np.array([[0, 9, 9, 3], [1, 0, 2, 9]])
    for backend in ("native", "numpy"):
        with seqblocks.backend(backend):
            out, ws = ops.embedding_forward(idx, w, padding_idx)
            _, dw = ops.embedding_backward(np.ones((2, 4, 4), np.float32), ws)
        np.testing.assert_array_equal(out, w[idx])  # forward still reads the padding row
        counts = np.bincount(idx.reshape(-1), minlength=10).astype(np.float32)
        if row is not None:
            counts[row] = 0
        np.testing.assert_array_equal(dw, np.repeat(counts[:, None], 4, axis=1))


def test_deterministic_across_thread_counts(rng):
    num, dim = 1000, 65
    idx = rng.integers(0, 40, 20_000)  # heavy collisions
    w = rng.standard_normal((num, dim)).astype(np.float32)
    dy = rng.standard_normal((20_000, dim)).astype(np.float32)
    results = []
    for threads in (1, 2, 3):
        seqblocks.set_num_threads(threads)
        out, ws = ops.embedding_forward(idx, w)
        results.append(ops.embedding_backward(dy, ws)[1])
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


@pytest.mark.parametrize("backend", ["numpy", "native"])
def test_gradcheck(rng, backend):
    idx = np.array([[1, 4, 1], [0, 2, 4]])
    w = rng.standard_normal((6, 3))
    with seqblocks.backend(backend):
        gradcheck(lambda i, w: ops.embedding_forward(i, w, padding_idx=5), ops.embedding_backward, [idx, w])


@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_parity(rng, dtype):
    torch = pytest.importorskip("torch")
    idx = rng.integers(0, 30, (5, 11))
    w = rng.standard_normal((30, 17)).astype(dtype)
    dy = rng.standard_normal((5, 11, 17)).astype(dtype)
    tw = torch.tensor(w, requires_grad=True)
    ty = torch.nn.functional.embedding(torch.tensor(idx), tw, padding_idx=-2)
    ty.backward(torch.tensor(dy))
    out, ws = ops.embedding_forward(idx, w, padding_idx=-2)
    _, dw = ops.embedding_backward(dy, ws)
    np.testing.assert_array_equal(out, ty.detach().numpy())
    _, mag = expected_dweight(idx, dy, 30, 28)
    assert_close(dw, tw.grad.numpy(), magnitude=mag, factor=2 * sum_factor(np.bincount(idx.reshape(-1)).max()))


def test_empty_and_scalar_indices(rng):
    w = rng.standard_normal((5, 3)).astype(np.float32)
    out, ws = ops.embedding_forward(np.zeros((0, 4), np.int64), w)
    assert out.shape == (0, 4, 3)
    assert (ops.embedding_backward(np.zeros((0, 4, 3), np.float32), ws)[1] == 0).all()
    out, ws = ops.embedding_forward(np.int64(2), w)
    np.testing.assert_array_equal(out, w[2])
    np.testing.assert_array_equal(ops.embedding_backward(np.ones(3, np.float32), ws)[1][2], [1, 1, 1])


@pytest.mark.parametrize("backend", ["numpy", "native"])
@pytest.mark.parametrize("bad", [10, -1, 2**40])
def test_out_of_range_index_raises_before_writing(backend, bad):
    w = np.ones((10, 4), np.float32)
    idx = np.array([[1, 2], [bad, 3]], np.int64)
    with seqblocks.backend(backend):
        with pytest.raises(IndexError, match=rf"indices: expected values in \[0, 10\).*got {bad}"):
            ops.embedding_forward(idx, w)
    np.testing.assert_array_equal(w, 1)


def test_uint64_index_beyond_int64():
    with pytest.raises(IndexError, match=r"indices: expected values in \[0, 10\).*got 18446744073709551615"):
        ops.embedding_forward(np.array([1, 2**64 - 1], np.uint64), np.ones((10, 4), np.float32))


def test_bad_input():
    w = np.ones((10, 4), np.float32)
    with pytest.raises(TypeError, match="indices: expected an integer array, got dtype float32"):
        ops.embedding_forward(np.ones(3, np.float32), w)
    with pytest.raises(TypeError, match="weight: expected a float32 or float64 array, got dtype int64"):
        ops.embedding_forward(np.ones(3, np.int64), np.ones((10, 4), np.int64))
    with pytest.raises(ValueError, match=r"weight: expected a 2-D array, got shape \(10,\)"):
        ops.embedding_forward(np.ones(3, np.int64), np.ones(10, np.float32))
    with pytest.raises(ValueError, match=r"padding_idx: expected a value in \[-10, 10\).*got 10"):
        ops.embedding_forward(np.ones(3, np.int64), w, padding_idx=10)
    _, ws = ops.embedding_forward(np.ones(3, np.int64), w)
    with pytest.raises(ValueError, match=r"grad_output: expected shape \(3, 4\).*got \(3, 5\)"):
        ops.embedding_backward(np.ones((3, 5), np.float32), ws)
