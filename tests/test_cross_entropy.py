"""cross_entropy_forward / cross_entropy_backward: the NumPy reference against finite
differences and PyTorch (weights, ignore_index, reductions, label smoothing, probability
targets, (C,) and (N, C, d1, ...) shapes), the native kernels against the reference on every ISA,
the all-ignored "mean" case, and bad input."""

import itertools

import numpy as np
import pytest

import seqblocks
from seqblocks import ops, reference
from seqblocks.testing import assert_close, gradcheck, sum_factor

DTYPES = [np.float32, np.float64]
TAILS = [1, 3, 7, 15, 16, 17, 31, 33, 63, 65, 127, 129]
EXP_ULPS = 4.0
OPTIONS = list(itertools.product([False, True], ["mean", "sum", "none"], [0.0, 0.2]))  # weight, reduction, smoothing


def _problem(rng, shape, dtype, probs=False, ignore_some=True, ignore_index=-100):
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    c = shape[0] if len(shape) == 1 else shape[1]
    if probs:
        q = rng.uniform(0.0, 1.0, shape)
        q /= q.sum(axis=0 if len(shape) == 1 else 1, keepdims=True)
        return x, q.astype(dtype)
    tshape = () if len(shape) == 1 else (shape[0],) + tuple(shape[2:])
    t = rng.integers(0, c, tshape)
    if ignore_some and t.size > 1:
        t.reshape(-1)[:: 3] = ignore_index
    return x, t


def _loss_tolerance(x64, loss64, reduction):
    """Each row loss is a combination of lse - x_c terms: absolute error ~ eps (|x| + |lse|) times
    the n-term sum factor; a reduction sums the rows (another sum factor)."""
    c_axis = 0 if x64.ndim == 1 else 1
    row_mag = np.abs(x64).max(axis=c_axis) * 2 + 1.0
    if reduction == "none":
        return row_mag.reshape(loss64.shape), sum_factor(x64.shape[c_axis]) + EXP_ULPS
    return row_mag.mean() if reduction == "mean" else row_mag.sum(), \
        sum_factor(x64.shape[c_axis]) + sum_factor(row_mag.size) + EXP_ULPS


# --- reference -----------------------------------------------------------------------------

@pytest.mark.parametrize("use_weight,reduction,smoothing", OPTIONS)
@pytest.mark.parametrize("probs", [False, True])
def test_reference_gradcheck(rng, use_weight, reduction, smoothing, probs):
    x, t = _problem(rng, (4, 5), np.float64, probs)
    w = rng.uniform(0.5, 2.0, 5) if use_weight else None
    gradcheck(lambda x: reference.cross_entropy_forward(x, t, w, -100, reduction, smoothing),
              lambda g, ws: reference.cross_entropy_backward(g, ws)[:1], [x])


@pytest.mark.parametrize("use_weight,reduction,smoothing", OPTIONS)
@pytest.mark.parametrize("shape", [(6, 11), (3, 4, 2, 5), (7,)])
@pytest.mark.parametrize("probs", [False, True])
@pytest.mark.parametrize("backend", ["numpy", "native"])
def test_torch_parity(rng, use_weight, reduction, smoothing, shape, probs, backend):
    torch = pytest.importorskip("torch")
    ignore = -100 if probs else 2
    x, t = _problem(rng, shape, np.float64, probs, ignore_index=ignore)
    c = shape[0] if len(shape) == 1 else shape[1]
    w = rng.uniform(0.5, 2.0, c) if use_weight else None
    with seqblocks.backend(backend):
        loss, ws = ops.cross_entropy_forward(x, t, w, ignore, reduction, smoothing)
        g = rng.standard_normal(loss.shape)
        dx, dt, dw = ops.cross_entropy_backward(g, ws)
    assert dt is None and dw is None
    tx = torch.tensor(x, requires_grad=True)
    tl = torch.nn.functional.cross_entropy(tx, torch.tensor(t), None if w is None else torch.tensor(w),
                                           ignore_index=ignore, reduction=reduction, label_smoothing=smoothing)
    tl.backward(torch.tensor(g))
    el, eg = tl.detach().numpy(), tx.grad.numpy()
    assert loss.shape == el.shape and loss.dtype == np.float64
    n = x.size
    assert_close(loss, el, magnitude=1.0 + np.abs(el), factor=sum_factor(n) + EXP_ULPS, what="loss")
    assert_close(dx, eg, magnitude=1.0 + np.abs(eg), factor=sum_factor(n) + EXP_ULPS, what="dinput")


