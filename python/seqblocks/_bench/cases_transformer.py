"""Benchmark cases: Transformer layers and cached decoding, float32, batch_first, dropout 0.

- TransformerEncoderLayer (B=8, L=128, d=512, 8 heads, ff=2048): forward + backward (training
  mode), and inference (``eval()`` + ``no_grad``: PyTorch takes its fused fast path there);
- TransformerDecoderLayer, same sizes, memory 128, causal target (``tgt_is_causal=True`` on both
  sides), forward + backward;
- one cached decoding step of a 6-layer d=512 decoder at position 128 (B=8, memory 128):
  seqblocks ``decode_step`` with a cache of 128 positions vs ``torch.nn.TransformerDecoder``
  recomputing the 129-position prefix (eval + no_grad), the way an uncached torch loop decodes.
FLOPs: the matrix products (2 per multiply-add), attention counted as 4 L S d (halved when causal),
backward 2x the forward's products."""

from __future__ import annotations

import numpy as np

from . import Case, torch_or_none

D, HEADS, FF = 512, 8, 2048


def _layer_flops(b, l, s, cross, causal):
    proj = 2.0 * b * l * D * D * 4 + 2.0 * b * l * D * FF * 2
    attn = 4.0 * b * l * l * D * (0.5 if causal else 1.0)
    if cross:
        proj += 2.0 * b * l * D * D * 2 + 2.0 * b * s * D * D * 2
        attn += 4.0 * b * l * s * D
    return proj + attn


def _encoder(rng, b, l, backward, torch):
    import seqblocks
    from seqblocks import nn

    x = rng.standard_normal((b, l, D)).astype(np.float32)
    dy = rng.standard_normal((b, l, D)).astype(np.float32)
    ours_m = nn.TransformerEncoderLayer(D, HEADS, FF, dropout=0.0, batch_first=True)
    if not backward:
        ours_m.eval()

    def ours():
        if not backward:
            with seqblocks.no_grad():
                return ours_m(x)
        xt = seqblocks.tensor(x, requires_grad=True)
        ours_m.zero_grad()  # as torch's closure does: fresh gradients, nothing accumulated
        ours_m(xt).backward(dy)

    impls = {"seqblocks": ours}
    if torch is not None:
        tm = torch.nn.TransformerEncoderLayer(D, HEADS, FF, dropout=0.0, batch_first=True)
        ours_m.load_state_dict(tm.state_dict())
        tx, tdy = torch.from_numpy(x), torch.from_numpy(dy)
        if not backward:
            tm.eval()

        def theirs():
            if not backward:
                with torch.no_grad():
                    return tm(tx)
            xt = tx.clone().requires_grad_(True)
            tm.zero_grad()
            tm(xt).backward(tdy)

        impls["torch"] = theirs
    flops = _layer_flops(b, l, l, False, False) * (3.0 if backward else 1.0)
    what = "fwd+bwd" if backward else "inference (eval, no_grad)"
    return Case("transformer", f"TransformerEncoderLayer {what} float32 B={b} L={l} d={D} heads={HEADS} ff={FF}",
                flops, impls)


def _decoder(rng, b, l, s, torch):
    import seqblocks
    from seqblocks import nn

    x = rng.standard_normal((b, l, D)).astype(np.float32)
    mem = rng.standard_normal((b, s, D)).astype(np.float32)
    dy = rng.standard_normal((b, l, D)).astype(np.float32)
    mask = nn.Transformer.generate_square_subsequent_mask(l).numpy()
    ours_m = nn.TransformerDecoderLayer(D, HEADS, FF, dropout=0.0, batch_first=True)

    def ours():
        xt = seqblocks.tensor(x, requires_grad=True)
        mt = seqblocks.tensor(mem, requires_grad=True)
        ours_m.zero_grad()  # as torch's closure does
        ours_m(xt, mt, tgt_mask=mask, tgt_is_causal=True).backward(dy)

    impls = {"seqblocks": ours}
    if torch is not None:
        tm = torch.nn.TransformerDecoderLayer(D, HEADS, FF, dropout=0.0, batch_first=True)
        ours_m.load_state_dict(tm.state_dict())
        tx, tmem, tdy, tmask = (torch.from_numpy(a) for a in (x, mem, dy, mask))

        def theirs():
            xt = tx.clone().requires_grad_(True)
            mt = tmem.clone().requires_grad_(True)
            tm.zero_grad()
            tm(xt, mt, tgt_mask=tmask, tgt_is_causal=True).backward(tdy)

        impls["torch"] = theirs
    flops = _layer_flops(b, l, s, True, True) * 3.0
    return Case("transformer", f"TransformerDecoderLayer fwd+bwd float32 B={b} L={l} S={s} d={D} heads={HEADS} "
                f"ff={FF}", flops, impls)


