"""seqblocks.nn.RNN / LSTM / GRU and the cells: PyTorch parity (state_dict loaded unchanged;
outputs, final states and every gradient) on both backends over layers, directions, batch_first,
bias, proj_size, lengths, given states and unbatched input; dropout, init, repr and bad input."""

import numpy as np
import pytest

import seqblocks
from seqblocks import nn

torch = pytest.importorskip("torch")

CONFIGS = [
    ("LSTM", dict()),
    ("LSTM", dict(num_layers=2, bidirectional=True)),
    ("LSTM", dict(num_layers=3, batch_first=True, bias=False)),
    ("LSTM", dict(num_layers=2, proj_size=3, bidirectional=True)),
    ("GRU", dict(num_layers=2, bidirectional=True)),
    ("GRU", dict(num_layers=3, batch_first=True, bias=False)),
    ("RNN", dict(num_layers=2, bidirectional=True)),
    ("RNN", dict(nonlinearity="relu", num_layers=3, batch_first=True)),
]


def pair(cls, kw, I=5, H=7, dtype=np.float64):
    tm = getattr(torch.nn, cls)(I, H, dtype=torch.float64 if dtype == np.float64 else torch.float32, **kw)
    sm = getattr(nn, cls)(I, H, dtype=dtype, **kw)
    sm.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    return tm, sm


def close(a, b, what=""):
    np.testing.assert_allclose(np.asarray(a), b.detach().numpy() if hasattr(b, "detach") else b, rtol=1e-9,
                               atol=1e-11, err_msg=what)


def loss_of(out, h):
    if isinstance(h, tuple):
        return (out ** 2).sum() + (h[0] ** 3).sum() + (h[1] * 2.0).sum()
    return (out ** 2).sum() + (h ** 3).sum()


@pytest.mark.parametrize("backend", ["native", "numpy"])
@pytest.mark.parametrize("cls,kw", CONFIGS)
@pytest.mark.parametrize("with_lengths", [False, True])
def test_torch_parity(backend, cls, kw, with_lengths):
    rng = np.random.default_rng(5)
    tm, sm = pair(cls, kw)
    bf = kw.get("batch_first", False)
    T, B = 6, 4
    D = 2 if kw.get("bidirectional") else 1
    L = kw.get("num_layers", 1) * D
    Ho = kw.get("proj_size") or 7
    x = rng.standard_normal((B, T, 5) if bf else (T, B, 5))
    lengths = np.array([6, 1, 3, 6]) if with_lengths else None
    h0 = rng.standard_normal((L, B, Ho))
    c0 = rng.standard_normal((L, B, 7))
    tx = torch.tensor(x, requires_grad=True)
    th0, tc0 = torch.tensor(h0, requires_grad=True), torch.tensor(c0, requires_grad=True)
    thx = (th0, tc0) if cls == "LSTM" else th0
    if with_lengths:
        pk = torch.nn.utils.rnn.pack_padded_sequence(tx, torch.tensor(lengths), batch_first=bf, enforce_sorted=False)
        out, hn = tm(pk, thx)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=bf, total_length=T)
    else:
        out, hn = tm(tx, thx)
    loss_of(out, hn).backward()
    with seqblocks.backend(backend):
        sx = seqblocks.tensor(x, requires_grad=True)
        sh0, sc0 = seqblocks.tensor(h0, requires_grad=True), seqblocks.tensor(c0, requires_grad=True)
        sout, shn = sm(sx, (sh0, sc0) if cls == "LSTM" else sh0, lengths=lengths)
        loss_of(sout, shn).backward()
    close(sout.numpy(), out, "output")
    if cls == "LSTM":
        close(shn[0].numpy(), hn[0], "h_n")
        close(shn[1].numpy(), hn[1], "c_n")
        close(sc0.grad, tc0.grad, "c0 grad")
    else:
        close(shn.numpy(), hn, "h_n")
    close(sx.grad, tx.grad, "input grad")
    close(sh0.grad, th0.grad, "h0 grad")
    sp = dict(sm.named_parameters())
    assert list(sp) == [n for n, _ in tm.named_parameters()]
    for n, p in tm.named_parameters():
        close(sp[n].grad, p.grad, n)


