"""softmax / log_softmax forward-backward pairs: the NumPy reference against finite differences
and PyTorch, the native kernels against the reference on every ISA (tail widths, every dim),
and bad input."""

import numpy as np
import pytest

import seqblocks
from seqblocks import ops, reference
from seqblocks.testing import assert_close, gradcheck, sum_factor

DTYPES = [np.float32, np.float64]
TAILS = [1, 3, 7, 15, 16, 17, 31, 33, 63, 65, 127, 129]
OPS = ["softmax", "log_softmax"]
#: ULPs of the vectorized exp inside the kernels, added to the rounding of the sums.
EXP_ULPS = 4.0


def _pair(op, module=ops):
    return getattr(module, f"{op}_forward"), getattr(module, f"{op}_backward")


def _check_against_reference(op, x, dim, rng):
    """ops (native or numpy) vs the float64 reference.

    softmax y = exp(x - m) / s: relative error of exp plus that of the n-term sum s, so
    magnitude |y| and factor sum_factor(n) + EXP_ULPS. log_softmax y = (x - m) - log s: absolute
    error eps * (|x - m| + |log s|) plus the relative error of s (d log s = ds / s), so magnitude
    |x - m| + |log s| + 1. Backward: dx sums n products of those, so magnitudes are the same
    formulas in absolute values and the factor doubles.
    """
    fwd, bwd = _pair(op)
    fwd64, bwd64 = _pair(op, reference)
    n = x.shape[dim] if x.ndim else 1
    y, ws = fwd(x, dim)
    y64, ws64 = fwd64(x.astype(np.float64), dim)
    assert y.dtype == x.dtype and y.shape == x.shape
    factor = sum_factor(n) + EXP_ULPS
    x64 = x.astype(np.float64)
    p = np.exp(reference.log_softmax_forward(x64, dim)[0]) if op == "log_softmax" else y64
    if op == "softmax":
        assert_close(y, y64, magnitude=np.abs(y64), factor=factor, what="y")
    else:
        logs = x64 - np.max(x64, axis=dim, keepdims=True) - y64
        mag = np.abs(x64 - np.max(x64, axis=dim, keepdims=True)) + np.abs(logs) + 1.0
        assert_close(y, y64, magnitude=mag, factor=factor, what="y")
    dy = rng.standard_normal(x.shape).astype(x.dtype)
    (dx,) = bwd(dy, ws)
    (dx64,) = bwd64(dy.astype(np.float64), {**ws64, "y": y64})
    ady = np.abs(dy.astype(np.float64))
    if op == "softmax":
        mag = p * (ady + np.sum(ady * p, axis=dim, keepdims=True))
    else:
        mag = ady + p * np.sum(ady, axis=dim, keepdims=True)
    assert_close(dx, dx64, magnitude=mag, factor=2 * factor, what="dx")


# --- reference -----------------------------------------------------------------------------

@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape,dim", [((3, 5), -1), ((3, 5), 0), ((2, 3, 4), 1), ((6,), 0), ((4, 1), 1)])
def test_reference_gradcheck(rng, op, shape, dim):
    fwd, bwd = _pair(op, reference)
    gradcheck(lambda x: fwd(x, dim), bwd, [rng.standard_normal(shape) * 2])


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape,dim", [((7, 33), -1), ((7, 33), 0), ((2, 5, 3, 4), 2), ((17,), 0), ((), 0)])
@pytest.mark.parametrize("backend", ["numpy", "native"])
def test_torch_parity(rng, op, shape, dim, backend):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal(shape) * 3
    dy = rng.standard_normal(shape)
    fwd, bwd = _pair(op)
    with seqblocks.backend(backend):
        y, ws = fwd(x, dim)
        (dx,) = bwd(dy, ws)
    tx = torch.tensor(x, requires_grad=True)
    ty = getattr(torch, op)(tx, dim)
    ty.backward(torch.tensor(dy))
    n = x.shape[dim] if x.ndim else 1
    et, gt = ty.detach().numpy(), tx.grad.numpy()
    assert_close(y, et, magnitude=1.0 + np.abs(et), factor=sum_factor(n) + EXP_ULPS)
    assert_close(dx, gt, magnitude=1.0 + np.abs(gt), factor=2 * (sum_factor(n) + EXP_ULPS))


# --- ops (native kernels on every ISA) -------------------------------------------------------

@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", TAILS)
def test_tail_widths_last_dim(isa, rng, op, dtype, n):
    x = (rng.standard_normal((6, n)) * 4).astype(dtype)
    _check_against_reference(op, x, -1, rng)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,dim", [((5, 7, 9), 0), ((5, 7, 9), 1), ((33, 65), 0), ((1000, 17), -1),
                                       ((3, 4099), 1), ((2, 1, 3), 1)])
def test_every_dim_and_row_counts(isa, rng, op, dtype, shape, dim):
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    _check_against_reference(op, x, dim, rng)


@pytest.mark.parametrize("op", OPS)
def test_large_outputs_use_streaming_stores(isa, rng, op):
    """dx of 4 MiB and more is written with streaming stores from each row's first aligned
    element: rows of 513 floats start at every alignment."""
    x = (rng.standard_normal((2049, 513)) * 4).astype(np.float32)
    _check_against_reference(op, x, -1, rng)


@pytest.mark.parametrize("op", OPS)
def test_native_gradcheck(isa, rng, op):
    fwd, bwd = _pair(op)
    gradcheck(lambda x: fwd(x, -1), bwd, [rng.standard_normal((3, 19)) * 2])
    gradcheck(lambda x: fwd(x, 0), bwd, [rng.standard_normal((5, 3)) * 2])


