"""seqblocks.nn modules: the Module system (registration, traversal, state_dict, load_state_dict,
train/eval, zero_grad, buffers, repr), PyTorch parity of every module with the same weights
(forward output and every gradient), initialisation, nn.init and gradient clipping."""

import math
from collections import OrderedDict

import numpy as np
import pytest

import seqblocks
from seqblocks import nn, tensor
from seqblocks.nn import functional as F
from tape_helpers import assert_same, tape_gradcheck, to_numpy


@pytest.fixture
def r():
    return np.random.default_rng(5)


def build_pair(torch_nn, ours_nn):
    """The same small classifier in both libraries (names and order must match)."""
    def make(m):
        return m.Sequential(m.Embedding(10, 8, padding_idx=0), m.Linear(8, 16), m.LayerNorm(16), m.GELU(),
                            m.Dropout(0.1), m.Linear(16, 4))
    return make(ours_nn), make(torch_nn)


def load_from_torch(ours, theirs):
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})


# ------------------------------------------------------------------------- Module system


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 4)
        self.norm = nn.LayerNorm(4)
        self.scale = nn.Parameter(np.ones(4, np.float32))
        self.register_buffer("steps", np.zeros((), np.int64))
        self.register_buffer("cache", np.zeros(2, np.float32), persistent=False)

    def forward(self, x):
        return self.norm(self.proj(x)) * self.scale


def test_registration_and_traversal():
    b = Block()
    names = [n for n, _ in b.named_parameters()]
    assert names == ["scale", "proj.weight", "proj.bias", "norm.weight", "norm.bias"]
    assert [n for n, _ in b.named_children()] == ["proj", "norm"]
    assert [type(m).__name__ for m in b.modules()] == ["Block", "Linear", "LayerNorm"]
    assert list(b.state_dict()) == ["scale", "steps", "proj.weight", "proj.bias", "norm.weight", "norm.bias"]
    assert [n for n, _ in b.named_buffers()] == ["steps", "cache"]
    assert b.proj.weight is b._parameters.get("weight", b.proj._parameters["weight"])
    del b.scale
    assert "scale" not in dict(b.named_parameters())


def test_state_dict_keys_match_torch():
    torch = pytest.importorskip("torch")
    ours, theirs = build_pair(torch.nn, nn)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in theirs.state_dict().items()}


def test_repr_matches_torch():
    torch = pytest.importorskip("torch")
    def make(m):
        return m.Sequential(m.Embedding(10, 8, padding_idx=0), m.Linear(8, 16, bias=False), m.LayerNorm(16),
                            m.GELU(approximate="tanh"), m.ReLU(), m.Tanh(), m.Sigmoid(), m.Dropout(0.1),
                            m.Softmax(dim=-1), m.LogSoftmax(dim=1), m.ModuleList([m.Linear(2, 3)]),
                            m.CrossEntropyLoss())
    assert repr(make(nn)) == repr(make(torch.nn))


def test_tied_parameters_counted_once():
    emb = nn.Embedding(5, 3)
    head = nn.Linear(3, 5, bias=False)
    head.weight = emb.weight
    model = nn.Sequential(emb, head)
    assert len(list(model.parameters())) == 1
    assert list(model.state_dict()) == ["0.weight", "1.weight"]


def test_train_eval_and_zero_grad(r):
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))
    assert model.training and model[1].training
    model.eval()
    assert not model.training and not model[1].training
    x = r.standard_normal((4, 3)).astype(np.float32)
    np.testing.assert_array_equal(model(x).data, model[0](x).data)
    model.train()
    assert model[1].training
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_containers():
    seq = nn.Sequential(OrderedDict([("a", nn.ReLU()), ("b", nn.Tanh())]))
    assert [n for n, _ in seq.named_children()] == ["a", "b"] and isinstance(seq[1], nn.Tanh)
    assert isinstance(seq[-1], nn.Tanh) and len(seq[:1]) == 1
    lst = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    lst.append(nn.ReLU())
    lst.insert(0, nn.Tanh())
    assert len(lst) == 5 and isinstance(lst[0], nn.Tanh) and isinstance(lst[-1], nn.ReLU)
    del lst[0]
    assert [n for n, _ in lst.named_children()] == ["0", "1", "2", "3"]
    assert len(list(lst.parameters())) == 6
    with pytest.raises(IndexError):
        lst[7]


