"""nn.MultiheadAttention: PyTorch parity (same state_dict: output, weights, input and parameter
gradients) across the constructor and forward options, both backends; parameter names, shapes and
init; fully masked rows; bad masks."""

import numpy as np
import pytest

import seqblocks
from seqblocks import nn
from seqblocks.testing import assert_close, sum_factor

E, H = 16, 4


def build(torch, dtype, **kw):
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    torch.manual_seed(0)
    tm = torch.nn.MultiheadAttention(E, H, dtype=tdtype, **kw)
    if kw.get("bias", True):  # PyTorch zeroes the biases: give them values so they are tested
        with torch.no_grad():
            tm.in_proj_bias.normal_()
            tm.out_proj.bias.normal_()
    ours = nn.MultiheadAttention(E, H, dtype=dtype, **kw)
    ours.load_state_dict(tm.state_dict())
    return tm, ours


CASES = {
    "plain": ({}, {}),
    "no_bias": ({"bias": False}, {}),
    "kdim_vdim": ({"kdim": 6, "vdim": 10}, {}),
    "bias_kv": ({"add_bias_kv": True}, {}),
    "zero_attn": ({"add_zero_attn": True}, {}),
    "bias_kv_zero_attn_masks": ({"add_bias_kv": True, "add_zero_attn": True}, {"attn": "bool", "kpm": "bool"}),
    "batch_first": ({"batch_first": True}, {}),
    "attn_bool": ({}, {"attn": "bool"}),
    "attn_float": ({}, {"attn": "float"}),
    "attn_3d": ({}, {"attn": "bool3d"}),
    "kpm_bool": ({}, {"kpm": "bool"}),
    "kpm_float": ({}, {"kpm": "float"}),
    "causal": ({}, {"attn": "causal"}),
    "no_weights": ({}, {"need_weights": False}),
    "per_head_weights": ({}, {"average_attn_weights": False, "attn": "float"}),
    "unbatched": ({}, {"unbatched": True, "kpm": "bool"}),
    "self_attention": ({}, {"self": True, "kpm": "bool"}),
    "self_attention_batch_first_no_weights": ({"batch_first": True}, {"self": True, "need_weights": False}),
    "self_attention_unbatched": ({}, {"self": True, "unbatched": True}),
}


def make_masks(rng, opts, B, L, S):
    attn = kpm = None
    kind = opts.get("attn")
    if kind == "bool":
        attn = rng.random((L, S)) < 0.3
        attn[:, 0] = False
    elif kind == "float":
        attn = rng.standard_normal((L, S))
    elif kind == "bool3d":
        attn = rng.random((B * H, L, S)) < 0.3
        attn[..., 0] = False
    elif kind == "causal":
        attn = np.triu(np.ones((L, S), bool), 1)
    kind = opts.get("kpm")
    if kind == "bool":
        kpm = rng.random((B, S)) < 0.3
        kpm[:, 0] = False
    elif kind == "float":
        kpm = rng.standard_normal((B, S))
    return attn, kpm