@pytest.mark.parametrize("dtype,lo,hi", [(np.float32, -87.3, 88.3), (np.float64, -708.0, 709.0)])
def test_kernel_exp_accuracy(isa, dtype, lo, hi):
    """The kernels' vectorized exp, seen directly: the log_softmax backward with grad_output = e_0
    gives dx_j = -exp(y_j) * 1 for j > 0 (one fused multiply-add, exact). Within EXP_ULPS of the
    float64 exp on the whole range; 0 below the smallest normal number, -inf -> 0, NaN -> NaN."""
    y = np.concatenate([[0.0], np.linspace(lo, hi, 20001), np.random.default_rng(0).uniform(-1, 1, 5000),
                        [-np.inf, 2 * lo, lo - 0.5, np.nan]]).astype(dtype)[None, :]
    dy = np.zeros_like(y)
    dy[0, 0] = 1
    dx = seqblocks._core.softmax_backward(dy, y, True)
    with np.errstate(over="ignore"):
        expected = np.exp(y[0, 1:].astype(np.float64))
    assert_close(-dx[0, 1:], expected, factor=EXP_ULPS, dtype=dtype, what="exp")


@pytest.mark.parametrize("op", OPS)
def test_large_logits_are_stable(isa, op):
    x = np.array([[1000.0, 999.0, -1000.0, 0.0] * 5, [-1e30, 1e30, 0.0, 3.0] * 5], np.float32)
    y, _ = _pair(op)[0](x)
    assert np.isfinite(y[0]).all() and not np.isnan(y).any()
    expected, _ = _pair(op, reference)[0](x.astype(np.float64))
    assert_close(y, expected, magnitude=1.0 + np.abs(expected), factor=sum_factor(20) + EXP_ULPS)


@pytest.mark.parametrize("op", OPS)
def test_inf_and_nan_rows(isa, op):
    x = np.zeros((3, 20), np.float32)
    x[0, 3] = np.inf        # +inf present: NaN row (as PyTorch)
    x[1, :] = -np.inf       # all -inf: NaN row (as PyTorch)
    x[2, 5] = -np.inf       # one -inf: exp gives 0 (log: -inf)
    y, _ = _pair(op)[0](x)
    with np.errstate(invalid="ignore"):
        expected, _ = _pair(op, reference)[0](x.astype(np.float64))
    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
    assert y[2, 5] == (0.0 if op == "softmax" else -np.inf)


def test_results_do_not_depend_on_thread_count(isa, rng):
    x = rng.standard_normal((301, 257)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    outs = []
    for n in (1, 2, 3):
        seqblocks.set_num_threads(n)
        y, ws = ops.softmax_forward(x)
        outs.append((y, ops.softmax_backward(dy, ws)[0]))
    for y, dx in outs[1:]:
        np.testing.assert_array_equal(y, outs[0][0])
        np.testing.assert_array_equal(dx, outs[0][1])


@pytest.mark.parametrize("op", OPS)
def test_inference_mode_reuse_and_empty(isa, rng, op):
    fwd, bwd = _pair(op)
    x = rng.standard_normal((4, 9)).astype(np.float32)
    x_copy = x.copy()
    y0, ws0 = fwd(x, needs_grad=False)
    assert ws0 is None
    y, ws = fwd(x)
    np.testing.assert_array_equal(y0, y)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dy_copy, y_copy = dy.copy(), y.copy()
    np.testing.assert_array_equal(bwd(dy, ws)[0], bwd(dy, ws)[0])
    np.testing.assert_array_equal(dy, dy_copy)
    np.testing.assert_array_equal(y, y_copy)
    np.testing.assert_array_equal(x, x_copy)
    for shape, dim in (((0, 5), -1), ((5, 0), -1), ((0, 5), 0)):
        y, ws = fwd(np.ones(shape, np.float32), dim)
        assert y.shape == shape
        assert bwd(np.ones(shape, np.float32), ws)[0].shape == shape


# --- bad input -------------------------------------------------------------------------------

def test_bad_input():
    x = np.ones((4, 5), np.float32)
    with pytest.raises(IndexError, match=r"dim: expected a dimension in \[-2, 1\].*got 2"):
        ops.softmax_forward(x, 2)
    with pytest.raises(TypeError, match="dim: expected an int"):
        ops.log_softmax_forward(x, 1.0)
    with pytest.raises(TypeError, match=r"x: expected a float32 or float64 array, got dtype int32"):
        ops.softmax_forward(np.ones((2, 2), np.int32))
    _, ws = ops.softmax_forward(x)
    with pytest.raises(ValueError, match=r"grad_output: expected shape \(4, 5\), got \(4, 4\)"):
        ops.softmax_backward(np.ones((4, 4), np.float32), ws)
    with pytest.raises(TypeError, match="grad_output: expected dtype float32"):
        ops.softmax_backward(np.ones((4, 5)), ws)
    with pytest.raises(ValueError, match="workspace"):
        ops.log_softmax_backward(np.ones((4, 5), np.float32), ws)


def test_core_rejects_bad_input_directly():
    core = seqblocks._core
    with pytest.raises(ValueError):
        core.softmax_forward(np.ones(4, np.float32), False)
    with pytest.raises(TypeError):
        core.softmax_forward(np.ones((2, 4), np.int64), False)
    y = core.softmax_forward(np.ones((2, 4), np.float32), False)
    with pytest.raises(ValueError):
        core.softmax_backward(np.ones((4, 2), np.float32), y, False)
    with pytest.raises(TypeError):
        core.softmax_backward(np.ones((2, 4)), y, False)
