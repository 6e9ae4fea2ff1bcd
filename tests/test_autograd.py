"""The autograd tape: float64 finite-difference checks of every Tensor op, gradient accumulation,
topological order on long chains, graph freeing (weakref/gc), retain_graph, no_grad, custom and
multi-output Functions, PyTorch parity of a composite expression, bad input."""

import gc
import threading
import weakref

import numpy as np
import pytest

import seqblocks
from seqblocks import Tensor, no_grad, tensor
from seqblocks.autograd import Function
from seqblocks.testing import assert_close
from tape_helpers import tape_gradcheck


@pytest.fixture
def r():
    return np.random.default_rng(7)


# ------------------------------------------------------------------------ gradient checks


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((5,), ())])
def test_binary_ops_broadcast(r, op, shapes):
    a = r.standard_normal(shapes[0])
    b = r.uniform(0.5, 2.0, shapes[1])  # away from 0 for div
    fn = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y,
          "div": lambda x, y: x / y}[op]
    tape_gradcheck(fn, a, np.asarray(b), what=op)


@pytest.mark.parametrize("op", ["radd", "rsub", "rmul", "rdiv", "scalar_right", "array_left"])
def test_scalars_and_reflected(r, op):
    a = r.uniform(0.5, 2.0, (3, 5))
    arr = r.standard_normal(5)
    fn = {"radd": lambda x: 2.0 + x, "rsub": lambda x: 2.0 - x, "rmul": lambda x: 3.0 * x,
          "rdiv": lambda x: 3.0 / x, "scalar_right": lambda x: (x - 1.5) * 2.0 / 4.0 + 1,
          "array_left": lambda x: arr * x + arr}[op]
    tape_gradcheck(fn, a, what=op)


def test_numpy_array_on_the_left_gives_a_tensor(r):
    x = tensor(r.standard_normal(3), requires_grad=True)
    y = np.ones(3) * x
    assert isinstance(y, Tensor) and y.requires_grad
    assert isinstance(np.ones(3) @ x, Tensor)


@pytest.mark.parametrize("fn", [lambda x: -x, lambda x: x ** 3, lambda x: x.exp(), lambda x: (x * x + 1).log(),
                                lambda x: (x * x + 1).sqrt(), lambda x: +x, lambda x: x.clone()],
                         ids=["neg", "pow", "exp", "log", "sqrt", "pos", "clone"])
def test_unary(r, fn):
    tape_gradcheck(fn, r.standard_normal((4, 3)))


@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)),
                                   ((2, 3, 4), (4, 5)), ((3, 4), (2, 4, 5)), ((2, 3, 4), (2, 4, 5)),
                                   ((1, 3, 4), (2, 4, 5))])
def test_matmul(r, sa, sb):
    tape_gradcheck(lambda a, b: a @ b, r.standard_normal(sa), r.standard_normal(sb))


@pytest.mark.parametrize("dim,keepdim", [(None, False), (0, False), (1, True), ((0, 2), False), (-1, False),
                                         ((0, 2), True)])
@pytest.mark.parametrize("red", ["sum", "mean"])
def test_reductions(r, dim, keepdim, red):
    tape_gradcheck(lambda x: getattr(x, red)(dim=dim, keepdim=keepdim), r.standard_normal((2, 3, 4)))


@pytest.mark.parametrize("fn", [lambda x: x.reshape(4, 6), lambda x: x.view((6, -1)), lambda x: x.transpose(0, 2),
                                lambda x: x.permute(2, 0, 1), lambda x: x[0].T, lambda x: x.flatten(1),
                                lambda x: x.unsqueeze(1).squeeze(1), lambda x: x.transpose(-1, -2) * 2],
                         ids=["reshape", "view", "transpose", "permute", "T", "flatten", "unsqueeze", "transpose_neg"])
def test_shape_ops(r, fn):
    tape_gradcheck(fn, r.standard_normal((2, 3, 4)))


