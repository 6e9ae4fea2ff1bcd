"""feed_forward_forward / feed_forward_backward, y = act(x W1^T + b1) W2^T + b2: the backward, with
act' in the epilogue of the dh GEMM, equals the linear pair's backward followed by the linear +
activation pair's bit for bit on every ISA and GEMM path; gradients against the float64
reference, finite differences and PyTorch; bad input."""

import numpy as np
import pytest

import seqblocks
from seqblocks import _core, ops
from seqblocks.testing import assert_close, gradcheck, sum_factor

DTYPES = [np.float32, np.float64]
ACTS = ["relu", "gelu", "gelu_tanh"]
TAILS = [1, 3, 7, 15, 16, 17, 31, 33, 63, 65, 127, 129]
# (rows, in, hidden, out): tails of each size; rows <= 32 take the GEMM's dot path for the
# forward, the dh GEMM (rows x hidden, k = out) runs packed with its epilogue per tile; zero sizes
# take the empty paths (hidden = 0: dh is empty; out = 0: dh = 0 without a GEMM).
SHAPES = ([(t, 17, 33, 9) for t in TAILS] + [(9, 16, t, 5) for t in TAILS] + [(13, 7, 31, t) for t in TAILS]
          + [(1000, 65, 127, 33), (300, 40, 200, 70), (4, 5, 0, 3), (4, 5, 6, 0), (0, 5, 6, 3)])


def two_pairs(x, w1, b1, w2, b2, act):
    """The same block from the linear + activation pair and the linear pair, each run alone."""
    h, ws1 = ops.linear_act_forward(x, w1, b1, act)
    y, ws2 = ops.linear_forward(h, w2, b2)

    def backward(dy):
        dh, dw2, db2 = ops.linear_backward(dy, ws2)
        dx, dw1, db1 = ops.linear_act_backward(dh, ws1)
        return dx, dw1, db1, dw2, db2

    return y, backward


def make(rng, rows, in_f, hidden, out_f, dtype, bias=True, lead=()):
    x = rng.standard_normal(lead + (rows, in_f)).astype(dtype)
    w1 = (rng.standard_normal((hidden, in_f)) / 4).astype(dtype)
    w2 = (rng.standard_normal((out_f, hidden)) / 4).astype(dtype)
    b1 = rng.standard_normal(hidden).astype(dtype) if bias else None
    b2 = rng.standard_normal(out_f).astype(dtype) if bias else None
    return x, w1, b1, w2, b2


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("rows,in_f,hidden,out_f", SHAPES)
def test_equals_the_two_pairs(isa, rng, dtype, act, rows, in_f, hidden, out_f):
    x, w1, b1, w2, b2 = make(rng, rows, in_f, hidden, out_f, dtype, bias=rows % 2 == 1)
    y, ws = ops.feed_forward_forward(x, w1, b1, w2, b2, act)
    y_ref, backward = two_pairs(x, w1, b1, w2, b2, act)
    assert y.dtype == dtype and y.shape == (rows, out_f)
    np.testing.assert_array_equal(y, y_ref)
    dy = rng.standard_normal(y.shape).astype(dtype)
    grads = ops.feed_forward_backward(dy, ws)
    for name, a, e in zip(("dx", "dw1", "db1", "dw2", "db2"), grads, backward(dy)):
        if e is None:
            assert a is None, name
        else:
            assert a.shape == e.shape and a.dtype == e.dtype, name
            np.testing.assert_array_equal(a, e, err_msg=name)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_count_and_leading_shape(rng, threads):
    seqblocks.set_num_threads(threads)
    x, w1, b1, w2, b2 = make(rng, 200, 96, 300, 64, np.float32, lead=(3,))
    y, ws = ops.feed_forward_forward(x, w1, b1, w2, b2, "gelu")
    assert y.shape == (3, 200, 64)
    grads = ops.feed_forward_backward(np.cos(y), ws)
    assert grads[0].shape == x.shape
    seqblocks.set_num_threads(1)
    y1, backward = two_pairs(x, w1, b1, w2, b2, "gelu")
    np.testing.assert_array_equal(y, y1)
    for a, e in zip(grads, backward(np.cos(y))):
        np.testing.assert_array_equal(a, e)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_float64_reference(isa, rng, act, dtype):
    x, w1, b1, w2, b2 = make(rng, 19, 33, 65, 17, dtype, lead=(2,))
    dy = rng.standard_normal((2, 19, 17)).astype(dtype)
    y, ws = ops.feed_forward_forward(x, w1, b1, w2, b2, act)
    grads = ops.feed_forward_backward(dy, ws)
    with seqblocks.backend("numpy"):
        up = [a.astype(np.float64) for a in (x, w1, b1, w2, b2, dy)]
        y64, ws64 = ops.feed_forward_forward(*up[:5], act)
        grads64 = ops.feed_forward_backward(up[5], ws64)
    # magnitudes: every quantity as the same sums over absolute values (act' <= 1.13)
    ax, aw1, ab1, aw2, ab2, ady = (np.abs(a) for a in up)
    mag_h = 1.13 * (ax @ aw1.T + ab1)
    mag_dh = ady @ aw2
    factor = sum_factor(33) + sum_factor(65) + sum_factor(38) + 4
    assert_close(y, y64, magnitude=mag_h @ aw2.T + ab2, factor=factor, what="y")
    assert_close(grads[0], grads64[0], magnitude=1.13 * mag_dh @ aw1, factor=factor, what="dx")
    assert_close(grads[1], grads64[1], magnitude=1.13 * np.einsum("bri,brj->ij", mag_dh, ax), factor=factor,
                 what="dweight1")
    assert_close(grads[2], grads64[2], magnitude=1.13 * mag_dh.sum((0, 1)), factor=factor, what="dbias1")
    assert_close(grads[3], grads64[3], magnitude=np.einsum("bri,brj->ij", ady, mag_h), factor=factor,
                 what="dweight2")
    assert_close(grads[4], grads64[4], magnitude=ady.sum((0, 1)), factor=factor, what="dbias2")