def test_load_state_dict_from_numpy_and_torch(r):
    torch = pytest.importorskip("torch")
    ours, theirs = build_pair(torch.nn, nn)
    weight = ours[1].weight
    array_before = weight.data
    ours.load_state_dict(theirs.state_dict())  # torch tensors (no grad) go through .numpy()
    assert ours[1].weight is weight and weight.data is array_before  # copied in place
    for k, v in theirs.state_dict().items():
        np.testing.assert_array_equal(ours.state_dict()[k], v.numpy())
    # parameters that require grad (torch.nn.Parameter) are detached first
    ours.load_state_dict(dict(theirs.named_parameters()))
    # NumPy arrays in another dtype are cast to the parameter's dtype
    sd = {k: v.astype(np.float64) for k, v in ours.state_dict().items()}
    ours.load_state_dict(sd)
    assert ours[1].weight.dtype == np.float32


def test_load_state_dict_errors():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    sd = {k: v.copy() for k, v in model.state_dict().items()}
    bad = dict(sd)
    del bad["0.bias"]
    bad["extra.weight"] = np.zeros(2)
    with pytest.raises(RuntimeError) as info:
        model.load_state_dict(bad)
    message = str(info.value)
    assert 'Missing key(s) in state_dict: "0.bias"' in message
    assert 'Unexpected key(s) in state_dict: "extra.weight"' in message
    result = model.load_state_dict(bad, strict=False)
    assert result.missing_keys == ["0.bias"] and result.unexpected_keys == ["extra.weight"]
    bad = dict(sd)
    bad["0.weight"] = np.zeros((3, 4), np.float32)
    with pytest.raises(RuntimeError, match=r"size mismatch for 0.weight.*\(3, 4\).*\(4, 3\)"):
        model.load_state_dict(bad, strict=False)
    with pytest.raises(TypeError, match="mapping"):
        model.load_state_dict([1, 2])
    bad = dict(sd)
    bad["1.weight"] = np.array(["a"] * 4)
    with pytest.raises(RuntimeError, match="numeric"):
        model.load_state_dict(bad)


def test_bad_assignments():
    lin = nn.Linear(2, 3)
    with pytest.raises(TypeError, match="parameter 'weight'"):
        lin.weight = np.zeros((3, 2))
    with pytest.raises(ValueError, match="in_features"):
        nn.Linear(-1, 3)
    with pytest.raises(ValueError, match="padding_idx"):
        nn.Embedding(4, 2, padding_idx=4)
    with pytest.raises(ValueError, match="dropout probability"):
        nn.Dropout(2.0)
    with pytest.raises(KeyError, match="contain"):
        lin.register_buffer("a.b", np.zeros(1))

    class NoInit(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.zeros(1))

    with pytest.raises(AttributeError, match="before Module.__init__"):
        NoInit()


def test_buffers_move_with_state_dict():
    b = Block()
    b.steps = np.array(7)
    sd = b.state_dict()
    assert sd["steps"] == 7 and "cache" not in sd
    c = Block()
    c.load_state_dict(sd)
    assert c.steps.item() == 7


# ------------------------------------------------------------------- PyTorch parity


def _compare_grads(ours, theirs, k):
    tparams = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        assert p.grad is not None, name
        assert_same(p.grad, tparams[name].grad.numpy(), k, f"grad of {name}")


@pytest.mark.parametrize("be", ["native", "numpy"])
@pytest.mark.parametrize("case", ["linear", "linear_nobias", "embedding", "layernorm", "layernorm_noaffine",
                                  "layernorm_nobias", "layernorm_2d",
                                  "relu", "gelu", "gelu_tanh", "tanh", "sigmoid", "softmax", "logsoftmax",
                                  "dropout_eval", "identity", "sequential"])
def test_module_matches_torch(r, be, case):
    torch = pytest.importorskip("torch")

    def make(m):
        return {
            "linear": lambda: m.Linear(33, 17), "linear_nobias": lambda: m.Linear(33, 17, bias=False),
            "embedding": lambda: m.Embedding(40, 33, padding_idx=3), "layernorm": lambda: m.LayerNorm(33),
            "layernorm_noaffine": lambda: m.LayerNorm(33, elementwise_affine=False), "relu": m.ReLU,
            "layernorm_nobias": lambda: m.LayerNorm(33, bias=False), "layernorm_2d": lambda: m.LayerNorm((5, 33)),
            "gelu": m.GELU, "gelu_tanh": lambda: m.GELU(approximate="tanh"), "tanh": m.Tanh, "sigmoid": m.Sigmoid,
            "softmax": lambda: m.Softmax(dim=-1), "logsoftmax": lambda: m.LogSoftmax(dim=1),
            "dropout_eval": lambda: m.Dropout(0.3).eval(), "identity": m.Identity,
            "sequential": lambda: m.Sequential(m.Linear(33, 20), m.Tanh(), m.LayerNorm(20), m.Linear(20, 7)),
        }[case]()

    ours, theirs = make(nn), make(torch.nn)
    load_from_torch(ours, theirs)
    if case == "embedding":
        xin = r.integers(0, 40, (4, 6))
        xin[0, 0] = 3
        x, tx = xin, torch.from_numpy(xin)
    else:
        xin = r.standard_normal((2, 5, 33)).astype(np.float32)
        x, tx = tensor(xin, requires_grad=True), torch.tensor(xin, requires_grad=True)
    with seqblocks.backend(be):
        y = ours(x)
        ty = theirs(tx)
        assert_same(y.data, to_numpy(ty), 33, "forward")
        g = r.standard_normal(y.shape).astype(np.float32)
        y.backward(g)
    ty.backward(torch.from_numpy(g))
    if case != "embedding":
        assert_same(x.grad, tx.grad.numpy(), 33, "input grad")
    _compare_grads(ours, theirs, 30)