@pytest.mark.parametrize("backend", ["numpy", "native"])
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_all_ignored_mean_is_zero(backend, smoothing):
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    t = np.full(3, -100)
    with seqblocks.backend(backend):
        loss, ws = ops.cross_entropy_forward(x, t, label_smoothing=smoothing)
        assert loss.shape == () and loss == 0.0
        (dx, _, _) = ops.cross_entropy_backward(np.float32(1.0), ws)
        assert (dx == 0).all()
        loss, ws = ops.cross_entropy_forward(np.ones((0, 4), np.float32), np.zeros(0, np.int64))
        assert loss == 0.0 and ops.cross_entropy_backward(1.0, ws)[0].shape == (0, 4)
        loss, _ = ops.cross_entropy_forward(x, t, reduction="sum")
        assert loss == 0.0


# --- ops (native kernels on every ISA) -------------------------------------------------------

def _check_against_reference(x, t, w=None, ignore_index=-100, reduction="mean", smoothing=0.0, rng=None):
    loss, ws = ops.cross_entropy_forward(x, t, w, ignore_index, reduction, smoothing)
    as64 = (lambda a: None if a is None else (a.astype(np.float64) if a.dtype.kind == "f" else a))
    x64 = x.astype(np.float64)
    loss64, ws64 = reference.cross_entropy_forward(x64, as64(t), as64(w), ignore_index, reduction, smoothing)
    assert loss.dtype == x.dtype and loss.shape == loss64.shape
    mag, factor = _loss_tolerance(x64, loss64, reduction)
    assert_close(loss, loss64, magnitude=mag, factor=factor, what="loss")
    g = np.asarray((rng or np.random.default_rng(3)).standard_normal(loss.shape), x.dtype)
    dx, _, _ = ops.cross_entropy_backward(g, ws)
    dx64, _, _ = reference.cross_entropy_backward(g.astype(np.float64), ws64)
    # dinput = s * (p * a - b): each term rounded a few times, exp adds EXP_ULPS.
    assert_close(dx, dx64, magnitude=_grad_scale(ws64, g), factor=2 * EXP_ULPS + 8, what="dinput")


def _grad_scale(ws64, g):
    """|s_i| * (p * |a_i| + |b|) bound for the gradient terms, broadcast to the input's shape."""
    n, c, s = ws64["logp"].shape
    p = np.exp(ws64["logp"])
    w = np.abs(ws64["w"])
    if ws64["reduction"] == "none":
        scale = np.abs(np.asarray(g, np.float64)).reshape(n, s)
    else:
        scale = np.full((n, s), abs(float(g)) / (ws64["denom"] if ws64["reduction"] == "mean" and ws64["denom"] else 1))
    mag = p * w.sum() + w[None, :, None] + p * w.max() + w.max()
    return (scale[:, None, :] * mag).reshape(ws64["shape"])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", TAILS)
def test_tail_class_counts(isa, rng, dtype, c):
    x, t = _problem(rng, (9, c), dtype)
    _check_against_reference(x, t, rng=rng)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("use_weight,reduction,smoothing", OPTIONS)
def test_options(isa, rng, dtype, use_weight, reduction, smoothing):
    x, t = _problem(rng, (37, 33), dtype)
    w = rng.uniform(0.5, 2.0, 33).astype(dtype) if use_weight else None
    _check_against_reference(x, t, w, -100, reduction, smoothing, rng=rng)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(17,), (4, 17, 3), (2, 5, 3, 2), (300, 1), (5, 4099)])
