"""linear_act_forward / linear_act_backward: the GEMM with an activation epilogue equals linear
followed by the activation op bit for bit on every ISA and GEMM path; gradients against the
float64 reference, finite differences and PyTorch; bad input."""

import numpy as np
import pytest

import seqblocks
from seqblocks import ops
from seqblocks.testing import assert_close, gradcheck, sum_factor

DTYPES = [np.float32, np.float64]
ACTS = ["relu", "gelu", "gelu_tanh"]
TAILS = [1, 3, 7, 15, 16, 17, 31, 33, 63, 65, 127, 129]
# rows <= 32 with a long k take the GEMM's dot path, the others the packed micro-kernel (whose
# epilogue runs the activation per tile); in = 0 the empty-k path (y = act(bias)).
SHAPES = ([(t, 17, 33) for t in TAILS] + [(9, t, 16) for t in TAILS] + [(13, 31, t) for t in TAILS]
          + [(5, 300, 40), (1000, 65, 127), (4, 0, 5)])


def unfused(x, w, b, act):
    z = ops.linear(x, w, b)
    if act == "relu":
        return ops.relu_forward(z)
    return ops.gelu_forward(z, "none" if act == "gelu" else "tanh")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("rows,in_f,out_f", SHAPES)
def test_equals_linear_then_activation(isa, rng, dtype, act, rows, in_f, out_f):
    x = rng.standard_normal((rows, in_f)).astype(dtype)
    w = rng.standard_normal((out_f, in_f)).astype(dtype)
    b = rng.standard_normal(out_f).astype(dtype)
    y, ws = ops.linear_act_forward(x, w, b, act)
    y_ref, act_ws = unfused(x, w, b, act)
    assert y.dtype == dtype and y.shape == (rows, out_f)
    np.testing.assert_array_equal(y, y_ref)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx, dw, db = ops.linear_act_backward(dy, ws)
    (dz,) = (ops.relu_backward if act == "relu" else ops.gelu_backward)(dy, act_ws)
    _, lin_ws = ops.linear_forward(x, w, b)
    for a, e in zip((dx, dw, db), ops.linear_backward(dz, lin_ws)):
        np.testing.assert_array_equal(a, e)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("act", ACTS)
def test_threads_and_leading_shape(rng, threads, act):
    seqblocks.set_num_threads(threads)
    x = rng.standard_normal((3, 200, 96)).astype(np.float32)
    w = rng.standard_normal((300, 96)).astype(np.float32)
    y, ws = ops.linear_act_forward(x, w, None, act, needs_grad=False)
    assert ws is None and y.shape == (3, 200, 300)
    np.testing.assert_array_equal(y, unfused(x.reshape(600, 96), w, None, act)[0].reshape(3, 200, 300))


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_float64_reference(isa, rng, act, dtype):
    x = rng.standard_normal((2, 19, 33)).astype(dtype)
    w = (rng.standard_normal((65, 33)) / 4).astype(dtype)
    b = rng.standard_normal(65).astype(dtype)
    dy = rng.standard_normal((2, 19, 65)).astype(dtype)
    y, ws = ops.linear_act_forward(x, w, b, act)
    grads = ops.linear_act_backward(dy, ws)
    with seqblocks.backend("numpy"):
        up = [a.astype(np.float64) for a in (x, w, b, dy)]
        y64, ws64 = ops.linear_act_forward(*up[:3], act)
        grads64 = ops.linear_act_backward(up[3], ws64)
    x2, dy2 = np.abs(up[0].reshape(-1, 33)), np.abs(up[3].reshape(-1, 65))
    mag_z = np.abs(up[0]) @ np.abs(up[1]).T + np.abs(up[2])
    # act' is at most 1.13 (gelu): z's rounding error passes through scaled by at most that
    assert_close(y, y64, magnitude=1.13 * mag_z, factor=sum_factor(33), what="y")
    # dz = dy act'(z): act' is smooth for gelu (its error follows z's); relu's is 0/1 and equal on
    # both sides away from z = 0, where random data does not land
    mag_dz = 1.13 * dy2
    assert_close(grads[0], grads64[0], magnitude=mag_dz.reshape(dy.shape) @ np.abs(up[1]),
                 factor=sum_factor(65) + sum_factor(33), what="dx")
    assert_close(grads[1], grads64[1], magnitude=mag_dz.T @ x2, factor=sum_factor(38) + sum_factor(33),
                 what="dweight")
    assert_close(grads[2], grads64[2], magnitude=mag_dz.sum(0), factor=sum_factor(38) + sum_factor(33),
                 what="dbias")


