"""layer_norm_forward / layer_norm_backward: the NumPy reference against finite differences and
PyTorch, the native kernels against the reference on every ISA (tail shapes), thread-count
invariance of dweight/dbias, and bad input."""

import numpy as np
import pytest

import seqblocks
from seqblocks import ops, reference
from seqblocks.testing import assert_close, gradcheck, sum_factor

DTYPES = [np.float32, np.float64]
TAILS = [1, 3, 7, 15, 16, 17, 31, 33, 63, 65, 127, 129]


def _inputs(rng, shape, k_shape, dtype, affine=(True, True)):
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)
    w = rng.standard_normal(k_shape).astype(dtype) if affine[0] else None
    b = rng.standard_normal(k_shape).astype(dtype) if affine[1] else None
    return x, w, b


def _check_against_reference(x, dims, w, b, eps=1e-5, rng=None):
    """ops (native or numpy) vs the float64 reference. Tolerances: x - mean carries the error of
    the mean, ~sum_factor(k) eps (|x| + mean|x|); it is scaled by rstd, weight and summed again
    (with the same factor) in the backward reductions."""
    k = int(np.prod(dims))
    rows = x.size // max(k, 1)
    y, ws = ops.layer_norm_forward(x, dims, w, b, eps)
    as64 = (lambda a: None if a is None else a.astype(np.float64))
    y64, ws64 = reference.layer_norm_forward(x.astype(np.float64), dims, as64(w), as64(b), eps)
    x2 = x.astype(np.float64).reshape(rows, k)
    rstd = ws64["rstd"][:, None]
    xhat = (x2 - ws64["mean"][:, None]) * rstd
    spread = np.abs(xhat) + np.abs(x2).mean(axis=1, keepdims=True) * rstd  # |xhat| + error scale of the mean
    w2 = np.ones((1, k)) if w is None else np.abs(w.astype(np.float64)).reshape(1, k)
    b2 = 0.0 if b is None else np.abs(b.astype(np.float64)).reshape(1, k)
    assert y.dtype == x.dtype and y.shape == x.shape
    assert_close(y, y64, magnitude=(spread * w2 + b2).reshape(x.shape), factor=sum_factor(k), what="y")

    dy = (rng or np.random.default_rng(5)).standard_normal(x.shape).astype(x.dtype)
    dx, dw, db = ops.layer_norm_backward(dy, ws)
    dx64, dw64, db64 = reference.layer_norm_backward(dy.astype(np.float64), ws64)
    g = np.abs(dy.astype(np.float64)).reshape(rows, k) * w2
    mag_dx = rstd * (g + g.mean(axis=1, keepdims=True) + spread * (g * spread).mean(axis=1, keepdims=True))
    assert_close(dx, dx64, magnitude=mag_dx.reshape(x.shape), factor=2 * sum_factor(k), what="dx")
    dy2 = np.abs(dy.astype(np.float64)).reshape(rows, k)
    if w is None:
        assert dw is None
    else:
        assert dw.dtype == x.dtype
        assert_close(dw, dw64, magnitude=(dy2 * spread).sum(axis=0).reshape(dims),
                     factor=sum_factor(rows) + sum_factor(k), what="dweight")
    if b is None:
        assert db is None
    else:
        assert_close(db, db64, magnitude=dy2.sum(axis=0).reshape(dims), factor=sum_factor(rows), what="dbias")


# --- reference -----------------------------------------------------------------------------

@pytest.mark.parametrize("shape,dims", [((4, 5), (5,)), ((2, 3, 4), (3, 4)), ((6,), (6,)), ((3, 1), (1,))])
@pytest.mark.parametrize("affine", [(True, True), (True, False), (False, False), (False, True)])
def test_reference_gradcheck(rng, shape, dims, affine):
    x, w, b = _inputs(rng, shape, dims, np.float64, affine)
    arrays = [a for a in (x, w, b) if a is not None]

    def forward(*arrs):
        it = iter(arrs)
        xx = next(it)
        ww = next(it) if affine[0] else None
        bb = next(it) if affine[1] else None
        return reference.layer_norm_forward(xx, dims, ww, bb, 1e-5)

    def backward(g, ws):
        dx, dw, db = reference.layer_norm_backward(g, ws)
        return [dx] + ([dw] if affine[0] else []) + ([db] if affine[1] else [])

    gradcheck(forward, backward, arrays)