def _decode_step(rng, b, pos, s, layers, torch):
    import seqblocks
    from seqblocks import nn

    seqblocks.manual_seed(0)
    dec = nn.TransformerDecoder(nn.TransformerDecoderLayer(D, HEADS, FF, dropout=0.0, batch_first=True), layers,
                                norm=nn.LayerNorm(D)).eval()
    prefix = rng.standard_normal((b, pos + 1, D)).astype(np.float32)
    mem = rng.standard_normal((b, s, D)).astype(np.float32)
    _, cache = dec.decode_step(prefix[:, :pos], mem)
    saved = [(lc.k, lc.v) for lc in cache.layers]
    step = prefix[:, pos:pos + 1]

    def ours():
        for lc, (k, v) in zip(cache.layers, saved):  # back to position `pos` (arrays are never modified)
            lc.k, lc.v = k, v
        return dec.decode_step(step, None, cache)

    impls = {"seqblocks": ours}
    if torch is not None:
        tdec = torch.nn.TransformerDecoder(torch.nn.TransformerDecoderLayer(D, HEADS, FF, dropout=0.0,
                                                                            batch_first=True),
                                           layers, norm=torch.nn.LayerNorm(D)).eval()
        dec.load_state_dict(tdec.state_dict())
        tp, tmem = torch.from_numpy(prefix), torch.from_numpy(mem)
        tmask = torch.nn.Transformer.generate_square_subsequent_mask(pos + 1)

        def theirs():
            with torch.no_grad():
                return tdec(tp, tmem, tgt_mask=tmask, tgt_is_causal=True)[:, -1]

        impls["torch"] = theirs
    # the step's own work: the memory's cross-attention K/V projection is cached, not recomputed
    flops = (_layer_flops(b, 1, s, True, False) - 2.0 * b * s * D * D * 2) * layers
    return Case("transformer", f"TransformerDecoder cached step float32 {layers} layers B={b} pos={pos} S={s} d={D} "
                f"(torch recomputes the prefix)", flops, impls)


def _add_layer_norm(rng, rows, k, torch):
    """The fused residual add + layer norm pair, forward + backward (with a gradient into s)."""
    import seqblocks
    from seqblocks import ops

    x, r, dy, ds = (rng.standard_normal((rows, k)).astype(np.float32) for _ in range(4))
    w, b = np.ones(k, np.float32), np.zeros(k, np.float32)

    def ours():
        (y, s), ws = ops.add_layer_norm_forward(x, r, k, w, b)
        return ops.add_layer_norm_backward((dy, ds), ws)

    def numpy_impl():
        with seqblocks.backend("numpy"):
            return ours()

    impls = {"seqblocks": ours, "numpy": numpy_impl}
    if torch is not None:
        tx, tr, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, r, w, b))
        tdy, tds = torch.from_numpy(dy), torch.from_numpy(ds)

        def theirs():
            for t in (tx, tr, tw, tb):
                t.grad = None
            s = tx + tr
            y = torch.nn.functional.layer_norm(s, (k,), tw, tb)
            torch.autograd.backward([y, s], [tdy, tds])

        impls["torch"] = theirs
    return Case("transformer", f"add_layer_norm fwd+bwd float32 rows={rows} k={k}", 0.0, impls)


def _linear_act(rng, rows, d_in, d_out, act, fused, backward, torch):
    """The first half of a feed-forward block, act(x W^T + b): the fused op (one GEMM with the
    activation as its epilogue) or linear then the activation op (seqblocks' unfused path), against
    torch's F.linear then the activation (aten kernels, no autograd tape)."""
    from seqblocks import ops

    x = rng.standard_normal((rows, d_in)).astype(np.float32)
    w = (rng.standard_normal((d_out, d_in)) / np.sqrt(d_in)).astype(np.float32)
    b = rng.standard_normal(d_out).astype(np.float32)
    dy = rng.standard_normal((rows, d_out)).astype(np.float32)
    approximate = "none" if act == "gelu" else "tanh"

    def ours():
        if fused:
            y, ws = ops.linear_act_forward(x, w, b, act, needs_grad=backward)
            return ops.linear_act_backward(dy, ws) if backward else y
        z, lin_ws = ops.linear_forward(x, w, b, needs_grad=backward)
        y, act_ws = ops.relu_forward(z, needs_grad=backward) if act == "relu" else \
            ops.gelu_forward(z, approximate, needs_grad=backward)
        if not backward:
            return y
        (dz,) = (ops.relu_backward if act == "relu" else ops.gelu_backward)(dy, act_ws)
        return ops.linear_backward(dz, lin_ws)

    impls = {"seqblocks": ours}
    if torch is not None:
        tx, tw, tb, tdy = (torch.from_numpy(a) for a in (x, w, b, dy))
        aten = torch.ops.aten

        def theirs():
            with torch.no_grad():
                z = torch.nn.functional.linear(tx, tw, tb)
                y = torch.relu(z) if act == "relu" else torch.nn.functional.gelu(z, approximate=approximate)
                if not backward:
                    return y
                dz = aten.threshold_backward(tdy, y, 0) if act == "relu" else \
                    aten.gelu_backward(tdy, z, approximate=approximate)
                return dz @ tw, dz.t() @ tx, dz.sum(0)

        impls["torch"] = theirs
    flops = 2.0 * rows * d_in * d_out * (3.0 if backward else 1.0)
    what = ("fused" if fused else "unfused") + (" fwd+bwd" if backward else " fwd")
    return Case("transformer", f"linear+{act} {what} float32 rows={rows} {d_in}->{d_out}", flops, impls)