@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN"])
def test_unbatched_and_default_state_float32(cls):
    rng = np.random.default_rng(1)
    tm, sm = pair(cls, dict(num_layers=2, bidirectional=True), dtype=np.float32)
    x = rng.standard_normal((5, 5)).astype(np.float32)
    out, hn = tm(torch.tensor(x))
    sout, shn = sm(x)
    np.testing.assert_allclose(sout.numpy(), out.detach().numpy(), rtol=1e-4, atol=1e-5)
    assert sout.shape == (5, 14)
    if cls == "LSTM":
        assert shn[0].shape == (4, 7) and shn[1].shape == (4, 7)
        np.testing.assert_allclose(shn[1].numpy(), hn[1].detach().numpy(), rtol=1e-4, atol=1e-5)
    else:
        assert shn.shape == (4, 7)
        np.testing.assert_allclose(shn.numpy(), hn.detach().numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls", ["LSTMCell", "GRUCell", "RNNCell"])
@pytest.mark.parametrize("batched", [True, False])
def test_cells(cls, batched):
    rng = np.random.default_rng(2)
    tm = getattr(torch.nn, cls)(5, 6, dtype=torch.float64)
    sm = getattr(nn, cls)(5, 6, dtype=np.float64)
    sm.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    shape = (3, 5) if batched else (5,)
    hshape = (3, 6) if batched else (6,)
    x, h, c = rng.standard_normal(shape), rng.standard_normal(hshape), rng.standard_normal(hshape)
    tx, th, tc = (torch.tensor(a, requires_grad=True) for a in (x, h, c))
    sx, sh, sc = (seqblocks.tensor(a, requires_grad=True) for a in (x, h, c))
    if cls == "LSTMCell":
        to, so = tm(tx, (th, tc)), sm(sx, (sh, sc))
        ((to[0] ** 2).sum() + to[1].sum()).backward()
        ((so[0] ** 2).sum() + so[1].sum()).backward()
        close(so[1].numpy(), to[1])
        close(sc.grad, tc.grad)
        to, so = to[0], so[0]
    else:
        to, so = tm(tx, th), sm(sx, sh)
        (to ** 2).sum().backward()
        (so ** 2).sum().backward()
    close(so.numpy(), to)
    close(sx.grad, tx.grad)
    close(sh.grad, th.grad)
    for n, p in tm.named_parameters():
        close(dict(sm.named_parameters())[n].grad, p.grad, n)
    out = sm(x)  # default zero state
    assert (out[0] if cls == "LSTMCell" else out).shape == hshape


def test_dropout_between_layers():
    seqblocks.manual_seed(0)
    m = nn.LSTM(4, 5, num_layers=2, dropout=0.5)
    x = np.random.default_rng(0).standard_normal((3, 2, 4)).astype(np.float32)
    seqblocks.manual_seed(1)
    a = m(x)[0].numpy()
    seqblocks.manual_seed(1)
    with seqblocks.backend("numpy"):
        b = m(x)[0].numpy()
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # the same mask on both backends
    m.eval()
    e1, e2 = m(x)[0].numpy(), m(x)[0].numpy()
    np.testing.assert_array_equal(e1, e2)
    assert not np.allclose(a, e1)


def test_init_names_and_repr():
    seqblocks.manual_seed(0)
    m = nn.LSTM(3, 16, num_layers=2, bidirectional=True, proj_size=4)
    tm = torch.nn.LSTM(3, 16, num_layers=2, bidirectional=True, proj_size=4)
    assert [(k, tuple(v.shape)) for k, v in m.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in tm.state_dict().items()]
    for p in m.parameters():
        assert np.abs(p.numpy()).max() <= 0.25 and p.dtype == np.float32
    assert repr(m) == repr(tm)
    assert repr(nn.GRU(3, 4, batch_first=True)) == repr(torch.nn.GRU(3, 4, batch_first=True))
    assert repr(nn.RNN(3, 4, nonlinearity="relu")) == repr(torch.nn.RNN(3, 4, nonlinearity="relu"))


def test_bad_input():
    m = nn.LSTM(4, 5, num_layers=2)
    x = np.zeros((3, 2, 4), np.float32)
    with pytest.raises(ValueError, match="input"):
        m(np.zeros((3, 2, 6), np.float32))
    with pytest.raises(ValueError, match="h_0"):
        m(x, (np.zeros((1, 2, 5), np.float32), np.zeros((2, 2, 5), np.float32)))
    with pytest.raises(ValueError, match="c_0"):
        m(x, (np.zeros((2, 2, 5), np.float32), np.zeros((2, 3, 5), np.float32)))
    with pytest.raises(ValueError, match="lengths"):
        m(x, lengths=[3, 4])
    with pytest.raises(ValueError, match="lengths"):
        m(x, lengths=[0, 1])
    with pytest.raises(ValueError, match="lengths"):
        m(x, lengths=[1, 1, 1])
    with pytest.raises(TypeError, match="dtype"):
        m(x.astype(np.float64))
    with pytest.raises(ValueError, match="hx"):
        nn.GRU(4, 5)(x, np.zeros((2, 2, 5), np.float32))
    with pytest.raises(ValueError, match="proj_size"):
        nn.LSTM(4, 5, proj_size=5)
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.RNN(4, 5, nonlinearity="gelu")
    with pytest.raises(ValueError, match="input"):
        nn.GRUCell(4, 5)(np.zeros((2, 3), np.float32))
