"""Transformer layers and stacks: PyTorch parity (same state_dict; outputs, input and parameter
gradients) for post-/pre-norm, relu/gelu, every mask kind, both layouts, unbatched; parameter
names; attention weights; encoder-only / decoder-only stacks; bad masks and shapes."""

import numpy as np
import pytest

import seqblocks
from seqblocks import nn
from seqblocks.testing import assert_close, sum_factor

E, H, FF = 16, 4, 32
B, L, S = 3, 5, 7
# float64 on both sides; each result is a chain of a few layers of sums of <= FF terms of size ~1
TOL = {"factor": 16 * sum_factor(FF), "magnitude": 10.0}

pytestmark = pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")


def _masks(rng, kind, n_q, n_k, batch):
    """(attn_mask, key_padding_mask, is_causal) of a mask kind; rows always keep key 0 visible."""
    attn = kpm = None
    causal = False
    if kind == "bool":
        attn = rng.random((n_q, n_k)) < 0.3
        attn[:, 0] = False
    elif kind == "float":
        attn = rng.standard_normal((n_q, n_k))
    elif kind == "bool3d":
        attn = rng.random((batch * H, n_q, n_k)) < 0.3
        attn[..., 0] = False
    elif kind == "kpm_bool":
        kpm = rng.random((batch, n_k)) < 0.3
        kpm[:, 0] = False
    elif kind == "kpm_float":
        kpm = rng.standard_normal((batch, n_k))
    elif kind in ("causal", "causal_kpm"):
        attn = np.triu(np.full((n_q, n_k), -np.inf), 1)
        causal = True
        if kind == "causal_kpm":  # a bool mask: PyTorch deprecates mixing bool and float masks
            attn = np.triu(np.ones((n_q, n_k), bool), 1)
            kpm = rng.random((batch, n_k)) < 0.3
            kpm[:, 0] = False
    return attn, kpm, causal


def _t(torch, a):
    return None if a is None else torch.tensor(a)


def _compare(torch_module, ours, t_out, out, t_inputs, inputs):
    assert out.shape == tuple(t_out.shape)
    assert_close(out.numpy(), t_out.detach().numpy(), what="output", **TOL)
    for i, (a, b) in enumerate(zip(inputs, t_inputs)):
        assert_close(a.grad, b.grad.numpy(), what=f"d input {i}", **TOL)
    tparams = dict(torch_module.named_parameters())
    names = [n for n, _ in ours.named_parameters()]
    assert names == list(tparams)
    for name, p in ours.named_parameters():
        assert_close(p.grad, tparams[name].grad.numpy(), what=f"d {name}", **TOL)


def _randomize_biases(torch, m):
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.ndim == 1:
                p.normal_(0, 0.5)


def _shape(batch_first, unbatched, n):
    if unbatched:
        return (n, E)
    return (B, n, E) if batch_first else (n, B, E)


ENC_CASES = {
    "post_relu": dict(), "pre_gelu": dict(norm_first=True, activation="gelu"),
    "batch_first": dict(batch_first=True), "pre_batch_first_gelu": dict(norm_first=True, batch_first=True, activation="gelu"),
    "no_bias": dict(bias=False), "callable_act": dict(activation="callable"),
}
MASK_KINDS = ["none", "bool", "float", "bool3d", "kpm_bool", "kpm_float", "causal", "causal_kpm"]


def _encoder_layer(torch, kw):
    kw = dict(kw)
    t_act = o_act = kw.pop("activation", "relu")
    if t_act == "callable":
        t_act, o_act = torch.nn.functional.gelu, nn.functional.gelu
    torch.manual_seed(0)
    tm = torch.nn.TransformerEncoderLayer(E, H, FF, dropout=0.0, activation=t_act, dtype=torch.float64, **kw)
    _randomize_biases(torch, tm)
    ours = nn.TransformerEncoderLayer(E, H, FF, dropout=0.0, activation=o_act, dtype=np.float64, **kw)
    ours.load_state_dict(tm.state_dict())
    return tm, ours


