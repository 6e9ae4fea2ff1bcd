"""Seq2seq attentions (additive, dot, general, cosine): parity with a float64 NumPy formula on both
backends, float64 gradient checks through autograd, PyTorch parity (forward and backward, same
weights), padding masks and lengths, fully masked rows, bad input."""

import numpy as np
import pytest

import seqblocks
from seqblocks import nn
from seqblocks.testing import assert_close, gradcheck, sum_factor

KINDS = ["dot", "general", "cosine", "additive"]
B, LQ, S, D, DV, HID = 2, 5, 7, 6, 3, 4


def make(kind, dtype=np.float64):
    seqblocks.manual_seed(0)
    if kind == "dot":
        return nn.DotAttention()
    if kind == "general":
        return nn.GeneralAttention(D, D + 1, dtype=dtype)
    if kind == "cosine":
        return nn.CosineAttention(0.5, dtype=dtype)
    return nn.AdditiveAttention(D, D + 1, HID, dtype=dtype)


def inputs(rng, kind, dtype=np.float64):
    dk = D + 1 if kind in ("general", "additive") else D
    return (rng.standard_normal((B, LQ, D)).astype(dtype), rng.standard_normal((B, S, dk)).astype(dtype),
            rng.standard_normal((B, S, DV)).astype(dtype))


def numpy_scores(module, kind, q, k):
    if kind == "dot":
        return q @ np.swapaxes(k, 1, 2)
    if kind == "general":
        return q @ np.swapaxes(k @ module.weight.numpy().T, 1, 2)
    if kind == "cosine":
        qn = q / np.sqrt((q * q).sum(-1, keepdims=True) + module.eps ** 2)
        kn = k / np.sqrt((k * k).sum(-1, keepdims=True) + module.eps ** 2)
        return qn @ np.swapaxes(kn, 1, 2) / module.temperature.numpy()[0]
    qp = q @ module.query_proj.weight.numpy().T + module.query_proj.bias.numpy()
    kp = k @ module.key_proj.weight.numpy().T
    return np.tanh(qp[:, :, None, :] + kp[:, None, :, :]) @ module.v.weight.numpy()[0]


def numpy_attention(module, kind, q, k, v, visible):
    s = numpy_scores(module, kind, q, k)
    s = np.where(visible[:, None, :], s, -np.inf)
    m = s.max(-1, keepdims=True)
    ok = np.isfinite(m)
    with np.errstate(invalid="ignore"):
        e = np.exp(s - np.where(ok, m, 0))
    t = e.sum(-1, keepdims=True)
    w = np.where(t > 0, e / np.where(t > 0, t, 1), 0)
    return w @ v, w


@pytest.mark.parametrize("backend", ["numpy", "native"])
@pytest.mark.parametrize("kind", KINDS)
def test_matches_numpy_formula(rng, backend, kind):
    m = make(kind)
    q, k, v = inputs(rng, kind)
    lengths = np.array([S, 3])
    with seqblocks.backend(backend):
        ctx, w = m(q, k, v, lengths=lengths)
        ctx2, w2 = m(q, k, v, key_padding_mask=np.arange(S)[None] >= lengths[:, None])
    ectx, ew = numpy_attention(m, kind, q, k, v, np.arange(S)[None] < lengths[:, None])
    # float64, a handful of chained sums of <= max(D, S, HID) terms of size ~1
    assert_close(ctx.numpy(), ectx, magnitude=10.0, factor=sum_factor(S * D), what="context")
    assert_close(w.numpy(), ew, magnitude=1.0, factor=sum_factor(S * D), what="weights")
    assert np.array_equal(ctx.numpy(), ctx2.numpy()) and np.array_equal(w.numpy(), w2.numpy())
    assert not w.numpy()[1, :, 3:].any()


