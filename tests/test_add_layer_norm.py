"""add_layer_norm pair (residual add + layer norm): native vs reference on every ISA over shapes
that hit SIMD tails, bit-equality with layer_norm(x + r), float64 finite differences of both
backends, PyTorch parity, bad input."""

import numpy as np
import pytest

import seqblocks
from seqblocks import ops, reference
from seqblocks.testing import assert_close, gradcheck, sum_factor

SHAPES = [(1, 1), (3, 7), (2, 15), (5, 16), (4, 17), (3, 31), (2, 33), (2, 63), (3, 65), (2, 127), (1, 129),
          (70, 512), (2, 3, 5)]


def _inputs(rng, shape, dtype, affine=True):
    x = rng.standard_normal(shape).astype(dtype)
    r = rng.standard_normal(shape).astype(dtype)
    k = shape[-1]
    w = (rng.standard_normal(k) + 1).astype(dtype) if affine else None
    b = rng.standard_normal(k).astype(dtype) if affine else None
    return x, r, w, b


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_reference_every_isa(rng, isa, shape, dtype):
    x, r, w, b = _inputs(rng, shape, dtype, affine=shape[-1] != 16)
    k = shape[-1]
    (y, s), ws = ops.add_layer_norm_forward(x, r, k, w, b, 1e-5)
    with seqblocks.backend("numpy"):
        (ye, se), wse = ops.add_layer_norm_forward(x, r, k, w, b, 1e-5)
    assert np.array_equal(s, se)
    tol = {"factor": sum_factor(k) * 4, "magnitude": 4.0 * (1.0 if w is None else np.abs(w).max() + 1.0)}
    assert_close(y, ye, what="y", **tol)
    dy, ds = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    for grads in ((dy, ds), (dy, None)):
        got = ops.add_layer_norm_backward(grads, ws)
        want = reference.add_layer_norm_backward(grads, wse)
        assert got[0] is got[1]
        assert_close(got[0], want[0], what="dx", **tol)
        if w is not None:
            rows = x.size // k
            assert_close(got[2], want[2], what="dweight", factor=sum_factor(rows * k) * 4, magnitude=4.0 * rows)
            assert_close(got[3], want[3], what="dbias", factor=sum_factor(rows) * 4, magnitude=4.0 * rows)
        else:
            assert got[2] is None and got[3] is None


def test_equals_layer_norm_of_sum(rng):
    """Bit-identical to layer_norm_forward/backward of (x + r), for 1 and 2 threads."""
    x, r, w, b = _inputs(rng, (37, 96), np.float32)
    dy, ds = rng.standard_normal((37, 96)).astype(np.float32), rng.standard_normal((37, 96)).astype(np.float32)
    y_ln, ws_ln = ops.layer_norm_forward(x + r, 96, w, b)
    dx_ln, dw_ln, db_ln = ops.layer_norm_backward(dy, ws_ln)
    for n in (1, 2):
        seqblocks.set_num_threads(n)
        (y, s), ws = ops.add_layer_norm_forward(x, r, 96, w, b)
        dx, dr, dw, db = ops.add_layer_norm_backward((dy, ds), ws)
        assert np.array_equal(y, y_ln) and np.array_equal(s, x + r)
        assert np.array_equal(dx, dx_ln + ds) and np.array_equal(dw, dw_ln) and np.array_equal(db, db_ln)


@pytest.mark.parametrize("backend", ["numpy", "native"])
def test_gradcheck(rng, backend):
    x, r, w, b = _inputs(rng, (3, 2, 5), np.float64)

    def fwd(x, r, w, b):
        with seqblocks.backend(backend):
            return ops.add_layer_norm_forward(x, r, (2, 5), w.reshape(2, 5), b.reshape(2, 5))

    def bwd(g, ws):
        with seqblocks.backend(backend):
            dx, dr, dw, db = ops.add_layer_norm_backward(g, ws)
        return dx, dr, dw.reshape(-1), db.reshape(-1)

    w10, b10 = rng.standard_normal(10) + 1, rng.standard_normal(10)
    gradcheck(fwd, bwd, [x, r, w10, b10], what=f"add_layer_norm ({backend})")


def test_inference_mode(rng):
    x, r, w, b = _inputs(rng, (4, 33), np.float32)
    (y, s), ws = ops.add_layer_norm_forward(x, r, 33, w, b, needs_grad=False)
    assert ws is None
    (y2, _), _ = ops.add_layer_norm_forward(x, r, 33, w, b)
    assert np.array_equal(y, y2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 7), (5, 16), (4, 17), (2, 33), (3, 65), (70, 512), (2, 3, 5)])