@pytest.mark.parametrize("kw", [{}, {"reduction": "sum"}, {"reduction": "none"}, {"ignore_index": 1},
                                {"label_smoothing": 0.2}, {"weight": True, "label_smoothing": 0.1}])
def test_cross_entropy_loss_matches_torch(r, kw):
    torch = pytest.importorskip("torch")
    kw = dict(kw)
    tkw = dict(kw)
    if kw.get("weight"):
        w = r.uniform(0.5, 2.0, 7).astype(np.float32)
        kw["weight"], tkw["weight"] = w, torch.from_numpy(w)
    ours, theirs = nn.CrossEntropyLoss(**kw), torch.nn.CrossEntropyLoss(**tkw)
    xin = r.standard_normal((12, 7)).astype(np.float32)
    target = r.integers(0, 7, 12)
    x, tx = tensor(xin, requires_grad=True), torch.tensor(xin, requires_grad=True)
    y, ty = ours(x, target), theirs(tx, torch.from_numpy(target))
    assert_same(y.data, to_numpy(ty), 84)
    g = r.standard_normal(y.shape).astype(np.float32)
    y.backward(g)
    ty.backward(torch.from_numpy(g))
    assert_same(x.grad, tx.grad.numpy(), 84, "dinput")
    if kw.get("weight") is not None:
        assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight"]


def test_dropout_module_train_mode(r):
    seqblocks.manual_seed(0)
    d = nn.Dropout(0.25)
    x = tensor(np.ones((100, 100), np.float32), requires_grad=True)
    y = d(x)
    kept = y.data != 0
    assert 0.72 < kept.mean() < 0.78
    np.testing.assert_allclose(y.data[kept], 1 / 0.75, rtol=1e-6)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, y.data)  # d(mask * x / (1-p))/dx = mask / (1-p)


def test_whole_model_gradcheck_in_float64(r):
    seqblocks.manual_seed(2)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.LayerNorm(6), nn.GELU(), nn.Linear(6, 3)).double()
    assert all(p.dtype == np.float64 for p in model.parameters())
    tape_gradcheck(lambda x: model(x), r.standard_normal((4, 5)))
    # the loss as a function of the head's weight, the rest of the model fixed
    features = model[:4](tensor(r.standard_normal((4, 5))))
    target = np.array([0, 2, 1, 1])
    tape_gradcheck(lambda w: F.cross_entropy(F.linear(features.detach(), w, model[4].bias), target),
                   model[4].weight.data.copy())


# ------------------------------------------------------------------- initialisation


def test_default_initialisation_is_seeded_and_in_pytorch_ranges():
    seqblocks.manual_seed(123)
    a = nn.Linear(400, 300)
    seqblocks.manual_seed(123)
    b = nn.Linear(400, 300)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    c = nn.Linear(400, 300)
    assert not np.array_equal(a.weight.data, c.weight.data)
    bound = 1 / math.sqrt(400)  # kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert np.abs(a.weight.data).max() <= bound and np.abs(a.bias.data).max() <= bound
    assert abs(a.weight.data.std() - bound / math.sqrt(3)) < 0.02 * bound
    assert a.weight.dtype == np.float32
    e = nn.Embedding(1000, 64, padding_idx=5)
    assert not e.weight.data[5].any()
    assert abs(e.weight.data.std() - 1.0) < 0.02 and abs(e.weight.data.mean()) < 0.02
    ln = nn.LayerNorm(7)
    assert (ln.weight.data == 1).all() and (ln.bias.data == 0).all()