@pytest.mark.parametrize("backend", ["numpy", "native"])
@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck(rng, backend, kind):
    m = make(kind)
    params = [p for _, p in m.named_parameters()]
    q, k, v = inputs(rng, kind)
    lengths = np.array([S, 4])

    def forward(q, k, v, *ps):
        for p, a in zip(params, ps):
            p.data = a
        ts = [seqblocks.tensor(a, requires_grad=True) for a in (q, k, v)]
        with seqblocks.backend(backend):
            ctx, w = m(*ts, lengths=lengths)
        return (ctx.numpy(), w.numpy()), (ts, ctx, w)

    def backward(grads, ws):
        ts, ctx, w = ws
        for p in params:
            p.grad = None
        with seqblocks.backend(backend):
            ((ctx * grads[0]).sum() + (w * grads[1]).sum()).backward()
        return [t.grad for t in ts] + [p.grad for p in params]

    gradcheck(forward, backward, [q, k, v] + [p.numpy().copy() for p in params], what=f"{kind} {backend}")


def torch_module(torch, kind, m):
    tt = lambda a: torch.tensor(a.numpy(), requires_grad=True)  # noqa: E731
    params = {name: tt(p) for name, p in m.named_parameters()}

    def scores(q, k):
        if kind == "dot":
            return q @ k.transpose(1, 2)
        if kind == "general":
            return q @ (k @ params["weight"].T).transpose(1, 2)
        if kind == "cosine":
            qn = q / torch.sqrt((q * q).sum(-1, keepdim=True) + m.eps ** 2)
            kn = k / torch.sqrt((k * k).sum(-1, keepdim=True) + m.eps ** 2)
            return qn @ kn.transpose(1, 2) / params["temperature"]
        qp = q @ params["query_proj.weight"].T + params["query_proj.bias"]
        kp = k @ params["key_proj.weight"].T
        return (torch.tanh(qp[:, :, None, :] + kp[:, None, :, :]) @ params["v.weight"][0])

    return scores, params


@pytest.mark.parametrize("backend", ["numpy", "native"])
@pytest.mark.parametrize("kind", KINDS)
def test_torch_parity(rng, backend, kind):
    torch = pytest.importorskip("torch")
    m = make(kind)
    q, k, v = inputs(rng, kind)
    pad = np.zeros((B, S), bool)
    pad[0, 5:] = True
    scores, tparams = torch_module(torch, kind, m)
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    tw = torch.softmax(scores(tq, tk).masked_fill(torch.tensor(pad)[:, None, :], float("-inf")), -1)
    tctx = tw @ tv
    dctx, dw = rng.standard_normal(tctx.shape), rng.standard_normal(tw.shape)
    ((tctx * torch.tensor(dctx)).sum() + (tw * torch.tensor(dw)).sum()).backward()
    sq, sk, sv = (seqblocks.tensor(a, requires_grad=True) for a in (q, k, v))
    with seqblocks.backend(backend):
        ctx, w = m(sq, sk, sv, key_padding_mask=pad)
        ((ctx * dctx).sum() + (w * dw).sum()).backward()
    tol = {"magnitude": 10.0, "factor": sum_factor(S * D)}
    assert_close(ctx.numpy(), tctx.detach().numpy(), what="context", **tol)
    assert_close(w.numpy(), tw.detach().numpy(), what="weights", **tol)
    for name, a, b in zip("qkv", (sq, sk, sv), (tq, tk, tv)):
        assert_close(a.grad, b.grad.numpy(), what=f"d{name}", **tol)
    for name, p in m.named_parameters():
        assert_close(p.grad, tparams[name].grad.numpy(), what=f"d{name}", **tol)


@pytest.mark.parametrize("kind", KINDS)
def test_fully_masked_rows_and_float32(rng, kind):
    m = make(kind, np.float32)
    q, k, v = inputs(rng, kind, np.float32)
    sq = seqblocks.tensor(q, requires_grad=True)
    ctx, w = m(sq, k, v, lengths=np.array([0, S]))
    (ctx.sum() + w.sum()).backward()
    assert ctx.dtype == np.float32 and w.shape == (B, LQ, S)
    assert not ctx.numpy()[0].any() and not w.numpy()[0].any()
    assert np.isfinite(sq.grad).all() and not sq.grad[0].any()