@pytest.mark.parametrize("probs", [False, True])
def test_shapes_and_prob_targets(isa, rng, dtype, shape, probs):
    x, t = _problem(rng, shape, dtype, probs)
    c = shape[0] if len(shape) == 1 else shape[1]
    w = rng.uniform(0.5, 2.0, c).astype(dtype)
    for reduction in ("mean", "none"):
        _check_against_reference(x, t, w, -100, reduction, 0.1, rng=rng)


@pytest.mark.parametrize("probs", [False, True])
def test_large_outputs_use_streaming_stores(isa, rng, probs):
    """dinput of 4 MiB and more is written with streaming stores from each row's first aligned
    element: rows of 1027 floats start at every alignment."""
    x, t = _problem(rng, (1030, 1027), np.float32, probs)
    w = rng.uniform(0.5, 2.0, 1027).astype(np.float32)
    _check_against_reference(x, t, w, -100, "none", 0.1, rng=rng)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_native_gradcheck(isa, rng, reduction):
    x, t = _problem(rng, (5, 7), np.float64)
    w = rng.uniform(0.5, 2.0, 7)
    backward = (lambda g, ws: ops.cross_entropy_backward(g, ws)[:1])
    gradcheck(lambda x: ops.cross_entropy_forward(x, t, w, -100, reduction, 0.1), backward, [x])
    x, q = _problem(rng, (3, 6, 2), np.float64, probs=True)
    gradcheck(lambda x: ops.cross_entropy_forward(x, q, None, -100, reduction, 0.1), backward, [x])


def test_results_do_not_depend_on_thread_count(isa, rng):
    x, t = _problem(rng, (513, 300), np.float32)
    outs = []
    for n in (1, 2, 3):
        seqblocks.set_num_threads(n)
        loss, ws = ops.cross_entropy_forward(x, t, label_smoothing=0.1)
        outs.append((loss, ops.cross_entropy_backward(np.float32(1), ws)[0]))
    for loss, dx in outs[1:]:
        np.testing.assert_array_equal(loss, outs[0][0])
        np.testing.assert_array_equal(dx, outs[0][1])


def test_large_logits_and_reuse(isa, rng):
    x = np.array([[1000.0, -1000.0, 0.0, 999.0], [-1e30, 1e30, 0.0, 3.0]], np.float32)
    t = np.array([3, 0])
    loss, ws = ops.cross_entropy_forward(x, t, reduction="none")
    expected, _ = reference.cross_entropy_forward(x.astype(np.float64), t, reduction="none")
    assert_close(loss, expected, magnitude=1.0 + np.abs(expected), factor=8)
    x_copy = x.copy()
    g = np.ones(2, np.float32)
    np.testing.assert_array_equal(ops.cross_entropy_backward(g, ws)[0], ops.cross_entropy_backward(g, ws)[0])
    np.testing.assert_array_equal(x, x_copy)
    loss0, ws0 = ops.cross_entropy_forward(x, t, reduction="none", needs_grad=False)
    assert ws0 is None
    np.testing.assert_array_equal(loss0, loss)


# --- bad input -------------------------------------------------------------------------------

def test_invalid_targets_raise_index_error():
    x = np.zeros((3, 5), np.float32)
    with pytest.raises(IndexError, match=r"target: expected class indices in \[0, 5\) or ignore_index=-100, got 5"):
        ops.cross_entropy_forward(x, np.array([0, 5, 1]))
    with pytest.raises(IndexError, match=r"target.*got -1"):
        ops.cross_entropy_forward(x, np.array([0, -1, 1]))
    with seqblocks.backend("numpy"):
        with pytest.raises(IndexError, match="target"):
            ops.cross_entropy_forward(x, np.array([0, 7, 1]), ignore_index=5)