@pytest.mark.parametrize("backend", ["numpy", "native"])
@pytest.mark.parametrize("act", ACTS)
def test_gradcheck(rng, backend, act):
    x, w1, b1, w2, b2 = make(rng, 3, 5, 6, 4, np.float64, lead=(2,))
    with seqblocks.backend(backend):
        gradcheck(lambda x, w1, b1, w2, b2: ops.feed_forward_forward(x, w1, b1, w2, b2, act),
                  ops.feed_forward_backward, [x, w1, b1, w2, b2], what=f"feed_forward {act} {backend}")


@pytest.mark.parametrize("act", ACTS)
def test_torch_parity(rng, act):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, w1, b1, w2, b2 = make(rng, 17, 65, 96, 33, np.float32, lead=(3,))
    dy = rng.standard_normal((3, 17, 33)).astype(np.float32)
    t = [torch.tensor(a, requires_grad=True) for a in (x, w1, b1, w2, b2)]
    tz = F.linear(t[0], t[1], t[2])
    th = F.relu(tz) if act == "relu" else F.gelu(tz, approximate="none" if act == "gelu" else "tanh")
    ty = F.linear(th, t[3], t[4])
    ty.backward(torch.tensor(dy))
    y, ws = ops.feed_forward_forward(x, w1, b1, w2, b2, act)
    grads = ops.feed_forward_backward(dy, ws)
    with seqblocks.backend("numpy"):  # magnitudes of each result from float64 absolute values
        ax, aw1, ab1, aw2, ab2, ady = (np.abs(a).astype(np.float64) for a in (x, w1, b1, w2, b2, dy))
    mag_h = 1.13 * (ax @ aw1.T + ab1)
    mag_dh = ady @ aw2
    # both sides carry sum rounding errors (and torch's erf-GELU is less accurate than ours)
    factor = 2 * (sum_factor(65) + sum_factor(96) + sum_factor(51)) + 8
    mags = [mag_h @ aw2.T + ab2, 1.13 * mag_dh @ aw1, 1.13 * np.einsum("bri,brj->ij", mag_dh, ax),
            1.13 * mag_dh.sum((0, 1)), np.einsum("bri,brj->ij", ady, mag_h), ady.sum((0, 1))]
    ours = [y] + list(grads)
    theirs = [ty.detach().numpy()] + [a.grad.numpy() for a in t]
    for name, a, b, mag in zip(("y", "dx", "dweight1", "dbias1", "dweight2", "dbias2"), ours, theirs, mags):
        assert_close(a, b, magnitude=mag, factor=factor, what=name)


def test_bad_input(rng):
    x, w1, b1, w2, b2 = make(rng, 2, 3, 4, 5, np.float32)
    with pytest.raises(ValueError, match="activation: expected one of .*got 'tanh'"):
        ops.feed_forward_forward(x, w1, b1, w2, b2, "tanh")
    with pytest.raises(ValueError, match=r"weight2: expected a 2-D array \(out, 4\) \(hidden = weight1's rows\), "
                                         r"got shape \(5, 3\)"):
        ops.feed_forward_forward(x, w1, b1, w2[:, :3], b2)
    with pytest.raises(ValueError, match=r"bias2: expected shape \(5,\) \(weight2's rows\), got \(4,\)"):
        ops.feed_forward_forward(x, w1, b1, w2, b2[:4])
    with pytest.raises(TypeError, match="weight2: expected a float32 or float64 array"):
        ops.feed_forward_forward(x, w1, b1, w2.astype(np.int32), b2)
    with pytest.raises(ValueError, match=r"x: expected last dimension 3 .*got shape \(2, 5\)"):
        ops.feed_forward_forward(np.ones((2, 5), np.float32), w1, b1, w2, b2)
    y, ws = ops.feed_forward_forward(x, w1, b1, w2, b2, "gelu")
    with pytest.raises(ValueError, match=r"grad_output: expected shape \(2, 5\).*got \(2, 4\)"):
        ops.feed_forward_backward(np.ones((2, 4), np.float32), ws)
    with pytest.raises(TypeError, match="grad_output: expected dtype float32.*got float64"):
        ops.feed_forward_backward(np.ones((2, 5)), ws)
    # the compiled linear backward with an activation derivative checks what it is handed
    h = np.ones((2, 4), np.float32)
    dy = np.ones((2, 5), np.float32)
    with pytest.raises(ValueError, match="activation: expected relu, gelu_erf, gelu_tanh or None, got 'tanh'"):
        _core.linear_backward(dy, h, w2, True, None, "tanh", h)
    with pytest.raises(ValueError, match="saved: expected an array exactly when activation is given"):
        _core.linear_backward(dy, h, w2, True, None, "relu", None)
    with pytest.raises(ValueError, match="saved: expected an array exactly when activation is given"):
        _core.linear_backward(dy, h, w2, True, None, None, h)
    with pytest.raises(ValueError, match=r"saved: expected shape \(2, 4\) \(dx's\), got \(2, 3\)"):
        _core.linear_backward(dy, h, w2, True, None, "gelu_erf", h[:, :3])
    with pytest.raises(TypeError, match="saved"):
        _core.linear_backward(dy, h, w2, True, None, "gelu_erf", h.astype(np.float64))