def test_bad_input(rng):
    m = nn.DotAttention()
    q, k, v = inputs(rng, "dot")
    with pytest.raises(ValueError, match=r"key_padding_mask: expected shape \(2, 7\)"):
        m(q, k, v, key_padding_mask=np.zeros((2, 6), bool))
    with pytest.raises(TypeError, match="key_padding_mask: expected a bool array"):
        m(q, k, v, key_padding_mask=np.zeros((2, 7)))
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, 7\]"):
        m(q, k, v, lengths=np.array([8, 1]))
    with pytest.raises(TypeError, match="lengths: expected an integer array"):
        m(q, k, v, lengths=np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="at most one"):
        m(q, k, v, key_padding_mask=np.zeros((2, 7), bool), lengths=np.array([1, 2]))
    with pytest.raises(ValueError, match="keys: expected last dim 6"):
        m(q, k[..., :5], v)
    with pytest.raises(ValueError, match="queries: expected a 3-D array"):
        m(q[0], k, v)


# ------------------------------------------------------------------ fused additive scores pair

from seqblocks import ops, reference  # noqa: E402


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("h", [1, 3, 7, 15, 16, 17, 31, 33, 65])
def test_additive_scores_native_matches_reference(isa, rng, dtype, h):
    qp = rng.standard_normal((2, 5, h)).astype(dtype)
    kp = rng.standard_normal((2, 9, h)).astype(dtype)
    w = rng.standard_normal(h).astype(dtype)
    s, ws = ops.additive_scores_forward(qp, kp, w)
    ds = rng.standard_normal(s.shape).astype(dtype)
    grads = ops.additive_scores_backward(ds, ws)
    up = lambda a: a.astype(np.float64)  # noqa: E731
    rs, rws = reference.additive_scores_forward(up(qp), up(kp), up(w))
    rgrads = reference.additive_scores_backward(up(ds), rws)
    # tanh is within 2 ulp; every output is a sum of h (forward, dw also over B Lq S) such terms
    t = np.abs(np.tanh(up(qp)[:, :, None, :] + up(kp)[:, None, :, :]))
    assert_close(s, rs, magnitude=t @ np.abs(up(w)), factor=sum_factor(h), what="scores")
    g = np.abs(up(ds))[..., None] * np.abs(up(w))
    for name, a, b, mag in zip(("dqp", "dkp", "dw"), grads, rgrads,
                               (g.sum(2), g.sum(1), (np.abs(up(ds))[..., None] * t).sum((0, 1, 2)))):
        assert a.dtype == dtype
        assert_close(a, b, magnitude=mag, factor=sum_factor(2 * 5 * 9), what=name)


@pytest.mark.parametrize("backend", ["numpy", "native"])
def test_additive_scores_gradcheck(rng, backend):
    with seqblocks.backend(backend):
        gradcheck(ops.additive_scores_forward, ops.additive_scores_backward,
                  [rng.standard_normal((2, 3, 5)), rng.standard_normal((2, 4, 5)), rng.standard_normal(5)],
                  what=f"additive scores {backend}")


def test_additive_scores_threads_and_bad_input(rng):
    qp, kp, w = rng.standard_normal((5, 40, 33)), rng.standard_normal((5, 50, 33)), rng.standard_normal(33)
    results = []
    for n in (1, 2):
        seqblocks.set_num_threads(n)
        s, ws = ops.additive_scores_forward(qp, kp, w)
        results.append((s,) + tuple(ops.additive_scores_backward(np.ones_like(s), ws)))
    for a, b in zip(*results):
        assert np.array_equal(a, b)
    with pytest.raises(ValueError, match=r"kp: expected shape \(5, S, 33\)"):
        ops.additive_scores_forward(qp, kp[..., :3], w)
    with pytest.raises(ValueError, match=r"w: expected shape \(33,\)"):
        ops.additive_scores_forward(qp, kp, w[:3])
    with pytest.raises(TypeError, match="expected arrays of one dtype"):
        ops.additive_scores_forward(qp, kp.astype(np.float32), w)
