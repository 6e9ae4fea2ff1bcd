"""Positional encodings: the paper's sinusoid table, layouts, offsets, dropout, the learned table's
gradient and state dict, bad input."""

import math

import numpy as np
import pytest

import seqblocks
from seqblocks import nn
from seqblocks.testing import assert_close


@pytest.mark.parametrize("d_model", [1, 6, 7, 16])
def test_sinusoid_table(d_model):
    pe = nn.SinusoidalPositionalEncoding.table(50, d_model)
    for pos in (0, 1, 17, 49):
        for i in range(d_model):
            angle = pos / 10000 ** ((i - i % 2) / d_model)  # PE(pos, 2k) = sin(pos / 10000^(2k/d)), 2k+1: cos
            want = math.sin(angle) if i % 2 == 0 else math.cos(angle)
            assert abs(pe[pos, i] - want) <= 1e-12 * max(1.0, angle)


@pytest.mark.parametrize("batch_first", [False, True])
def test_adds_to_input_in_each_layout(rng, batch_first):
    m = nn.SinusoidalPositionalEncoding(8, max_len=20, batch_first=batch_first)
    x = rng.standard_normal((2, 5, 8) if batch_first else (5, 2, 8)).astype(np.float32)
    y = m(x).numpy()
    table = m.table(20, 8).astype(np.float32)
    expect = x + (table[None, :5] if batch_first else table[:5, None])
    assert y.dtype == np.float32
    assert_close(y, expect)
    y3 = m(x[:, :2] if batch_first else x[:2], offset=3).numpy()
    expect3 = (x[:, :2] + table[None, 3:5]) if batch_first else (x[:2] + table[3:5, None])
    assert_close(y3, expect3)
    u = rng.standard_normal((5, 8)).astype(np.float32)  # unbatched (L, E)
    assert_close(m(u).numpy(), u + table[:5])
    assert "pe" not in m.state_dict()  # the table is a non-persistent buffer


def test_dropout_and_gradient(rng):
    seqblocks.manual_seed(0)
    m = nn.SinusoidalPositionalEncoding(8, max_len=10, dropout=0.5)
    x = seqblocks.tensor(rng.standard_normal((4, 3, 8)).astype(np.float32), requires_grad=True)
    y = m(x)
    assert (y.numpy() == 0).any()
    y.sum().backward()
    assert set(np.unique(x.grad)) <= {0.0, 2.0}
    m.eval()
    assert_close(m(x).numpy(), x.numpy() + m.table(10, 8)[:4, None].astype(np.float32))


def test_learned_embedding(rng):
    torch = pytest.importorskip("torch")
    seqblocks.manual_seed(0)
    m = nn.LearnedPositionalEmbedding(12, 8, batch_first=True, dtype=np.float64)
    assert m.weight.shape == (12, 8) and 0.01 < m.weight.numpy().std() < 0.04
    emb = torch.nn.Embedding(12, 8, dtype=torch.float64)
    m.load_state_dict(emb.state_dict())  # GPT-2's wpe loads unchanged
    x = rng.standard_normal((2, 5, 8))
    tx = torch.tensor(x, requires_grad=True)
    ty = tx + emb(torch.arange(2, 7))[None]
    dy = rng.standard_normal(ty.shape)
    ty.backward(torch.tensor(dy))
    sx = seqblocks.tensor(x, requires_grad=True)
    y = m(sx, offset=2)
    y.backward(dy)
    assert_close(y.numpy(), ty.detach().numpy())
    assert_close(sx.grad, tx.grad.numpy())
    assert_close(m.weight.grad, emb.weight.grad.numpy())
    seq_first = nn.LearnedPositionalEmbedding(12, 8, dtype=np.float64)
    seq_first.load_state_dict(m.state_dict())
    assert_close(seq_first(x.transpose(1, 0, 2), offset=2).numpy(), y.numpy().transpose(1, 0, 2))


def test_bad_input(rng):
    m = nn.SinusoidalPositionalEncoding(8, max_len=10)
    with pytest.raises(ValueError, match=r"x: positions 8\.\.11 exceed max_len=10"):
        m(np.zeros((4, 2, 8), np.float32), offset=8)
    with pytest.raises(ValueError, match=r"x: expected d_model=8 as last dim, got shape \(4, 2, 6\)"):
        m(np.zeros((4, 2, 6), np.float32))
    with pytest.raises(ValueError, match="offset: expected a non-negative int"):
        m(np.zeros((4, 2, 8), np.float32), offset=-1)
    with pytest.raises(ValueError, match="x: expected a 3-D"):
        m(np.zeros((4,), np.float32))
    learned = nn.LearnedPositionalEmbedding(4, 8)
    with pytest.raises(ValueError, match=r"x: positions 0\.\.4 exceed max_len=4"):
        learned(np.zeros((5, 1, 8), np.float32))
    with pytest.raises(ValueError, match="max_len: expected a non-negative int"):
        nn.LearnedPositionalEmbedding(-1, 8)