@pytest.mark.parametrize("key", [0, -1, (1, slice(None, None, 2)), (Ellipsis, 1), (slice(None), None, 2),
                                 np.array([0, 1, 0, 1]), (np.array([1, 1, 0]), slice(None), np.array([3, 3, 0])),
                                 [1, 0, 1], np.array([True, False])],
                         ids=["int", "neg", "slice", "ellipsis", "newaxis", "adv_repeat", "adv_mixed", "list", "mask"])
def test_getitem(r, key):
    tape_gradcheck(lambda x: x[key] * 1.5, r.standard_normal((2, 3, 4)))


def test_getitem_with_tensor_index(r):
    idx = tensor(np.array([2, 0, 2]))
    tape_gradcheck(lambda x: x[idx], r.standard_normal((3, 4)))


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_cat_and_stack(r, dim):
    a, b, c = r.standard_normal((2, 3)), r.standard_normal((2, 3)), r.standard_normal((2, 3))
    tape_gradcheck(lambda x, y, z: seqblocks.cat([x, y * 2, z], dim=dim), a, b, c)
    tape_gradcheck(lambda x, y, z: seqblocks.stack([x, y * 2, z], dim=dim), a, b, c)


def test_cast_gradient_dtype(r):
    x = tensor(r.standard_normal(4), requires_grad=True, dtype=np.float64)
    y = x.float()
    assert y.dtype == np.float32
    (y * 2).sum().backward()
    assert x.grad.dtype == np.float64
    np.testing.assert_array_equal(x.grad, np.full(4, 2.0))


# ------------------------------------------------------------ accumulation and graph shape


def test_shared_weight_accumulates(r):
    w = tensor(r.standard_normal(3), requires_grad=True, dtype=np.float64)
    x = r.standard_normal(3)
    loss = (w * x).sum() + (w * w).sum() + (w @ w)  # w used four times
    loss.backward()
    np.testing.assert_allclose(w.grad, x + 4 * w.data, rtol=1e-14)


def test_same_tensor_twice_in_one_op(r):
    x = tensor(r.standard_normal(5), requires_grad=True, dtype=np.float64)
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.data, rtol=1e-15)


def test_diamond_graph_runs_each_node_once():
    calls = []

    class Counted(Function):
        @staticmethod
        def forward(ctx, a):
            return a * 2

        @staticmethod
        def backward(ctx, g):
            calls.append(1)
            return g * 2

    x = tensor([1.0, 2.0], requires_grad=True)
    h = Counted.apply(x)
    (h * 3 + h * 4 + h).sum().backward()
    assert len(calls) == 1
    np.testing.assert_array_equal(x.grad, [16.0, 16.0])


def test_grad_accumulates_across_backward_calls_and_zero(r):
    w = tensor(r.standard_normal(3), requires_grad=True, dtype=np.float32)
    (w * 2).sum().backward()
    first = w.grad
    (w * 3).sum().backward()
    np.testing.assert_array_equal(w.grad, np.full(3, 5.0, np.float32))
    np.testing.assert_array_equal(first, np.full(3, 2.0, np.float32))  # handed-out arrays are never modified
    assert w.grad.dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend", ["native", "numpy"])
def test_large_grads_accumulate_into_new_arrays(r, dtype, backend):
    """Gradients of 2^16 elements and more are summed by the native add (a new array each time,
    from the output cache): the same values, and the arrays handed out before stay unchanged."""
    w = tensor(r.standard_normal((300, 257)), requires_grad=True, dtype=dtype)
    c1, c2 = r.standard_normal((300, 257)).astype(dtype), r.standard_normal((300, 257)).astype(dtype)
    with seqblocks.backend(backend):
        (w * c1).sum().backward()
        first = w.grad
        first_copy = first.copy()
        (w * c2).sum().backward()
    np.testing.assert_array_equal(w.grad, c1 + c2)
    assert w.grad is not first and w.grad.dtype == dtype
    np.testing.assert_array_equal(first, first_copy)