@pytest.mark.parametrize("backend", ["numpy", "native"])
@pytest.mark.parametrize("case,mask", [(c, "none") for c in ENC_CASES] + [("post_relu", k) for k in MASK_KINDS[1:]]
                         + [("pre_batch_first_gelu", k) for k in ("bool", "kpm_bool", "causal_kpm")]
                         + [("post_relu", "unbatched")])
def test_encoder_layer_torch_parity(rng, backend, case, mask):
    torch = pytest.importorskip("torch")
    kw = ENC_CASES[case]
    tm, ours = _encoder_layer(torch, kw)
    unbatched = mask == "unbatched"
    x = rng.standard_normal(_shape(kw.get("batch_first", False), unbatched, L))
    attn, kpm, causal = _masks(rng, "kpm_bool" if unbatched else mask, L, L, 1 if unbatched else B)
    if unbatched:
        kpm = kpm[0]
    tx = torch.tensor(x, requires_grad=True)
    t_out = tm(tx, src_mask=_t(torch, attn), src_key_padding_mask=_t(torch, kpm), is_causal=causal)
    dy = rng.standard_normal(t_out.shape)
    t_out.backward(torch.tensor(dy))
    with seqblocks.backend(backend):
        sx = seqblocks.tensor(x, requires_grad=True)
        out = ours(sx, src_mask=attn, src_key_padding_mask=kpm, is_causal=causal)
        out.backward(dy)
    _compare(tm, ours, t_out, out, [tx], [sx])


DEC_CASES = {
    "post_relu_causal_mkpm": (dict(), dict(tgt="causal", mem="kpm_bool")),
    "pre_gelu_bf": (dict(norm_first=True, activation="gelu", batch_first=True), dict(tgt="kpm_bool", mem="float")),
    "post_bool3d": (dict(), dict(tgt="bool", mem="bool3d")),
    "pre_float": (dict(norm_first=True), dict(tgt="float", mem="kpm_float")),
    "pre_causal_kpm_bf": (dict(norm_first=True, batch_first=True), dict(tgt="causal_kpm", mem="bool")),
    "plain": (dict(), dict()),
    "unbatched": (dict(), dict(unbatched=True)),
}


@pytest.mark.parametrize("backend", ["numpy", "native"])
@pytest.mark.parametrize("case", list(DEC_CASES))
def test_decoder_layer_torch_parity(rng, backend, case):
    torch = pytest.importorskip("torch")
    kw, opts = DEC_CASES[case]
    torch.manual_seed(0)
    tm = torch.nn.TransformerDecoderLayer(E, H, FF, dropout=0.0, dtype=torch.float64, **kw)
    _randomize_biases(torch, tm)
    ours = nn.TransformerDecoderLayer(E, H, FF, dropout=0.0, dtype=np.float64, **kw)
    ours.load_state_dict(tm.state_dict())
    unb = opts.get("unbatched", False)
    bf = kw.get("batch_first", False)
    x = rng.standard_normal(_shape(bf, unb, L))
    mem = rng.standard_normal(_shape(bf, unb, S))
    tmask, tkpm, tcausal = _masks(rng, opts.get("tgt", "none"), L, L, B)
    mmask, mkpm, _ = _masks(rng, opts.get("mem", "none"), L, S, B)
    kw_fwd = dict(tgt_mask=tmask, memory_mask=mmask, tgt_key_padding_mask=tkpm, memory_key_padding_mask=mkpm,
                  tgt_is_causal=tcausal)
    tx, tmem = torch.tensor(x, requires_grad=True), torch.tensor(mem, requires_grad=True)
    t_out = tm(tx, tmem, **{k: (_t(torch, v) if k != "tgt_is_causal" else v) for k, v in kw_fwd.items()})
    dy = rng.standard_normal(t_out.shape)
    t_out.backward(torch.tensor(dy))
    with seqblocks.backend(backend):
        sx, smem = seqblocks.tensor(x, requires_grad=True), seqblocks.tensor(mem, requires_grad=True)
        out = ours(sx, smem, **kw_fwd)
        out.backward(dy)
    _compare(tm, ours, t_out, out, [tx, tmem], [sx, smem])