def test_init_functions():
    torch = pytest.importorskip("torch")
    gen = np.random.default_rng(0)
    for name, param in [("relu", None), ("tanh", None), ("leaky_relu", 0.2), ("linear", None), ("selu", None)]:
        assert nn.init.calculate_gain(name, param) == pytest.approx(torch.nn.init.calculate_gain(name, param))
    w = np.empty((300, 200))
    nn.init.xavier_uniform_(w, gain=2.0, generator=gen)
    assert np.abs(w).max() <= 2.0 * math.sqrt(6 / 500)
    nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu", generator=gen)
    assert abs(w.std() - math.sqrt(2) / math.sqrt(300)) < 0.03 * math.sqrt(2 / 300)
    nn.init.xavier_normal_(w)
    assert abs(w.std() - math.sqrt(2 / 500)) < 0.03 * math.sqrt(2 / 500)
    nn.init.trunc_normal_(w, std=1.0, a=-0.5, b=0.5)
    assert np.abs(w).max() <= 0.5
    q = nn.Parameter(np.empty((20, 30)))
    nn.init.orthogonal_(q)
    np.testing.assert_allclose(q.data @ q.data.T, np.eye(20), atol=1e-12)
    nn.init.eye_(w)
    assert w.trace() == 200
    nn.init.constant_(w, 0.5)
    assert (w == 0.5).all()
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        nn.init.xavier_uniform_(np.empty(3))
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.init.calculate_gain("swish")


# ------------------------------------------------------------------- gradient clipping


@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf"), 3.0])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(r, norm_type, max_norm):
    torch = pytest.importorskip("torch")
    grads = [r.standard_normal(s).astype(np.float32) for s in [(4, 5), (5,), (3, 3)]]
    ours = [nn.Parameter(np.zeros_like(g)) for g in grads]
    theirs = [torch.nn.Parameter(torch.zeros(g.shape)) for g in grads]
    for p, tp, g in zip(ours, theirs, grads):
        p.grad = g.copy()
        tp.grad = torch.from_numpy(g.copy())
    total = nn.utils.clip_grad_norm_(ours, max_norm, norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    assert isinstance(total, seqblocks.Tensor) and total.dtype == np.float32
    assert_same(total.data, ttotal.numpy(), 30, "total norm")
    for p, tp in zip(ours, theirs):
        assert_same(p.grad, tp.grad.numpy(), 30, "clipped grad")


def test_clip_grad_norm_nonfinite_and_empty():
    p = nn.Parameter(np.zeros(3, np.float32))
    p.grad = np.array([1.0, np.inf, 0.0], np.float32)
    with pytest.raises(RuntimeError, match="non-finite"):
        nn.utils.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    assert p.grad[1] == np.inf  # unchanged when raising
    assert nn.utils.clip_grad_norm_([nn.Parameter(np.zeros(2))], 1.0).item() == 0.0
    q = nn.Parameter(np.zeros(2, np.float32))
    q.grad = np.array([3.0, 4.0], np.float32)
    assert nn.utils.clip_grad_norm_(q, 1.0).item() == pytest.approx(5.0)
    np.testing.assert_allclose(q.grad, [0.6, 0.8], rtol=1e-5)


def test_clip_grad_value_matches_torch(r):
    torch = pytest.importorskip("torch")
    g = r.standard_normal((6, 4)).astype(np.float32)
    p, tp = nn.Parameter(np.zeros_like(g)), torch.nn.Parameter(torch.zeros(6, 4))
    p.grad, tp.grad = g.copy(), torch.from_numpy(g.copy())
    nn.utils.clip_grad_value_([p], 0.5)
    torch.nn.utils.clip_grad_value_([tp], 0.5)
    np.testing.assert_array_equal(p.grad, tp.grad.numpy())


def test_embedding_from_pretrained():
    torch = pytest.importorskip("torch")
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    e = nn.Embedding.from_pretrained(torch.nn.Parameter(torch.from_numpy(w)))
    assert not e.weight.requires_grad and repr(e) == "Embedding(4, 3)"
    np.testing.assert_array_equal(e(np.array([2])).data, w[2:3])
    e = nn.Embedding.from_pretrained(w, freeze=False, padding_idx=1)
    assert e.weight.requires_grad and e.padding_idx == 1
    with pytest.raises(ValueError, match="2-D"):
        nn.Embedding.from_pretrained(np.ones(3))


def test_tied_weights_gradient_matches_torch(r):
    """Embedding and output projection share one matrix (weight tying): both uses accumulate."""
    torch = pytest.importorskip("torch")

    def make(m):
        emb = m.Embedding(12, 6)
        head = m.Linear(6, 12, bias=False)
        head.weight = emb.weight
        return m.Sequential(emb, m.Tanh(), head)

    ours, theirs = make(nn), make(torch.nn)
    load_from_torch(ours, theirs)
    tokens = r.integers(0, 12, (3, 5))
    target = r.integers(0, 12, 15)
    loss = F.cross_entropy(ours(tokens).reshape(15, 12), target)
    tloss = torch.nn.functional.cross_entropy(theirs(torch.from_numpy(tokens)).reshape(15, 12),
                                              torch.from_numpy(target))
    loss.backward()
    tloss.backward()
    assert_same(loss.data, to_numpy(tloss), 12)
    assert len(list(ours.parameters())) == 1
    assert_same(ours[0].weight.grad, theirs[0].weight.grad.numpy(), 30, "tied weight grad")