def test_leaf_grads_are_not_aliased(r):
    a = tensor(r.standard_normal(3), requires_grad=True)
    b = tensor(r.standard_normal(3), requires_grad=True)
    g = np.ones(3, np.float32)
    (a + b).backward(g)  # the add backward hands the same array to both leaves
    assert a.grad is not b.grad and a.grad is not g
    a.grad *= 0
    np.testing.assert_array_equal(b.grad, np.ones(3))
    np.testing.assert_array_equal(g, np.ones(3))
    assert a.grad.flags.writeable and b.grad.flags.c_contiguous



class _ViewGrads(Function):
    """y = x1 + x2 (4, 3); the backward hands each leaf a reshaped view: of one fresh array each
    ("fresh"), of one array for both ("shared"), or of an array it also keeps ("kept")."""
    kept: list = []

    @staticmethod
    def forward(ctx, x1, x2, mode):
        ctx.mode = mode
        return x1 + x2

    @staticmethod
    def backward(ctx, g):
        if ctx.mode == "fresh":
            return np.array(g).reshape(-1).reshape(4, 3), np.array(g).reshape(-1).reshape(4, 3), None
        flat = np.array(g).reshape(-1)
        if ctx.mode == "kept":
            _ViewGrads.kept.append(flat)
            return flat.reshape(4, 3), np.array(g), None
        return flat.reshape(4, 3), flat.reshape(4, 3), None


@pytest.mark.parametrize("mode", ["fresh", "shared", "kept"])
def test_leaf_grads_from_views_are_copied_only_when_their_memory_is_shared(r, mode):
    """A view of an array nothing else holds is stored as the gradient as it is (no copy); a view
    whose memory another leaf or the op also holds is copied, so leaf gradients never alias."""
    x1 = tensor(r.standard_normal((4, 3)), requires_grad=True)
    x2 = tensor(r.standard_normal((4, 3)), requires_grad=True)
    g = r.standard_normal((4, 3)).astype(np.float32)
    _ViewGrads.kept.clear()
    _ViewGrads.apply(x1, x2, mode).backward(g)
    np.testing.assert_array_equal(x1.grad, g)
    np.testing.assert_array_equal(x2.grad, g)
    assert not np.shares_memory(x1.grad, x2.grad)
    if mode == "fresh":
        assert x1.grad.base is not None and x2.grad.base is not None  # the views themselves, not copies
    if mode == "kept":
        assert not np.shares_memory(x1.grad, _ViewGrads.kept[0])
        x1.grad *= 0
        np.testing.assert_array_equal(_ViewGrads.kept[0], g.reshape(-1))

def test_long_chain_has_no_recursion_limit():
    x = tensor(np.ones(2), requires_grad=True, dtype=np.float64)
    y = x
    for _ in range(20_000):
        y = y * 1.0 + 0.0
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, np.ones(2))


def test_graph_is_freed_without_gc(r):
    gc.collect()
    gc.disable()
    try:
        x = tensor(r.standard_normal(4), requires_grad=True)
        h = x.exp()
        node = weakref.ref(h.grad_fn)
        loss = (h * x).sum()
        saved = weakref.ref(loss.grad_fn)
        del h
        loss.backward()
        assert node() is not None  # still reachable from loss, like PyTorch's graph
        del loss
        assert node() is None and saved() is None  # freed by reference counting alone: no cycles
    finally:
        gc.enable()


def test_saved_arrays_released_after_backward(r):
    x = tensor(r.standard_normal(4), requires_grad=True)
    loss = (x.exp() * 2).sum()
    exp_node = loss.grad_fn._edges[0][0]._edges[0][0]
    saved = weakref.ref(exp_node.saved_tensors[0])
    loss.backward()
    assert saved() is None
    assert loss.grad_fn is not None


def test_no_cycles_after_training_step(r):
    from seqblocks.autograd import _Context

    gc.collect()
    gc.disable()
    try:
        lin = seqblocks.nn.Parameter(r.standard_normal((3, 3)))
        for _ in range(3):
            loss = ((tensor(r.standard_normal((2, 3))) @ lin).exp() * 0.5).mean()
            loss.backward()
        del loss
        gc.set_debug(gc.DEBUG_SAVEALL)  # keep whatever only the cycle collector could free
        gc.collect()
        leaked = [o for o in gc.garbage if isinstance(o, (Tensor, _Context))]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert not leaked