def test_bad_input():
    x = np.zeros((3, 5), np.float32)
    t = np.array([0, 1, 2])
    with pytest.raises(ValueError, match=r"target: expected class indices of shape \(3,\).*got \(3, 1\)"):
        ops.cross_entropy_forward(x, t[:, None])
    with pytest.raises(ValueError, match=r"target: expected class probabilities of the input's shape \(3, 5\)"):
        ops.cross_entropy_forward(x, np.zeros((3, 4), np.float32))
    with pytest.raises(TypeError, match=r"input is float32, target is float64"):
        ops.cross_entropy_forward(x, np.zeros((3, 5)))
    with pytest.raises(TypeError, match=r"target: expected an integer array"):
        ops.cross_entropy_forward(x, np.array(["a", "b", "c"]))
    with pytest.raises(ValueError, match=r"ignore_index: expected -100 .*probabilities.*got 3"):
        ops.cross_entropy_forward(x, np.zeros((3, 5), np.float32), ignore_index=3)
    with pytest.raises(ValueError, match=r"weight: expected shape \(5,\)"):
        ops.cross_entropy_forward(x, t, np.ones(4, np.float32))
    with pytest.raises(ValueError, match=r"reduction: expected one of 'mean', 'sum', 'none', got 'avg'"):
        ops.cross_entropy_forward(x, t, reduction="avg")
    with pytest.raises(ValueError, match=r"label_smoothing: expected a float in \[0, 1\], got 1.5"):
        ops.cross_entropy_forward(x, t, label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"input: expected shape \(C,\)"):
        ops.cross_entropy_forward(np.float32(1.0), np.array(0))
    with pytest.raises(TypeError, match=r"input: expected a float32 or float64 array"):
        ops.cross_entropy_forward(np.zeros((3, 5), np.int32), t)
    _, ws = ops.cross_entropy_forward(x, t, reduction="none")
    with pytest.raises(ValueError, match=r"grad_output: expected shape \(3,\) \(the loss\), got \(\)"):
        ops.cross_entropy_backward(np.float32(1), ws)
    with pytest.raises(ValueError, match="workspace"):
        ops.cross_entropy_backward(np.float32(1), {"op": "softmax"})


def test_core_rejects_bad_input_directly():
    core = seqblocks._core
    x = np.zeros((3, 5), np.float32)
    t = np.array([0, 1, 2], np.int64)
    with pytest.raises(IndexError, match="target"):
        core.cross_entropy_forward(x, np.array([0, 9, 1], np.int64), None, None, -100, 0.0, True)
    with pytest.raises(TypeError):
        core.cross_entropy_forward(x, t.astype(np.int32), None, None, -100, 0.0, True)
    with pytest.raises(ValueError):
        core.cross_entropy_forward(x, t[:2], None, None, -100, 0.0, True)
    with pytest.raises(ValueError):
        core.cross_entropy_forward(x, t, np.zeros((3, 5), np.float32), None, -100, 0.0, True)
    with pytest.raises(ValueError):
        core.cross_entropy_forward(x, None, np.zeros((3, 4), np.float32), None, -100, 0.0, True)
    with pytest.raises(ValueError):
        core.cross_entropy_forward(x, t, None, np.ones(4, np.float32), -100, 0.0, True)
    with pytest.raises(ValueError):
        core.cross_entropy_forward(x, t, None, None, -100, 2.0, True)
    with pytest.raises(ValueError):
        core.cross_entropy_forward(np.zeros(5, np.float32), t, None, None, -100, 0.0, True)
    loss, m, ls, qw = core.cross_entropy_forward(x, t, None, None, -100, 0.0, True)
    with pytest.raises(ValueError):
        core.cross_entropy_backward(x, t, None, None, -100, 0.0, m[:2], ls, None, None, 1.0)
    with pytest.raises(ValueError):
        core.cross_entropy_backward(x, t, None, None, -100, 0.0, m, ls, None, np.ones(2, np.float32), 1.0)