@pytest.mark.parametrize("norm_first,batch_first,activation", [(False, False, "relu"), (True, True, "gelu")])
def test_transformer_torch_parity(rng, norm_first, batch_first, activation):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    kw = dict(norm_first=norm_first, batch_first=batch_first, activation=activation)
    tm = torch.nn.Transformer(E, H, 2, 2, FF, dropout=0.0, dtype=torch.float64, **kw)
    _randomize_biases(torch, tm)
    ours = nn.Transformer(E, H, 2, 2, FF, dropout=0.0, dtype=np.float64, **kw)
    assert list(ours.state_dict()) == list(tm.state_dict())
    ours.load_state_dict(tm.state_dict())
    src = rng.standard_normal(_shape(batch_first, False, S))
    tgt = rng.standard_normal(_shape(batch_first, False, L))
    tgt_mask = nn.Transformer.generate_square_subsequent_mask(L, dtype=np.float64).numpy()
    assert np.array_equal(tgt_mask, torch.nn.Transformer.generate_square_subsequent_mask(L, dtype=torch.float64).numpy())
    skpm = rng.random((B, S)) < 0.3
    skpm[:, 0] = False
    tkpm = rng.random((B, L)) < 0.3
    tkpm[:, 0] = False
    src_mask = rng.random((S, S)) < 0.2
    src_mask[:, 0] = False
    kw_fwd = dict(src_mask=src_mask, tgt_mask=np.isinf(tgt_mask),  # bool like the padding masks src_key_padding_mask=skpm, tgt_key_padding_mask=tkpm,
                  memory_key_padding_mask=skpm)
    ts, tt = torch.tensor(src, requires_grad=True), torch.tensor(tgt, requires_grad=True)
    t_out = tm(ts, tt, **{k: _t(torch, v) for k, v in kw_fwd.items()})
    dy = rng.standard_normal(t_out.shape)
    t_out.backward(torch.tensor(dy))
    ss, st = seqblocks.tensor(src, requires_grad=True), seqblocks.tensor(tgt, requires_grad=True)
    out = ours(ss, st, **kw_fwd)
    out.backward(dy)
    _compare(tm, ours, t_out, out, [ts, tt], [ss, st])


@pytest.mark.parametrize("norm_first", [False, True])
def test_stacks_eval_fast_path_parity(rng, norm_first):
    """PyTorch's eval + no_grad fast path (its fused kernels) gives the same outputs."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tl = torch.nn.TransformerEncoderLayer(E, H, FF, dropout=0.1, batch_first=True, norm_first=norm_first)
    tenc = torch.nn.TransformerEncoder(tl, 2, norm=torch.nn.LayerNorm(E), enable_nested_tensor=False).eval()
    ours = nn.TransformerEncoder(nn.TransformerEncoderLayer(E, H, FF, dropout=0.1, batch_first=True,
                                                            norm_first=norm_first), 2, norm=nn.LayerNorm(E)).eval()
    ours.load_state_dict(tenc.state_dict())
    x = rng.standard_normal((B, L, E)).astype(np.float32)
    mask = nn.Transformer.generate_square_subsequent_mask(L)
    with torch.no_grad():
        t_out = tenc(torch.tensor(x), mask=torch.tensor(mask.numpy()))
    x0 = x.copy()
    with seqblocks.no_grad():
        out = ours(x, mask=mask)  # causality detected from the mask, as PyTorch
    assert_close(out.numpy(), t_out.numpy(), factor=16 * sum_factor(FF), magnitude=10.0)
    assert np.array_equal(x, x0)  # inference updates only its own temporaries in place
    assert_close(ours(x, mask=mask).numpy(), out.numpy(), factor=16 * sum_factor(FF), magnitude=10.0)


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_inference_parity(rng, norm_first):
    """Encoder-decoder under no_grad, where the residual adds and the post-norm add-and-norms run in
    place on the layers' own temporaries: PyTorch's outputs, and the caller's arrays untouched."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tm = torch.nn.Transformer(E, H, 2, 2, FF, dropout=0.1, batch_first=True, norm_first=norm_first).eval()
    _randomize_biases(torch, tm)
    ours = nn.Transformer(E, H, 2, 2, FF, dropout=0.1, batch_first=True, norm_first=norm_first).eval()
    ours.load_state_dict(tm.state_dict())
    src = rng.standard_normal((B, S, E)).astype(np.float32)
    tgt = rng.standard_normal((B, L, E)).astype(np.float32)
    tgt_mask = nn.Transformer.generate_square_subsequent_mask(L).numpy()
    with torch.no_grad():
        t_out = tm(torch.tensor(src), torch.tensor(tgt), tgt_mask=torch.tensor(tgt_mask))
    src0, tgt0 = src.copy(), tgt.copy()
    with seqblocks.no_grad():
        out = ours(src, tgt, tgt_mask=tgt_mask)
        again = ours(src, tgt, tgt_mask=tgt_mask)
    assert_close(out.numpy(), t_out.numpy(), **TOL)
    np.testing.assert_array_equal(again.numpy(), out.numpy())
    np.testing.assert_array_equal(src, src0)
    np.testing.assert_array_equal(tgt, tgt0)