def _feed_forward(rng, rows, d, ff, act, fused, torch):
    """A whole feed-forward block's fwd+bwd, act(x W1^T + b1) W2^T + b2: the fused pair (act' in
    the epilogue of the dh GEMM) or the linear + activation pair then the linear pair, against
    torch's aten ops (no autograd tape)."""
    from seqblocks import ops

    x = rng.standard_normal((rows, d)).astype(np.float32)
    w1 = (rng.standard_normal((ff, d)) / np.sqrt(d)).astype(np.float32)
    w2 = (rng.standard_normal((d, ff)) / np.sqrt(ff)).astype(np.float32)
    b1, b2 = rng.standard_normal(ff).astype(np.float32), rng.standard_normal(d).astype(np.float32)
    dy = rng.standard_normal((rows, d)).astype(np.float32)
    approximate = "none" if act == "gelu" else "tanh"

    def ours():
        if fused:
            _, ws = ops.feed_forward_forward(x, w1, b1, w2, b2, act)
            return ops.feed_forward_backward(dy, ws)
        h, ws1 = ops.linear_act_forward(x, w1, b1, act)
        _, ws2 = ops.linear_forward(h, w2, b2)
        dh, dw2, db2 = ops.linear_backward(dy, ws2)
        return ops.linear_act_backward(dh, ws1) + (dw2, db2)

    impls = {"seqblocks": ours}
    if torch is not None:
        tx, tw1, tb1, tw2, tb2, tdy = (torch.from_numpy(a) for a in (x, w1, b1, w2, b2, dy))
        aten = torch.ops.aten

        def theirs():
            with torch.no_grad():
                z = torch.nn.functional.linear(tx, tw1, tb1)
                h = torch.relu(z) if act == "relu" else torch.nn.functional.gelu(z, approximate=approximate)
                torch.nn.functional.linear(h, tw2, tb2)
                dh = tdy @ tw2
                dz = aten.threshold_backward(dh, h, 0) if act == "relu" else \
                    aten.gelu_backward(dh, z, approximate=approximate)
                return dz @ tw1, dz.t() @ tx, dz.sum(0), tdy.t() @ h, tdy.sum(0)

        impls["torch"] = theirs
    flops = 2.0 * rows * d * ff * 2 * 3.0
    what = "fused" if fused else "unfused"
    return Case("transformer", f"feed-forward {act} {what} fwd+bwd float32 rows={rows} {d}->{ff}->{d}", flops, impls)


def cases(quick: bool) -> list[Case]:
    torch = torch_or_none()
    rng = np.random.default_rng(0)
    if quick:
        return [_encoder(rng, 2, 32, True, torch), _encoder(rng, 2, 32, False, torch),
                _decoder(rng, 2, 32, 32, torch), _decode_step(rng, 2, 32, 32, 2, torch),
                _add_layer_norm(rng, 256, 129, torch), _linear_act(rng, 64, 32, 96, "gelu", True, True, torch),
                _feed_forward(rng, 64, 32, 96, "gelu", True, torch)]
    return [_encoder(rng, 8, 128, True, torch), _encoder(rng, 8, 128, False, torch),
            _decoder(rng, 8, 128, 128, torch), _decode_step(rng, 8, 128, 128, 6, torch),
            _add_layer_norm(rng, 1024, 512, torch)] + [
        _linear_act(rng, 1024, D, FF, act, fused, backward, torch)
        for act in ("relu", "gelu") for backward in (False, True) for fused in (True, False)] + [
        _feed_forward(rng, 1024, D, FF, act, fused, torch) for act in ("relu", "gelu") for fused in (True, False)]