@pytest.mark.parametrize("shape,dims", [((8, 33), (33,)), ((2, 5, 3, 7), (3, 7)), ((17,), (17,))])
@pytest.mark.parametrize("affine", [(True, True), (False, False), (True, False)])
@pytest.mark.parametrize("backend", ["numpy", "native"])
def test_torch_parity(rng, shape, dims, affine, backend):
    torch = pytest.importorskip("torch")
    x, w, b = _inputs(rng, shape, dims, np.float64, affine)
    dy = rng.standard_normal(shape)
    with seqblocks.backend(backend):
        y, ws = ops.layer_norm_forward(x, dims, w, b, 1e-3)
        dx, dw, db = ops.layer_norm_backward(dy, ws)
    tx = torch.tensor(x, requires_grad=True)
    tw = None if w is None else torch.tensor(w, requires_grad=True)
    tb = None if b is None else torch.tensor(b, requires_grad=True)
    ty = torch.nn.functional.layer_norm(tx, dims, tw, tb, 1e-3)
    ty.backward(torch.tensor(dy))
    k = int(np.prod(dims))
    mag = 1.0 + np.abs(ty.detach().numpy())  # float64: any formula difference is far above this
    assert_close(y, ty.detach().numpy(), magnitude=mag, factor=sum_factor(k))
    assert_close(dx, tx.grad.numpy(), magnitude=1.0 + np.abs(tx.grad.numpy()), factor=4 * sum_factor(k))
    rows = x.size // k
    if w is not None:
        assert_close(dw, tw.grad.numpy(), magnitude=1.0 + np.abs(tw.grad.numpy()), factor=sum_factor(rows * k))
    else:
        assert dw is None
    if b is not None:
        assert_close(db, tb.grad.numpy(), magnitude=1.0 + np.abs(tb.grad.numpy()), factor=sum_factor(rows))
    else:
        assert db is None


# --- ops (native kernels on every ISA) -------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", TAILS)
def test_tail_widths(isa, rng, dtype, k):
    x, w, b = _inputs(rng, (5, k), (k,), dtype)
    _check_against_reference(x, (k,), w, b, rng=rng)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [1, 2, 3, 7, 33, 65, 129, 1000])
@pytest.mark.parametrize("affine", [(True, True), (False, False), (True, False), (False, True)])
def test_row_counts_and_affine(isa, rng, dtype, rows, affine):
    x, w, b = _inputs(rng, (rows, 40), (40,), dtype, affine)
    _check_against_reference(x, (40,), w, b, rng=rng)


@pytest.mark.parametrize("dtype", DTYPES)
def test_multi_dim_normalized_shape_and_wide_rows(isa, rng, dtype):
    x, w, b = _inputs(rng, (3, 4, 5, 6), (5, 6), dtype)
    _check_against_reference(x, (5, 6), w, b, eps=1e-3, rng=rng)
    x, w, b = _inputs(rng, (6, 4099), (4099,), dtype)
    _check_against_reference(x, (4099,), w, b, rng=rng)


@pytest.mark.parametrize("affine", [(True, True), (False, True)])
def test_large_outputs_use_streaming_stores(isa, rng, affine):
    """Outputs of 4 MiB and more are written with streaming stores from each row's first aligned
    element: rows of 513 floats start at every alignment."""
    x, w, b = _inputs(rng, (2049, 513), (513,), np.float32, affine)
    _check_against_reference(x, (513,), w, b, rng=rng)


@pytest.mark.parametrize("affine", [(True, True), (False, False)])
def test_native_gradcheck(isa, rng, affine):
    dims = (3, 5)
    x, w, b = _inputs(rng, (4, 3, 5), dims, np.float64, affine)
    arrays = [a for a in (x, w, b) if a is not None]

    def forward(*arrs):
        return ops.layer_norm_forward(arrs[0], dims, *(arrs[1:] if affine[0] else (None, None)), eps=1e-5)

    def backward(g, ws):
        dx, dw, db = ops.layer_norm_backward(g, ws)
        return [dx] + ([dw, db] if affine[0] else [])

    gradcheck(forward, backward, arrays)


def test_dweight_dbias_do_not_depend_on_thread_count(isa, rng):
    x, w, b = _inputs(rng, (1037, 129), (129,), np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    results = []
    for n in (1, 2, 3, 5):
        seqblocks.set_num_threads(n)
        y, ws = ops.layer_norm_forward(x, 129, w, b)
        results.append((y,) + ops.layer_norm_backward(dy, ws))
    for other in results[1:]:
        for a, e in zip(other, results[0]):
            np.testing.assert_array_equal(a, e)


def test_concurrent_calls_from_python_threads(rng):
    import concurrent.futures

    problems = [_inputs(rng, (64, 129), (129,), np.float32) for _ in range(6)]
    grads = [rng.standard_normal((64, 129)).astype(np.float32) for _ in range(6)]

    def run(i):
        x, w, b = problems[i]
        y, ws = ops.layer_norm_forward(x, 129, w, b)
        return (y,) + ops.layer_norm_backward(grads[i], ws)

    serial = [run(i) for i in range(6)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, list(range(6)) * 4))
    for i, got in enumerate(results):
        for a, e in zip(got, serial[i % 6]):
            np.testing.assert_array_equal(a, e)