def test_encoder_mask_detection_uses_causal_kernel(rng):
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(E, H, FF, dropout=0.0, batch_first=True, dtype=np.float64), 2)
    x = rng.standard_normal((B, L, E))
    bool_mask = np.triu(np.ones((L, L), bool), 1)
    a = enc(x, mask=bool_mask).numpy()
    b = enc(x, mask=nn.Transformer.generate_square_subsequent_mask(L, dtype=np.float64)).numpy()
    c = enc(x, is_causal=True).numpy()  # seqblocks: the hint alone means causal
    d = enc(x, mask=bool_mask, is_causal=False).numpy()  # the mask used as given
    for other in (b, c, d):
        assert_close(other, a, magnitude=10.0, factor=sum_factor(FF))
    # changing a future input does not change earlier outputs
    x2 = x.copy()
    x2[:, -1] += 1.0
    assert_close(enc(x2, is_causal=True).numpy()[:, :-1], c[:, :-1], magnitude=10.0, factor=sum_factor(FF))


def test_attention_weights(rng):
    torch = pytest.importorskip("torch")
    tm, ours = _encoder_layer(torch, {})
    x = rng.standard_normal((L, B, E))
    attn, _, _ = _masks(rng, "bool", L, L, B)
    out, w = ours(x, src_mask=attn, need_weights=True)
    _, tw = tm.self_attn(*(torch.tensor(x),) * 3, attn_mask=torch.tensor(attn), average_attn_weights=False)
    assert w.shape == (B, H, L, L)
    assert_close(w.numpy(), tw.detach().numpy(), **TOL)
    assert_close(out.numpy(), ours(x, src_mask=attn).numpy(), **TOL)
    # stacks: weights of every layer and head; the decoder gives (self, cross) per layer
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(E, H, FF, dropout=0.0, dtype=np.float64), 3)
    y, ws = enc(x, mask=attn, need_weights=True)
    assert len(ws) == 3 and all(a.shape == (B, H, L, L) for a in ws)
    assert_close(ws[0].numpy().sum(-1), np.ones((B, H, L)), magnitude=1.0, factor=sum_factor(L))
    dec = nn.TransformerDecoder(nn.TransformerDecoderLayer(E, H, FF, dropout=0.0, dtype=np.float64), 2)
    mem = rng.standard_normal((S, B, E))
    y, ws = dec(x, mem, tgt_mask=nn.Transformer.generate_square_subsequent_mask(L), need_weights=True)
    assert len(ws) == 2
    sw, cw = ws[1]
    assert sw.shape == (B, H, L, L) and cw.shape == (B, H, L, S)
    assert np.all(np.triu(sw.numpy(), 1) == 0)  # causal self-attention
    assert_close(y.numpy(), dec(x, mem, tgt_mask=nn.Transformer.generate_square_subsequent_mask(L)).numpy(), **TOL)


