"""Cached incremental decoding (``TransformerDecoder.decode_step``, ``DecoderOnlyTransformer.decode_step``)
equals a full causal recompute of the prefix; cache reuse, chunks, beam reorder, bad input."""

import numpy as np
import pytest

import seqblocks
from seqblocks import nn
from seqblocks.testing import assert_close, sum_factor

E, H, FF, B, T, S = 16, 4, 32, 3, 6, 5
TOL = {"factor": 16 * sum_factor(FF), "magnitude": 10.0}  # float64, a few layers of <= FF-term sums


def _decoder(norm_first, batch_first, final_norm=True):
    seqblocks.manual_seed(0)
    layer = nn.TransformerDecoderLayer(E, H, FF, dropout=0.1, batch_first=batch_first, norm_first=norm_first,
                                       dtype=np.float64)
    dec = nn.TransformerDecoder(layer, 3, norm=nn.LayerNorm(E, dtype=np.float64) if final_norm else None)
    for i, p in enumerate(dec.parameters()):  # distinct layers, non-zero biases
        p.data[...] = np.random.default_rng(i).standard_normal(p.shape) * (0.3 if p.ndim > 1 else 0.5) + \
            (1.0 if p.ndim == 1 and p.size == E else 0.0)
    return dec.eval()


def _step(x, t0, t1, batch_first):
    return x[:, t0:t1] if batch_first else x[t0:t1]


@pytest.mark.parametrize("backend", ["numpy", "native"])
@pytest.mark.parametrize("norm_first,batch_first", [(False, False), (True, True)])
def test_decode_step_equals_full_recompute(rng, backend, norm_first, batch_first):
    dec = _decoder(norm_first, batch_first)
    shape = (lambda n: (B, n, E)) if batch_first else (lambda n: (n, B, E))
    tgt, mem = rng.standard_normal(shape(T)), rng.standard_normal(shape(S))
    mkpm = np.zeros((B, S), bool)
    mkpm[1, 3:] = True
    with seqblocks.backend(backend):
        full = dec(tgt, mem, tgt_mask=nn.Transformer.generate_square_subsequent_mask(T, dtype=np.float64),
                   memory_key_padding_mask=mkpm).numpy()
        cache = dec.init_cache()
        outs = []
        for t in range(T):
            y, cache = dec.decode_step(_step(tgt, t, t + 1, batch_first), mem if t == 0 else None, cache,
                                       memory_key_padding_mask=mkpm)
            outs.append(y.numpy())
            assert len(cache) == t + 1
        steps = np.concatenate(outs, axis=1 if batch_first else 0)
    assert_close(steps, full, **TOL)
    # the cross-attention keys/values were computed once, and have the memory's length
    assert cache.layers[0].cross_k.shape == (B, H, S, E // H)
    assert cache.layers[2].k.shape == (B, H, T, E // H)


def test_decode_chunks_and_prefill(rng):
    """A prefix fed at once, then chunks of 2, then single steps: the same outputs."""
    dec = _decoder(True, True)
    tgt, mem = rng.standard_normal((B, T, E)), rng.standard_normal((B, S, E))
    full = dec(tgt, mem, tgt_is_causal=True).numpy()
    y0, cache = dec.decode_step(tgt[:, :3], mem)
    y1, cache = dec.decode_step(tgt[:, 3:5], mem, cache)
    y2, cache = dec.decode_step(tgt[:, 5:], None, cache)
    assert_close(np.concatenate([y0.numpy(), y1.numpy(), y2.numpy()], 1), full, **TOL)


def test_decode_step_weights(rng):
    dec = _decoder(False, True)
    tgt, mem = rng.standard_normal((B, T, E)), rng.standard_normal((B, S, E))
    _, full_w = dec(tgt, mem, tgt_is_causal=True, need_weights=True)
    _, cache = dec.decode_step(tgt[:, :2], mem)
    y, cache, ws = dec.decode_step(tgt[:, 2:4], None, cache, need_weights=True)
    assert len(ws) == 3
    for (sw, cw), (fsw, fcw) in zip(ws, full_w):
        assert sw.shape == (B, H, 2, 4) and cw.shape == (B, H, 2, S)
        assert_close(sw.numpy(), fsw.numpy()[:, :, 2:4, :4], **TOL)
        assert_close(cw.numpy(), fcw.numpy()[:, :, 2:4], **TOL)


def test_decode_step_records_no_graph(rng):
    dec = _decoder(False, True)
    x = seqblocks.tensor(rng.standard_normal((B, 1, E)), requires_grad=True)
    y, _ = dec.decode_step(x, rng.standard_normal((B, S, E)))
    assert not y.requires_grad


def test_reorder_for_beam_search(rng):
    dec = _decoder(False, True)
    tgt, mem = rng.standard_normal((B, T, E)), rng.standard_normal((B, S, E))
    _, cache = dec.decode_step(tgt[:, :4], mem)
    index = np.array([2, 0, 0])
    cache.reorder(index)
    y, cache = dec.decode_step(tgt[index, 4:5], None, cache)
    full = dec(tgt[index, :5], mem[index], tgt_is_causal=True).numpy()
    assert_close(y.numpy(), full[:, 4:5], **TOL)
    with pytest.raises(IndexError, match=r"index: expected values in \[0, 3\)"):
        cache.reorder(np.array([3]))
    with pytest.raises(TypeError, match="index: expected a 1-D integer array"):
        cache.reorder(np.array([0.5]))


def test_decoder_only_decode_step(rng):
    seqblocks.manual_seed(1)
    gpt = nn.DecoderOnlyTransformer(E, H, 2, FF, dropout=0.0, dtype=np.float64)
    x = rng.standard_normal((B, T, E))
    full = gpt(x).numpy()
    cache = None
    outs = []
    for t in range(T):
        y, cache = gpt.decode_step(x[:, t:t + 1], cache)
        outs.append(y.numpy())
    assert_close(np.concatenate(outs, 1), full, **TOL)
    y, _ = gpt.decode_step(x[:, :4])  # a prompt at once
    assert_close(y.numpy(), full[:, :4], **TOL)


def test_positional_offset_with_cache(rng):
    pe = nn.SinusoidalPositionalEncoding(E, max_len=32, batch_first=True, dtype=np.float64)
    dec = _decoder(True, True)
    tgt, mem = rng.standard_normal((B, T, E)), rng.standard_normal((B, S, E))
    full = dec(pe(tgt), mem, tgt_is_causal=True).numpy()
    cache = dec.init_cache()
    outs = []
    for t in range(T):
        y, cache = dec.decode_step(pe(tgt[:, t:t + 1], offset=len(cache)), mem, cache)
        outs.append(y.numpy())
    assert_close(np.concatenate(outs, 1), full, **TOL)


def test_bad_decode_input(rng):
    dec = _decoder(False, True)
    mem = rng.standard_normal((B, S, E))
    with pytest.raises(ValueError, match="memory: required on the first decoding step"):
        dec.decode_step(rng.standard_normal((B, 1, E)), None)
    _, cache = dec.decode_step(rng.standard_normal((B, 1, E)), mem)
    with pytest.raises(ValueError, match=r"tgt: expected batch size 3 \(the cache's\)"):
        dec.decode_step(rng.standard_normal((2, 1, E)), None, cache)
    with pytest.raises(TypeError, match="cache: expected a KVCache of 3 layers"):
        dec.decode_step(rng.standard_normal((B, 1, E)), mem, nn.KVCache(2))
    with pytest.raises(ValueError, match="tgt: expected feature size d_model=16"):
        dec.decode_step(rng.standard_normal((B, 1, 8)), None, cache)