@pytest.mark.parametrize("backend", ["numpy", "native"])
@pytest.mark.parametrize("act", ACTS)
def test_gradcheck(rng, backend, act):
    x = rng.standard_normal((2, 3, 5))
    w = rng.standard_normal((4, 5))
    b = rng.standard_normal(4)
    with seqblocks.backend(backend):
        gradcheck(lambda x, w, b: ops.linear_act_forward(x, w, b, act), ops.linear_act_backward, [x, w, b])


@pytest.mark.parametrize("act", ACTS)
def test_torch_parity(rng, act):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rng.standard_normal((3, 17, 65)).astype(np.float32)
    w = (rng.standard_normal((33, 65)) / 8).astype(np.float32)
    b = rng.standard_normal(33).astype(np.float32)
    dy = rng.standard_normal((3, 17, 33)).astype(np.float32)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    tz = F.linear(tx, tw, tb)
    ty = F.relu(tz) if act == "relu" else F.gelu(tz, approximate="none" if act == "gelu" else "tanh")
    ty.backward(torch.tensor(dy))
    y, ws = ops.linear_act_forward(x, w, b, act)
    dx, dw, db = ops.linear_act_backward(dy, ws)
    x2, dy2 = np.abs(x.reshape(-1, 65)).astype(np.float64), np.abs(dy.reshape(-1, 33)).astype(np.float64)
    mag_z = np.abs(x) @ np.abs(w).T + np.abs(b)
    # both sides carry sum rounding errors (and torch's erf-GELU is less accurate than ours)
    assert_close(y, ty.detach().numpy(), magnitude=1.13 * mag_z, factor=2 * sum_factor(65) + 8, what="y")
    assert_close(dx, tx.grad.numpy(), magnitude=1.13 * np.abs(dy) @ np.abs(w), factor=2 * sum_factor(33) + 8,
                 what="dx")
    assert_close(dw, tw.grad.numpy(), magnitude=1.13 * dy2.T @ x2, factor=2 * sum_factor(51) + 8, what="dweight")
    assert_close(db, tb.grad.numpy(), magnitude=1.13 * dy2.sum(0), factor=2 * sum_factor(51) + 8, what="dbias")


def test_bad_input():
    x, w = np.ones((2, 3), np.float32), np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="activation: expected one of .*got 'tanh'"):
        ops.linear_act_forward(x, w, None, "tanh")
    with pytest.raises(TypeError, match="expected arrays of one dtype, got x is float32, weight is float64"):
        ops.linear_act_forward(x, w.astype(np.float64))
    with pytest.raises(ValueError, match=r"x: expected last dimension 3 .*got shape \(2, 5\)"):
        ops.linear_act_forward(np.ones((2, 5), np.float32), w)
    with pytest.raises(ValueError, match=r"bias: expected shape \(4,\), got \(3,\)"):
        ops.linear_act_forward(x, w, np.ones(3, np.float32))
    _, ws = ops.linear_act_forward(x, w, None, "gelu")
    with pytest.raises(ValueError, match=r"grad_output: expected shape \(2, 4\).*got \(2, 3\)"):
        ops.linear_act_backward(np.ones((2, 3), np.float32), ws)
    with pytest.raises(TypeError, match="grad_output: expected dtype float32.*got float64"):
        ops.linear_act_backward(np.ones((2, 4)), ws)
    with pytest.raises(ValueError, match="activation: expected 'relu', 'gelu_erf' or 'gelu_tanh', got 'elu'"):
        seqblocks._core.linear_act(x, w, None, "elu", False)