@pytest.mark.parametrize("backend", ["numpy", "native"])
@pytest.mark.parametrize("norm_first,dropout", [(False, 0.0), (True, 0.0), (False, 0.3)])
def test_training_without_weights_equals_the_copying_path(isa, rng, backend, norm_first, dropout):
    """Training without weights reads the heads in place from the packed projections (self- and
    cross-attention) and writes their gradients in place; with need_weights=True the heads are
    copied apart and merged by separate ops. Outputs and every gradient are the same bits, with
    dropout too (the same seeds drawn in the same order)."""
    enc = nn.TransformerEncoderLayer(E, H, FF, dropout=dropout, batch_first=True, norm_first=norm_first)
    dec = nn.TransformerDecoderLayer(E, H, FF, dropout=dropout, batch_first=True, norm_first=norm_first)
    x = rng.standard_normal((B, L, E)).astype(np.float32)
    mem = rng.standard_normal((B, S, E)).astype(np.float32)
    _, kpm, _ = _masks(rng, "kpm_bool", L, S, B)
    causal = nn.Transformer.generate_square_subsequent_mask(L)
    runs = {"enc": lambda xt, mt, w: enc(xt, src_key_padding_mask=kpm[:, :L], need_weights=w),
            "dec": lambda xt, mt, w: dec(xt, mt, tgt_mask=causal, memory_key_padding_mask=kpm, tgt_is_causal=True,
                                         need_weights=w)}
    for name, run in runs.items():
        module = enc if name == "enc" else dec
        results = []
        for need_weights in (True, False):
            seqblocks.manual_seed(5)
            module.zero_grad()
            with seqblocks.backend(backend):
                xt, mt = seqblocks.tensor(x, requires_grad=True), seqblocks.tensor(mem, requires_grad=True)
                y = run(xt, mt, need_weights)
                y = y[0] if need_weights else y
                y.backward(np.sin(np.arange(y.numpy().size)).reshape(y.shape).astype(np.float32))
            grads = [xt.grad] + ([mt.grad] if name == "dec" else []) + [p.grad for _, p in module.named_parameters()]
            results.append([y.numpy()] + grads)
        for a, b in zip(*results):
            np.testing.assert_array_equal(a, b, err_msg=name)


def test_weights_gradient_flows(rng):
    layer = nn.TransformerEncoderLayer(E, H, FF, dropout=0.0, batch_first=True, dtype=np.float64)
    x = seqblocks.tensor(rng.standard_normal((B, L, E)), requires_grad=True)
    _, w = layer(x, need_weights=True)
    (w * rng.standard_normal(w.shape)).sum().backward()
    assert x.grad is not None and np.abs(x.grad).sum() > 0


def test_dropout_training_and_eval(rng):
    seqblocks.manual_seed(0)
    layer = nn.TransformerEncoderLayer(E, H, FF, dropout=0.5, batch_first=True)
    x = rng.standard_normal((B, L, E)).astype(np.float32)
    a, b = layer(x).numpy(), layer(x).numpy()
    assert not np.array_equal(a, b)
    layer.eval()
    assert np.array_equal(layer(x).numpy(), layer(x).numpy())
    seqblocks.manual_seed(7)
    c = nn.TransformerEncoderLayer(E, H, FF, dropout=0.5, batch_first=True)
    c.load_state_dict(layer.state_dict())
    seqblocks.manual_seed(1)
    d1 = c(x).numpy()
    seqblocks.manual_seed(1)
    with seqblocks.backend("numpy"):
        d2 = c(x).numpy()
    assert_close(d1, d2, magnitude=10.0, factor=sum_factor(FF))  # same dropout masks on both backends


def test_parameter_structure():
    torch = pytest.importorskip("torch")
    t = torch.nn.Transformer(E, H, 2, 3, FF)
    o = nn.Transformer(E, H, 2, 3, FF)
    assert [(n, tuple(p.shape)) for n, p in o.named_parameters()] == \
        [(n, tuple(p.shape)) for n, p in t.named_parameters()]
    td = torch.nn.TransformerDecoderLayer(E, H, FF, bias=False)
    od = nn.TransformerDecoderLayer(E, H, FF, bias=False)
    assert list(od.state_dict()) == list(td.state_dict())
    # Transformer re-initialises every matrix with xavier_uniform: layers differ from each other
    w0 = o.encoder.layers[0].linear1.weight.numpy()
    assert not np.array_equal(w0, o.encoder.layers[1].linear1.weight.numpy())
    assert np.abs(w0).max() <= np.sqrt(6 / (E + FF))