# ------------------------------------------------------------------------- retain_graph


def test_second_backward_raises_without_retain_graph(r):
    x = tensor(r.standard_normal(3), requires_grad=True)
    loss = (x * x).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        loss.backward()


def test_retain_graph_allows_second_backward(r):
    x = tensor(r.standard_normal(3), requires_grad=True, dtype=np.float64)
    loss = (x * x).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    np.testing.assert_allclose(x.grad, 4 * x.data)
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        loss.backward()


def test_shared_subgraph_freed_by_first_backward(r):
    x = tensor(r.standard_normal(3), requires_grad=True)
    h = x * 2
    a, b = h.sum(), (h * h).sum()
    a.backward()
    with pytest.raises(RuntimeError, match="second time"):
        b.backward()


# --------------------------------------------------------------------------- backward API


def test_backward_errors(r):
    x = tensor(r.standard_normal(3), requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match="only for scalar outputs"):
        y.backward()
    with pytest.raises(RuntimeError, match="Mismatch in shape"):
        y.backward(np.ones(4, np.float32))
    with pytest.raises(RuntimeError, match="does not require grad"):
        tensor([1.0, 2.0]).sum().backward()
    y.backward(np.ones(3, np.float32), retain_graph=True)
    np.testing.assert_array_equal(x.grad, np.full(3, 2.0))
    y.backward(grad=seqblocks.tensor(np.ones(3, np.float32)))  # keyword form, Tensor gradient
    np.testing.assert_array_equal(x.grad, np.full(3, 4.0))


def test_backward_on_leaf(r):
    x = tensor(r.standard_normal(3), requires_grad=True)
    g = np.arange(3, dtype=np.float32)
    x.backward(g)
    np.testing.assert_array_equal(x.grad, g)
    assert x.grad is not g


def test_requires_grad_rules():
    with pytest.raises(RuntimeError, match="floating point"):
        tensor([1, 2], requires_grad=True)
    x = tensor([1.0], requires_grad=True)
    y = x * 2
    assert not y.is_leaf and y.requires_grad and x.is_leaf
    with pytest.raises(RuntimeError, match="leaf"):
        y.requires_grad = False
    d = y.detach()
    assert d.is_leaf and not d.requires_grad and np.shares_memory(d.data, y.data)
    assert not (tensor([1.0]) * x.detach()).requires_grad


# -------------------------------------------------------------------------------- no_grad


def test_no_grad_context_and_decorator(r):
    x = tensor(r.standard_normal(3), requires_grad=True)
    with no_grad():
        y = x * 2
        assert not seqblocks.is_grad_enabled()
        with seqblocks.enable_grad():
            assert (x * 2).requires_grad
    assert seqblocks.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None

    @no_grad()
    def f(t):
        return t * 3

    z = f(x)
    assert not z.requires_grad and seqblocks.is_grad_enabled()


def test_no_grad_passes_needs_grad_false():
    seen = []

    class Probe(Function):
        @staticmethod
        def forward(ctx, a):
            seen.append((ctx.needs_grad, ctx.needs_input_grad))
            return a + 1

        @staticmethod
        def backward(ctx, g):
            return g

    x = tensor([1.0], requires_grad=True)
    Probe.apply(x)
    with no_grad():
        Probe.apply(x)
    Probe.apply(x.detach())
    assert seen == [(True, (True,)), (False, (False,)), (False, (False,))]


def test_no_grad_is_per_thread():
    result = []
    with no_grad():
        t = threading.Thread(target=lambda: result.append(seqblocks.is_grad_enabled()))
        t.start()
        t.join()
    assert result == [True]


# ---------------------------------------------------------------------- custom Functions