def test_inference_mode_and_reuse(isa, rng):
    x, w, b = _inputs(rng, (4, 9), (9,), np.float32)
    y0, ws0 = ops.layer_norm_forward(x, (9,), w, b, needs_grad=False)
    assert ws0 is None
    copies = [a.copy() for a in (x, w, b)]
    y, ws = ops.layer_norm_forward(x, (9,), w, b)
    np.testing.assert_array_equal(y0, y)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dy_copy = dy.copy()
    first = ops.layer_norm_backward(dy, ws)
    second = ops.layer_norm_backward(dy, ws)
    for a, e in zip(first, second):
        np.testing.assert_array_equal(a, e)
    np.testing.assert_array_equal(dy, dy_copy)
    for before, after in zip(copies, (x, w, b)):
        np.testing.assert_array_equal(before, after)


def test_non_contiguous_and_empty(isa, rng):
    x = rng.standard_normal((10, 24)).astype(np.float32)[::2, ::2]
    _check_against_reference(x, (12,), None, None, rng=rng)
    y, ws = ops.layer_norm_forward(np.ones((0, 7), np.float32), (7,), np.ones(7, np.float32), np.zeros(7, np.float32))
    assert y.shape == (0, 7)
    dx, dw, db = ops.layer_norm_backward(np.ones((0, 7), np.float32), ws)
    assert dx.shape == (0, 7) and (dw == 0).all() and (db == 0).all()


def test_constant_rows_and_nan(isa):
    x = np.full((3, 17), 2.5, np.float32)
    y, _ = ops.layer_norm_forward(x, 17)
    assert (y == 0).all()
    x[1, 4] = np.nan
    y, _ = ops.layer_norm_forward(x, 17)
    assert np.isnan(y[1]).all() and not np.isnan(y[[0, 2]]).any()


# --- bad input -------------------------------------------------------------------------------

def test_bad_input():
    x = np.ones((4, 5), np.float32)
    with pytest.raises(ValueError, match=r"x: expected trailing dimensions \(6,\).*got shape \(4, 5\)"):
        ops.layer_norm_forward(x, 6)
    with pytest.raises(ValueError, match=r"weight: expected shape \(5,\).*got \(4,\)"):
        ops.layer_norm_forward(x, 5, np.ones(4, np.float32))
    with pytest.raises(ValueError, match=r"bias: expected shape \(5,\)"):
        ops.layer_norm_forward(x, 5, None, np.ones((1, 5), np.float32))
    with pytest.raises(TypeError, match=r"x is float32, weight is float64"):
        ops.layer_norm_forward(x, 5, np.ones(5))
    with pytest.raises(TypeError, match=r"x: expected a float32 or float64 array, got dtype int64"):
        ops.layer_norm_forward(np.ones((4, 5), np.int64), 5)
    with pytest.raises(TypeError, match="normalized_shape"):
        ops.layer_norm_forward(x, "5")
    with pytest.raises(ValueError, match="eps"):
        ops.layer_norm_forward(x, 5, eps=-1.0)
    _, ws = ops.layer_norm_forward(x, 5)
    with pytest.raises(ValueError, match=r"grad_output: expected shape \(4, 5\), got \(5, 4\)"):
        ops.layer_norm_backward(np.ones((5, 4), np.float32), ws)
    with pytest.raises(TypeError, match=r"grad_output: expected dtype float32"):
        ops.layer_norm_backward(np.ones((4, 5)), ws)
    with pytest.raises(ValueError, match="workspace"):
        ops.layer_norm_backward(np.ones((4, 5), np.float32), None)


def test_core_rejects_bad_input_directly():
    """The private binding validates too: calling it wrongly never crashes the interpreter."""
    core = seqblocks._core
    x = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError):
        core.layer_norm_forward(np.ones(4, np.float32), None, None, 1e-5, True)
    with pytest.raises(TypeError):
        core.layer_norm_forward(np.ones((3, 4), np.int32), None, None, 1e-5, True)
    with pytest.raises(ValueError):
        core.layer_norm_forward(x, np.ones(5, np.float32), None, 1e-5, True)
    with pytest.raises(TypeError):
        core.layer_norm_forward(x, None, np.ones(4), 1e-5, True)
    with pytest.raises(ValueError):
        core.layer_norm_forward(np.ones((3, 0), np.float32), None, None, 1e-5, True)
    y, mean, rstd = core.layer_norm_forward(x, None, None, 1e-5, True)
    with pytest.raises(ValueError):
        core.layer_norm_backward(np.ones((4, 3), np.float32), x, mean, rstd, None, False, False)
    with pytest.raises(TypeError):
        core.layer_norm_backward(np.ones((3, 4)), x, mean, rstd, None, False, False)
    with pytest.raises(ValueError):
        core.layer_norm_backward(x, x, mean[:2], rstd, None, False, False)