@pytest.mark.parametrize("backend", ["numpy", "native"])
@pytest.mark.parametrize("case", list(CASES))
def test_torch_parity(rng, backend, case):
    torch = pytest.importorskip("torch")
    kw, opts = CASES[case]
    dtype = np.float64
    tm, ours = build(torch, dtype, **kw)
    B, L, S = 3, 5, 7
    kdim, vdim = kw.get("kdim", E), kw.get("vdim", E)
    unbatched = opts.get("unbatched", False)
    shape = (lambda n, d: (n, d)) if unbatched else \
        (lambda n, d: (B, n, d)) if kw.get("batch_first") else (lambda n, d: (n, B, d))
    query = rng.standard_normal(shape(L, E))
    key = rng.standard_normal(shape(S, kdim))
    value = rng.standard_normal(shape(S, vdim))
    attn, kpm = make_masks(rng, opts, 1 if unbatched else B, L, S)
    if unbatched and kpm is not None:
        kpm = kpm[0]
    fw = {"need_weights": opts.get("need_weights", True),
          "average_attn_weights": opts.get("average_attn_weights", True),
          "is_causal": opts.get("attn") == "causal"}

    self_attn = opts.get("self", False)
    if self_attn:
        S = L
        key = value = query
        attn, kpm = make_masks(rng, opts, 1 if unbatched else B, L, S)
        if unbatched and kpm is not None:
            kpm = kpm[0]
    tin = [torch.tensor(a, requires_grad=True) for a in (query, key, value)]
    if self_attn:
        tin = [tin[0]] * 3
    t_out, t_w = tm(*tin, key_padding_mask=None if kpm is None else torch.tensor(kpm),
                    attn_mask=None if attn is None else torch.tensor(attn), **fw)
    dout = rng.standard_normal(t_out.shape)
    loss = (t_out * torch.tensor(dout)).sum()
    dw = None
    if t_w is not None:
        dw = rng.standard_normal(t_w.shape)
        loss = loss + (t_w * torch.tensor(dw)).sum()
    loss.backward()

    with seqblocks.backend(backend):
        sin = [seqblocks.tensor(a, requires_grad=True) for a in (query, key, value)]
        if self_attn:
            sin = [sin[0]] * 3
        out, w = ours(*sin, key_padding_mask=kpm, attn_mask=attn, **fw)
        sloss = (out * dout).sum()
        if w is not None:
            sloss = sloss + (w * dw).sum()
        sloss.backward()

    # float64 on both sides; every result is a chain of a few sums of <= 2E terms of size ~1
    tol = {"factor": 4 * sum_factor(2 * E), "magnitude": 10.0}
    assert out.shape == tuple(t_out.shape)
    assert_close(out.numpy(), t_out.detach().numpy(), what="output", **tol)
    if fw["need_weights"]:
        assert_close(w.numpy(), t_w.detach().numpy(), what="weights", **tol)
    else:
        assert w is None and t_w is None
    for name, a, b in zip(("query", "key", "value"), sin, tin):
        assert_close(a.grad, b.grad.numpy(), what=f"d{name}", **tol)
    tparams = dict(tm.named_parameters())
    for name, p in ours.named_parameters():
        assert_close(p.grad, tparams[name].grad.numpy(), what=f"d{name}", **tol)


def float32_case(rng, case):
    """A float32 module of a CASES entry and its inputs: (module, opts, query, key, value,
    attn_mask, key_padding_mask); key and value are query for self-attention cases."""
    kw, opts = CASES[case]
    ours = nn.MultiheadAttention(E, H, dtype=np.float32, **kw)
    B, L, S = 3, 5, 7
    kdim, vdim = kw.get("kdim", E), kw.get("vdim", E)
    unbatched = opts.get("unbatched", False)
    shape = (lambda n, d: (n, d)) if unbatched else \
        (lambda n, d: (B, n, d)) if kw.get("batch_first") else (lambda n, d: (n, B, d))
    query = rng.standard_normal(shape(L, E)).astype(np.float32)
    key, value = (rng.standard_normal(shape(S, d)).astype(np.float32) for d in (kdim, vdim))
    if opts.get("self", False):
        S, key, value = L, query, query
    attn, kpm = make_masks(rng, opts, 1 if unbatched else B, L, S)
    if unbatched and kpm is not None:
        kpm = kpm[0]
    return ours, opts, query, key, value, attn, kpm


@pytest.mark.parametrize("backend", ["numpy", "native"])
@pytest.mark.parametrize("case", list(CASES))
def test_inference_equals_the_autograd_forward(rng, backend, case):
    """Under no_grad the heads are read in place and merged by the kernel (need_weights=False):
    the output is exactly the autograd forward's, whose heads are copied and merged separately."""
    ours, opts, query, key, value, attn, kpm = float32_case(rng, case)
    fw = {"need_weights": False, "key_padding_mask": kpm, "attn_mask": attn, "is_causal": opts.get("attn") == "causal"}
    with seqblocks.backend(backend):
        tq = seqblocks.tensor(query, requires_grad=True)
        tk, tv = (tq, tq) if opts.get("self", False) else (seqblocks.tensor(key), seqblocks.tensor(value))
        expected, _ = ours(tq, tk, tv, **fw)
        with seqblocks.no_grad():
            out, w = ours(query, key, value, **fw)
    assert w is None
    np.testing.assert_array_equal(out.numpy(), expected.numpy())