def test_encoder_only_and_decoder_only(rng):
    seqblocks.manual_seed(0)
    bert = nn.EncoderOnlyTransformer(E, H, 2, FF, dropout=0.0)
    x = rng.standard_normal((B, L, E)).astype(np.float32)
    kpm = np.zeros((B, L), bool)
    kpm[0, 3:] = True
    y = bert(x, src_key_padding_mask=kpm)
    assert y.shape == (B, L, E) and np.isfinite(y.numpy()).all()
    # bidirectional: a later token changes earlier outputs; padding does not influence the others
    x2 = x.copy()
    x2[:, -1] += rng.standard_normal(E).astype(np.float32)
    y2 = bert(x2, src_key_padding_mask=kpm).numpy()
    assert not np.allclose(y2[1:, 0], y.numpy()[1:, 0])
    assert_close(y2[0, :3], y.numpy()[0, :3], magnitude=10.0, factor=sum_factor(FF))
    gpt = nn.DecoderOnlyTransformer(E, H, 2, FF, dropout=0.0)
    assert gpt.layers[0].norm_first and gpt.norm is not None
    z = gpt(x).numpy()
    z2 = gpt(x2).numpy()
    assert_close(z2[:, :-1], z[:, :-1], magnitude=10.0, factor=sum_factor(FF))  # causal
    assert not np.allclose(z2[:, -1], z[:, -1])
    # trains: gradients reach every parameter
    out = gpt(seqblocks.tensor(x, requires_grad=True))
    out.sum().backward()
    assert all(p.grad is not None for p in gpt.parameters())


def test_bad_inputs(rng):
    layer = nn.TransformerEncoderLayer(E, H, FF)
    x = rng.standard_normal((L, B, E))
    with pytest.raises(ValueError, match=r"src_mask: expected shape \(5, 5\) or \(12, 5, 5\), got \(5, 4\)"):
        layer(x, src_mask=np.zeros((5, 4), bool))
    with pytest.raises(ValueError, match=r"src_key_padding_mask: expected shape \(3, 5\), got \(5, 3\)"):
        layer(x, src_key_padding_mask=np.zeros((5, 3), bool))
    with pytest.raises(TypeError, match="src_mask: expected a bool or float array, got dtype int64"):
        layer(x, src_mask=np.zeros((5, 5), np.int64))
    with pytest.raises(ValueError, match=r"src: expected feature size d_model=16 as last dim, got shape \(3, 5, 8\)"):
        layer(rng.standard_normal((L, B, 8)))
    with pytest.raises(ValueError, match="src: expected a 3-D"):
        layer(rng.standard_normal((1, L, B, E)))
    dec = nn.TransformerDecoderLayer(E, H, FF)
    with pytest.raises(ValueError, match=r"memory: expected batch size 3 \(tgt's\)"):
        dec(x, rng.standard_normal((S, 2, E)))
    with pytest.raises(ValueError, match=r"memory_mask: expected shape \(5, 7\)"):
        dec(x, rng.standard_normal((S, B, E)), memory_mask=np.zeros((7, 5), bool))
    with pytest.raises(ValueError, match="memory_is_causal: a causal mask needs equal target and source lengths"):
        dec(x, rng.standard_normal((S, B, E)), memory_is_causal=True)
    with pytest.raises(RuntimeError, match="activation should be relu/gelu, not tanh"):
        nn.TransformerEncoderLayer(E, H, activation="tanh")
    with pytest.raises(ValueError, match="embed_dim: must be divisible by num_heads"):
        nn.TransformerEncoderLayer(10, 3)
    t = nn.Transformer(E, H, 1, 1, FF)
    with pytest.raises(ValueError, match="the batch number of src and tgt must be equal"):
        t(rng.standard_normal((S, 2, E)), x)
    with pytest.raises(ValueError, match="the feature number of src and tgt must be equal to d_model=16"):
        t(rng.standard_normal((S, B, 8)), x)
    with pytest.raises(ValueError, match="num_layers: expected a positive int"):
        nn.TransformerEncoder(layer, 0)
