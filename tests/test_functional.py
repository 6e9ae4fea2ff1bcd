"""seqblocks.nn.functional: float64 finite-difference checks of every Function through the tape,
PyTorch parity (forward and autograd backward, float32), on both backends; seeded dropout,
no_grad, backend pinning of workspaces, bad input."""

import numpy as np
import pytest

import seqblocks
import seqblocks.nn.functional as F
from seqblocks import tensor
from tape_helpers import assert_same, tape_gradcheck, to_numpy


@pytest.fixture(params=["native", "numpy"])
def be(request):
    with seqblocks.backend(request.param):
        yield request.param


@pytest.fixture
def r():
    return np.random.default_rng(11)


def away_from_zero(r, shape, lo=0.05):
    x = r.uniform(lo, 2.0, shape)
    return x * np.where(r.random(shape) < 0.5, -1, 1)


# -------------------------------------------------------------- float64 gradient checks


@pytest.mark.parametrize("x_shape", [(5,), (3, 5), (2, 3, 5)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_gradcheck(be, r, x_shape, bias):
    b = r.standard_normal(4) if bias else None
    tape_gradcheck(lambda x, w: F.linear(x, w, None if b is None else tensor(b)), r.standard_normal(x_shape),
                   r.standard_normal((4, 5)))
    if bias:
        tape_gradcheck(F.linear, r.standard_normal(x_shape), r.standard_normal((4, 5)), b)


@pytest.mark.parametrize("padding_idx", [None, 2, -1])
def test_embedding_gradcheck(be, r, padding_idx):
    idx = np.array([[0, 2, 2], [5, 1, 2]])
    w = r.standard_normal((6, 3))
    if padding_idx is None:  # the padding row's gradient is zero by definition, not by calculus
        tape_gradcheck(lambda w: F.embedding(idx, w) * 1.0, w)
    t = tensor(w, requires_grad=True)
    F.embedding(tensor(idx), t, padding_idx).sum().backward()
    counts = np.bincount(idx.ravel(), minlength=6).astype(np.float64)
    if padding_idx is not None:
        counts[padding_idx % 6] = 0
    np.testing.assert_array_equal(t.grad, np.repeat(counts[:, None], 3, 1))


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape,normalized", [((4, 7), (7,)), ((2, 3, 4), (3, 4))])
def test_layer_norm_gradcheck(be, r, affine, shape, normalized):
    x = r.standard_normal(shape) * 2 + 0.5
    if affine:
        tape_gradcheck(lambda x, w, b: F.layer_norm(x, normalized, w, b), x, r.standard_normal(normalized),
                       r.standard_normal(normalized))
    else:
        tape_gradcheck(lambda x: F.layer_norm(x, normalized, eps=1e-3), x)


def test_dropout_gradcheck(be, r):
    def fn(x):
        seqblocks.manual_seed(3)  # same mask on every finite-difference evaluation
        return F.dropout(x, 0.4)

    tape_gradcheck(fn, r.standard_normal((6, 7)))


@pytest.mark.parametrize("name", ["relu", "gelu", "gelu_tanh", "tanh", "sigmoid"])
def test_activation_gradcheck(be, r, name):
    fn = {"relu": F.relu, "gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
          "tanh": F.tanh, "sigmoid": F.sigmoid}[name]
    tape_gradcheck(fn, away_from_zero(r, (4, 9)))


@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("fn", [F.softmax, F.log_softmax])
def test_softmax_gradcheck(be, r, dim, fn):
    tape_gradcheck(lambda x: fn(x, dim), r.standard_normal((3, 4, 5)))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("variant", ["plain", "weight", "ignore", "smoothing", "probs", "spatial", "1d"])
def test_cross_entropy_gradcheck(be, r, reduction, variant):
    n, c = 6, 5
    x = r.standard_normal((n, c))
    target = r.integers(0, c, n)
    kw = {}
    if variant == "weight":
        kw["weight"] = r.uniform(0.5, 2, c)
    elif variant == "ignore":
        target[[1, 4]] = -100
        kw["weight"] = r.uniform(0.5, 2, c)
    elif variant == "smoothing":
        kw["label_smoothing"] = 0.2
    elif variant == "probs":
        target = r.dirichlet(np.ones(c), n)
    elif variant == "spatial":
        x = r.standard_normal((2, c, 3))
        target = r.integers(0, c, (2, 3))
    elif variant == "1d":
        x = r.standard_normal(c)
        target = np.array(2)
    tape_gradcheck(lambda x: F.cross_entropy(x, target, reduction=reduction, **kw), x,
                   differentiable=[True])


def test_cross_entropy_all_ignored_is_zero(be, r):
    x = tensor(r.standard_normal((3, 4)), requires_grad=True)
    loss = F.cross_entropy(x, np.full(3, -100))
    assert loss.item() == 0.0
    loss.backward()
    assert not x.grad.any()


# ------------------------------------------------------------------------ PyTorch parity


def _torch_pair(r, shape, torch, dtype=np.float32):
    x = r.standard_normal(shape).astype(dtype)
    return tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)


def test_linear_matches_torch(be, r):
    torch = pytest.importorskip("torch")
    x, tx = _torch_pair(r, (2, 5, 33), torch)
    w, tw = _torch_pair(r, (17, 33), torch)
    b, tb = _torch_pair(r, (17,), torch)
    y, ty = F.linear(x, w, b), torch.nn.functional.linear(tx, tw, tb)
    assert_same(y.data, to_numpy(ty), 33)
    g = r.standard_normal(y.shape).astype(np.float32)
    y.backward(g)
    ty.backward(torch.from_numpy(g))
    assert_same(x.grad, tx.grad.numpy(), 17, "dx")
    assert_same(w.grad, tw.grad.numpy(), 10, "dw")
    assert_same(b.grad, tb.grad.numpy(), 10, "db")


def test_embedding_matches_torch(be, r):
    torch = pytest.importorskip("torch")
    idx = r.integers(0, 9, (4, 6))
    w, tw = _torch_pair(r, (9, 8), torch)
    y, ty = F.embedding(idx, w, padding_idx=0), torch.nn.functional.embedding(torch.from_numpy(idx), tw, padding_idx=0)
    np.testing.assert_array_equal(y.data, to_numpy(ty))
    g = r.standard_normal(y.shape).astype(np.float32)
    y.backward(g)
    ty.backward(torch.from_numpy(g))
    assert_same(w.grad, tw.grad.numpy(), 24, "dweight")


def test_layer_norm_matches_torch(be, r):
    torch = pytest.importorskip("torch")
    x, tx = _torch_pair(r, (3, 5, 65), torch)
    w, tw = _torch_pair(r, (65,), torch)
    b, tb = _torch_pair(r, (65,), torch)
    y = F.layer_norm(x, (65,), w, b, 1e-5)
    ty = torch.nn.functional.layer_norm(tx, (65,), tw, tb, 1e-5)
    assert_same(y.data, to_numpy(ty), 65)
    g = r.standard_normal(y.shape).astype(np.float32)
    y.backward(g)
    ty.backward(torch.from_numpy(g))
    assert_same(x.grad, tx.grad.numpy(), 65, "dx")
    assert_same(w.grad, tw.grad.numpy(), 15, "dw")
    assert_same(b.grad, tb.grad.numpy(), 15, "db")


@pytest.mark.parametrize("name", ["relu", "gelu", "gelu_tanh", "tanh", "sigmoid", "softmax", "log_softmax"])
def test_pointwise_matches_torch(be, r, name):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    ours, theirs = {
        "relu": (F.relu, tf.relu), "gelu": (F.gelu, tf.gelu),
        "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), lambda x: tf.gelu(x, approximate="tanh")),
        "tanh": (F.tanh, torch.tanh), "sigmoid": (F.sigmoid, torch.sigmoid),
        "softmax": (lambda x: F.softmax(x, 1), lambda x: tf.softmax(x, 1)),
        "log_softmax": (lambda x: F.log_softmax(x, 1), lambda x: tf.log_softmax(x, 1)),
    }[name]
    x, tx = _torch_pair(r, (7, 33), torch)
    y, ty = ours(x), theirs(tx)
    assert_same(y.data, to_numpy(ty), 33)
    g = r.standard_normal(y.shape).astype(np.float32)
    y.backward(g)
    ty.backward(torch.from_numpy(g))
    assert_same(x.grad, tx.grad.numpy(), 33, "dx")


@pytest.mark.parametrize("kw", [{}, {"reduction": "sum"}, {"reduction": "none"}, {"label_smoothing": 0.1},
                                {"ignore_index": 2}, {"weight": True}, {"weight": True, "label_smoothing": 0.3}])
def test_cross_entropy_matches_torch(be, r, kw):
    torch = pytest.importorskip("torch")
    x, tx = _torch_pair(r, (16, 9), torch)
    target = r.integers(0, 9, 16)
    kw = dict(kw)
    tkw = dict(kw)
    if kw.get("weight"):
        w = r.uniform(0.5, 2, 9).astype(np.float32)
        kw["weight"], tkw["weight"] = w, torch.from_numpy(w)
    y = F.cross_entropy(x, target, **kw)
    ty = torch.nn.functional.cross_entropy(tx, torch.from_numpy(target), **tkw)
    assert_same(y.data, to_numpy(ty), 16 * 9)
    g = r.standard_normal(y.shape).astype(np.float32)
    y.backward(g)
    ty.backward(torch.from_numpy(g))
    assert_same(x.grad, tx.grad.numpy(), 16 * 9, "dinput")


# ------------------------------------------------------------------------------- dropout


def test_dropout_is_reproducible_and_backend_independent(r):
    x = r.standard_normal((50, 40)).astype(np.float32)
    seqblocks.manual_seed(42)
    with seqblocks.backend("native"):
        a = F.dropout(x, 0.3).data
        b = F.dropout(x, 0.3).data
    seqblocks.manual_seed(42)
    with seqblocks.backend("numpy"):
        c = F.dropout(x, 0.3).data
    np.testing.assert_array_equal(a, c)
    assert not np.array_equal(a, b)
    kept = a != 0
    assert 0.6 < kept.mean() < 0.8
    np.testing.assert_allclose(a[kept], x[kept] / 0.7, rtol=1e-6)


def test_dropout_identity_cases_draw_no_seed(r):
    x = tensor(r.standard_normal(5))
    seqblocks.manual_seed(1)
    state = seqblocks._random.get_rng_state()
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    assert seqblocks._random.get_rng_state() == state
    first = F.dropout(x, 0.5).data
    assert seqblocks._random.get_rng_state() != state
    seqblocks.manual_seed(1)
    np.testing.assert_array_equal(F.dropout(x, 0.5).data, first)
    assert not F.dropout(x, 1.0).data.any()


# ------------------------------------------------------------------- modes and backends


def test_no_grad_records_nothing(r):
    w = tensor(r.standard_normal((3, 4)), requires_grad=True)
    with seqblocks.no_grad():
        y = F.relu(F.linear(r.standard_normal((2, 4)), w))
    assert y.grad_fn is None and not y.requires_grad


def test_arrays_in_tensors_out(r):
    y = F.softmax(r.standard_normal((2, 3)), 1)
    assert isinstance(y, seqblocks.Tensor) and not y.requires_grad


def test_backward_runs_on_the_forward_backend(r):
    x = tensor(r.standard_normal((4, 6)), requires_grad=True)
    with seqblocks.backend("numpy"):
        loss = F.log_softmax(F.layer_norm(x, (6,)), -1).sum()
    with seqblocks.backend("native"):
        loss.backward()
    y = tensor(x.data, requires_grad=True)
    with seqblocks.backend("numpy"):
        F.log_softmax(F.layer_norm(y, (6,)), -1).sum().backward()
    np.testing.assert_allclose(x.grad, y.grad, rtol=1e-12, atol=1e-14)


def test_softmax_implicit_dim_warns(r):
    with pytest.warns(UserWarning, match="Implicit dimension"):
        y = F.softmax(r.standard_normal((2, 3)))
    np.testing.assert_allclose(y.data.sum(1), 1.0)


# ---------------------------------------------------------------------------- bad input


def test_bad_input(r):
    with pytest.raises(ValueError, match="p"):
        F.dropout(r.standard_normal(3), 1.5)
    with pytest.raises(ValueError, match="approximate"):
        F.gelu(r.standard_normal(3), approximate="fast")
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(r.standard_normal((2, 3)), np.array([0, 1]), reduction="avg")
    with pytest.raises(ValueError, match="padding_idx"):
        F.embedding(np.array([0]), r.standard_normal((3, 2)), padding_idx=3)
    with pytest.raises(IndexError, match="indices"):
        F.embedding(np.array([5]), r.standard_normal((3, 2)))
    with pytest.raises(ValueError, match="x"):
        F.linear(r.standard_normal((2, 3)), r.standard_normal((4, 5)))
    with pytest.raises(TypeError):
        F.linear(r.standard_normal((2, 3)).astype(np.float32), r.standard_normal((4, 3)))
    with pytest.raises(NotImplementedError, match="target"):
        F.cross_entropy(r.standard_normal((2, 3)), tensor(r.dirichlet(np.ones(3), 2), requires_grad=True))


def test_mixed_dtype_graph_casts_gradients(be, r):
    x = tensor(r.standard_normal((3, 4)).astype(np.float32), requires_grad=True)
    scale = r.standard_normal((3, 4))  # float64: the product (and the loss) is float64
    loss = (F.relu(F.layer_norm(x, (4,))) * scale).sum()
    assert loss.dtype == np.float64
    loss.backward()  # the float64 gradient reaches the float32 ops as float32
    assert x.grad.dtype == np.float32 and np.isfinite(x.grad).all()


def test_concurrent_training_steps_in_threads(r):
    import concurrent.futures

    x = r.standard_normal((8, 16)).astype(np.float32)
    w0 = r.standard_normal((5, 16)).astype(np.float32)
    target = r.integers(0, 5, 8)

    def grad_of(backend_name):
        w = tensor(w0, requires_grad=True)
        with seqblocks.backend(backend_name):
            for _ in range(20):
                w.grad = None
                F.cross_entropy(F.gelu(F.linear(x, w)), target).backward()
        return backend_name, w.grad

    expected = {name: grad_of(name)[1] for name in ("native", "numpy")}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for name, grad in pool.map(grad_of, ["native", "numpy"] * 4):
            np.testing.assert_array_equal(grad, expected[name])