@pytest.mark.parametrize("backend", ["numpy", "native"])
def test_in_place_equals_out_of_place(rng, isa, shape, dtype, backend):
    """y written over the residual: the same bits as the out-of-place y, residual's array returned."""
    x, r, w, b = _inputs(rng, shape, dtype, affine=shape[-1] != 16)
    with seqblocks.backend(backend):
        (y, _), _ = ops.add_layer_norm_forward(x, r, shape[-1], w, b, needs_grad=False)
        x_before, r_work = x.copy(), r.copy()
        (y2, s2), ws = ops.add_layer_norm_forward(x, r_work, shape[-1], w, b, needs_grad=False, in_place=True)
    assert y2 is r_work and s2 is None and ws is None
    np.testing.assert_array_equal(y2, y)
    np.testing.assert_array_equal(x, x_before)


def test_in_place_bad_input(rng):
    x, r, w, b = _inputs(rng, (6, 40), np.float32)
    with pytest.raises(ValueError, match="in_place: expected needs_grad=False"):
        ops.add_layer_norm_forward(x, r, 40, w, b, in_place=True)
    ro = r.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="residual: expected a writable C-contiguous array for in_place"):
        ops.add_layer_norm_forward(x, ro, 40, w, b, needs_grad=False, in_place=True)
    wide = rng.standard_normal((6, 80)).astype(np.float32)
    with pytest.raises(ValueError, match="residual: expected a writable C-contiguous array for in_place"):
        ops.add_layer_norm_forward(x, wide[:, ::2], 40, w, b, needs_grad=False, in_place=True)
    both = rng.standard_normal((7, 40)).astype(np.float32)
    with pytest.raises(ValueError, match="x: expected memory apart from residual's for in_place"):
        ops.add_layer_norm_forward(both[1:], both[:6], 40, w, b, needs_grad=False, in_place=True)
    with pytest.raises(ValueError, match="x: expected memory apart"):  # the binding checks too
        seqblocks._core.add_layer_norm_forward(both[1:], both[:6], w, b, 1e-5, False, True)
    with pytest.raises(ValueError, match="in_place: expected needs_grad=False"):
        seqblocks._core.add_layer_norm_forward(x, r, w, b, 1e-5, True, True)


def test_torch_parity(rng):
    torch = pytest.importorskip("torch")
    x, r, w, b = _inputs(rng, (6, 24), np.float64)
    dy, ds = rng.standard_normal((6, 24)), rng.standard_normal((6, 24))
    tx, tr, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, r, w, b))
    ts = tx + tr
    ty = torch.nn.functional.layer_norm(ts, (24,), tw, tb, 1e-5)
    ((ty * torch.tensor(dy)).sum() + (ts * torch.tensor(ds)).sum()).backward()
    for backend in ("numpy", "native"):
        with seqblocks.backend(backend):
            (y, s), ws = ops.add_layer_norm_forward(x, r, 24, w, b)
            dx, dr, dw, db = ops.add_layer_norm_backward((dy, ds), ws)
        tol = {"factor": 4 * sum_factor(24), "magnitude": 10.0}
        assert_close(y, ty.detach().numpy(), **tol)
        assert_close(s, ts.detach().numpy(), **tol)
        for got, t in ((dx, tx), (dr, tr), (dw, tw), (db, tb)):
            assert_close(got, t.grad.numpy(), **tol)


def test_bad_input(rng):
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"residual: expected shape \(3, 4\) \(x's\), got \(3, 5\)"):
        ops.add_layer_norm_forward(x, np.zeros((3, 5), np.float32), 4)
    with pytest.raises(TypeError, match="residual: expected dtype float32 \\(x's\\), got float64"):
        ops.add_layer_norm_forward(x, np.zeros((3, 4)), 4)
    with pytest.raises(ValueError, match=r"x: expected trailing dimensions \(5,\)"):
        ops.add_layer_norm_forward(x, x, 5)
    with pytest.raises(ValueError, match=r"weight: expected shape \(4,\)"):
        ops.add_layer_norm_forward(x, x, 4, np.ones(3, np.float32))
    _, ws = ops.add_layer_norm_forward(x, x, 4)
    with pytest.raises(ValueError, match=r"grad_output: expected shape \(3, 4\), got \(4, 3\)"):
        ops.add_layer_norm_backward((np.zeros((4, 3), np.float32), None), ws)
    with pytest.raises(TypeError, match="grad_s: expected dtype float32"):
        ops.add_layer_norm_backward((x, np.zeros((3, 4))), ws)
    with pytest.raises(TypeError, match="grad_output: expected a pair"):
        ops.add_layer_norm_backward(x, ws)
    with pytest.raises(ValueError, match="workspace: expected the workspace returned by add_layer_norm_forward"):
        ops.add_layer_norm_backward((x, None), {"op": "layer_norm"})