class SinCos(Function):
    """A fused two-output op."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.save_for_backward(x)
        ctx.scale = scale
        return np.sin(x) * scale, np.cos(x) * scale

    @staticmethod
    def backward(ctx, gs, gc_):
        (x,) = ctx.saved_tensors
        return (gs * np.cos(x) - gc_ * np.sin(x)) * ctx.scale, None


def test_multi_output_function(r):
    tape_gradcheck(lambda x: SinCos.apply(x, 2.0)[0] * SinCos.apply(x, 2.0)[1], r.standard_normal(5))
    tape_gradcheck(lambda x: SinCos.apply(x, 0.5)[1], r.standard_normal(5))  # zeros filled for output 0
    s, c = SinCos.apply(tensor([0.3], requires_grad=True), 1.0)
    assert s.grad_fn is c.grad_fn and repr(s.grad_fn) == "<SinCosBackward>"


def test_function_needs_input_grad_and_non_tensor_args():
    class Scale(Function):
        @staticmethod
        def forward(ctx, a, b, k):
            ctx.save_for_backward(a, b)
            ctx.k = k
            return a * b * k

        @staticmethod
        def backward(ctx, g):
            a, b = ctx.saved_tensors
            na, nb, nk = ctx.needs_input_grad
            assert nk is False
            return (g * b * ctx.k if na else None), (g * a * ctx.k if nb else None), None

    a = tensor([2.0], requires_grad=True)
    b = tensor([3.0])
    Scale.apply(a, b, 5.0).sum().backward()
    np.testing.assert_array_equal(a.grad, [15.0])
    assert b.grad is None


def test_function_returning_bad_gradients():
    class WrongCount(Function):
        @staticmethod
        def forward(ctx, a):
            return a * 1

        @staticmethod
        def backward(ctx, g):
            return g, g

    class WrongShape(Function):
        @staticmethod
        def forward(ctx, a):
            return a * 1

        @staticmethod
        def backward(ctx, g):
            return g[:1]

    x = tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="incorrect number of gradients"):
        WrongCount.apply(x).sum().backward()
    with pytest.raises(RuntimeError, match="invalid gradient at index 0"):
        WrongShape.apply(x).sum().backward()


# ------------------------------------------------------------------------ Tensor basics


def test_tensor_factory_and_accessors():
    t = tensor([[1.0, 2.0], [3.0, 4.0]])
    assert t.dtype == np.float32 and t.shape == (2, 2) and t.ndim == 2 and t.size() == (2, 2) and len(t) == 2
    assert tensor([1, 2]).dtype == np.int64
    assert tensor(np.ones(2)).dtype == np.float64
    assert tensor([1.0], dtype=np.float64).dtype == np.float64
    a = np.ones(3)
    c = tensor(a)
    a[0] = 5
    assert c.data[0] == 1  # tensor() copies
    assert tensor(3.5).item() == 3.5 and float(tensor([2.0])) == 2.0
    assert f"{tensor(0.25, dtype=np.float64):.3f}" == "0.250"
    assert np.asarray(t) is t.data and t.numpy() is t.data
    assert np.array(t, dtype=np.float64).dtype == np.float64
    assert "requires_grad=True" in repr(tensor([1.0], requires_grad=True))
    assert "grad_fn=<MulBackward>" in repr(tensor([1.0], requires_grad=True) * 2)
    with pytest.raises(ValueError, match="cannot be converted"):
        t.item()
    with pytest.raises(TypeError, match="data"):
        tensor(object())
    assert [row.tolist() for row in t] == [[1.0, 2.0], [3.0, 4.0]]


def test_cat_stack_errors():
    with pytest.raises(ValueError, match="non-empty"):
        seqblocks.cat([])
    with pytest.raises(TypeError, match="sequence"):
        seqblocks.stack(tensor([1.0]))
    with pytest.raises(IndexError, match="dim"):
        seqblocks.cat([tensor([1.0])], dim=3)
    with pytest.raises(IndexError, match="dim"):
        tensor([[1.0]]).sum(dim=4)


# ------------------------------------------------------------------------ PyTorch parity


def test_composite_expression_matches_torch(r):
    torch = pytest.importorskip("torch")
    a_np, b_np, c_np = r.standard_normal((4, 5)), r.standard_normal((5, 3)), r.standard_normal(3)
    a, b, c = (tensor(v, requires_grad=True) for v in (a_np, b_np, c_np))
    ta, tb, tc = (torch.tensor(v, requires_grad=True) for v in (a_np, b_np, c_np))

    def expr(a, b, c, cat, stack):
        h = (a @ b + c) * 0.5 - c / 3.0
        g = cat([h, h[:, :1] ** 2], 1)
        s = stack([g.sum(0), g.mean(0)], 0)
        return (s.transpose(0, 1).reshape(-1)[[0, 3, 3, 5]] * 2).sum() + h.exp().mean()

    out = expr(a, b, c, seqblocks.cat, seqblocks.stack)
    tout = expr(ta, tb, tc, torch.cat, torch.stack)
    out.backward()
    tout.backward()
    assert_close(out.data, tout.detach().numpy(), factor=64)
    for ours, theirs in ((a, ta), (b, tb), (c, tc)):
        assert_close(ours.grad, theirs.grad.numpy(), magnitude=np.abs(theirs.grad.numpy()).max(), factor=64)


def test_grad_mode_forms():
    @seqblocks.no_grad
    def bare(t):
        return t * 2

    x = tensor([1.0], requires_grad=True)
    assert not bare(x).requires_grad and seqblocks.is_grad_enabled()
    seqblocks.set_grad_enabled(False)
    try:
        assert not seqblocks.is_grad_enabled() and not (x * 2).requires_grad
    finally:
        seqblocks.set_grad_enabled(True)
    with seqblocks.set_grad_enabled(False):
        assert not seqblocks.is_grad_enabled()
    assert seqblocks.is_grad_enabled()

    @seqblocks.set_grad_enabled(False)
    def off(t):
        return t * 2

    assert seqblocks.is_grad_enabled()
    assert not off(x).requires_grad and seqblocks.is_grad_enabled()
    with seqblocks.no_grad():
        @seqblocks.enable_grad
        def on(t):
            return t * 2

        assert on(x).requires_grad and not seqblocks.is_grad_enabled()


def test_backward_of_several_roots_at_once(r):
    from seqblocks.autograd import backward

    x = tensor(r.standard_normal(3), requires_grad=True, dtype=np.float64)
    h = x * 3
    backward([h.sum(), (h * h).sum()])  # the shared h gets both contributions before it runs
    np.testing.assert_allclose(x.grad, 3 + 18 * x.data)


def test_comparisons_give_boolean_tensors():
    x = tensor([1.0, 2.0, 3.0], requires_grad=True)
    labels = np.array([1.0, 0.0, 3.0])
    eq = x == labels
    assert isinstance(eq, Tensor) and eq.dtype == np.bool_ and not eq.requires_grad
    assert eq.tolist() == [True, False, True] and (x != labels).tolist() == [False, True, False]
    assert (labels == x).tolist() == [True, False, True]  # reflected through NumPy's deferral
    assert (x > 1.5).tolist() == [False, True, True] and (x <= tensor([1.0, 1.0, 1.0])).tolist() == [True, False, False]
    assert (x == labels).float().mean().item() == pytest.approx(2 / 3)
    assert {x: 1}[x] == 1 and x in {x}


def test_retain_grad(r):
    x = tensor(r.standard_normal(3), requires_grad=True, dtype=np.float64)
    h = x * 2
    h.retain_grad()
    x.retain_grad()  # a no-op on leaves
    y = h * h
    y.retain_grad()
    y.sum().backward()
    np.testing.assert_allclose(h.grad, 2 * h.data)
    np.testing.assert_array_equal(y.grad, np.ones(3))
    np.testing.assert_allclose(x.grad, 4 * h.data)
    with pytest.raises(RuntimeError, match="requires_grad=False"):
        (tensor([1.0]) * 1).retain_grad()