@pytest.mark.parametrize("backend", ["numpy", "native"])
@pytest.mark.parametrize("case", list(CASES))
def test_training_without_weights_equals_the_copying_path(rng, backend, case):
    """Training with need_weights=False reads the heads in place from the projections and writes
    their gradients in place into the projections' gradients (no head copies); with
    need_weights=True the heads are copied apart and merged by separate ops. The output and every
    gradient are the same bits."""
    ours, opts, query, key, value, attn, kpm = float32_case(rng, case)
    self_attn = opts.get("self", False)
    results = []
    for need_weights in (True, False):
        with seqblocks.backend(backend):
            ours.zero_grad()
            tq = seqblocks.tensor(query, requires_grad=True)
            tk, tv = (tq, tq) if self_attn else (seqblocks.tensor(key, requires_grad=True),
                                                 seqblocks.tensor(value, requires_grad=True))
            out, _ = ours(tq, tk, tv, key_padding_mask=kpm, attn_mask=attn, need_weights=need_weights,
                          is_causal=opts.get("attn") == "causal")
            out.backward(np.cos(np.arange(out.numpy().size)).reshape(out.shape).astype(np.float32))
            grads = [t.grad for t in ((tq,) if self_attn else (tq, tk, tv))]
            results.append([out.numpy()] + grads + [p.grad for _, p in ours.named_parameters()])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_parameter_names_and_init(rng):
    torch = pytest.importorskip("torch")
    for kw in ({}, {"kdim": 6, "vdim": 10, "add_bias_kv": True}, {"bias": False}):
        tm = torch.nn.MultiheadAttention(E, H, **kw)
        ours = nn.MultiheadAttention(E, H, **kw)
        assert [(n, tuple(p.shape)) for n, p in ours.named_parameters()] == \
            [(n, tuple(p.shape)) for n, p in tm.named_parameters()]
        assert list(ours.state_dict()) == list(tm.state_dict())
    m = nn.MultiheadAttention(64, 8)
    assert not m.in_proj_bias.numpy().any() and not m.out_proj.bias.numpy().any()
    bound = np.sqrt(6 / (64 + 3 * 64))  # xavier_uniform on the packed (3E, E) weight
    w = m.in_proj_weight.numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound


@pytest.mark.parametrize("backend", ["numpy", "native"])
def test_fully_masked_rows_finite(rng, backend):
    m = nn.MultiheadAttention(E, H, batch_first=True)
    x = seqblocks.tensor(rng.standard_normal((2, 4, E)).astype(np.float32), requires_grad=True)
    kpm = np.zeros((2, 4), bool)
    kpm[1] = True  # batch 1 attends nothing
    with seqblocks.backend(backend):
        out, w = m(x, x, x, key_padding_mask=kpm, need_weights=False)
        out.sum().backward()
    assert w is None
    assert np.isfinite(out.numpy()).all() and np.isfinite(x.grad).all()
    # the attention part of a fully masked row is zero: the output is out_proj's bias
    assert_close(out.numpy()[1], np.broadcast_to(m.out_proj.bias.numpy(), (4, E)), magnitude=1.0)


def test_dropout_weights_match_output(rng):
    m = nn.MultiheadAttention(E, H, dropout=0.5, batch_first=True)
    x = rng.standard_normal((2, 5, E)).astype(np.float32)
    seqblocks.manual_seed(3)
    out, w = m(x, x, x, average_attn_weights=False)
    # recompute the output from the returned (dropped-out) weights
    v = (x @ m.in_proj_weight.numpy()[2 * E:].T + m.in_proj_bias.numpy()[2 * E:]).reshape(2, 5, H, E // H)
    ctx = np.einsum("bhls,bshd->blhd", w.numpy(), v).reshape(2, 5, E)
    expect = ctx @ m.out_proj.weight.numpy().T + m.out_proj.bias.numpy()
    assert_close(out.numpy(), expect, magnitude=10.0, factor=sum_factor(4 * E))
    assert (w.numpy() == 0).any()


def test_bad_masks(rng):
    m = nn.MultiheadAttention(E, H)
    x = rng.standard_normal((5, 2, E))
    with pytest.raises(ValueError, match=r"attn_mask: expected shape \(5, 5\) or \(8, 5, 5\)"):
        m(x, x, x, attn_mask=np.zeros((5, 4), bool))
    with pytest.raises(ValueError, match=r"key_padding_mask: expected shape \(2, 5\)"):
        m(x, x, x, key_padding_mask=np.zeros((5, 2), bool))
    with pytest.raises(TypeError, match="attn_mask: expected a bool or float array, got dtype int64"):
        m(x, x, x, attn_mask=np.zeros((5, 5), np.int64))
    with pytest.raises(RuntimeError, match="Need attn_mask if specifying the is_causal hint"):
        m(x, x, x, is_causal=True)
    with pytest.raises(ValueError, match="embed_dim: must be divisible by num_heads"):
        nn.MultiheadAttention(10, 3)
