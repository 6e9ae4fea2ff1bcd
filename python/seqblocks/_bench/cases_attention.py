"""Benchmark cases: scaled dot-product attention (forward, and forward + backward; causal and not)
and MultiheadAttention forward + backward, float32. PyTorch runs its own fused CPU kernel
(``F.scaled_dot_product_attention``; MultiheadAttention with ``need_weights=False`` so that it
also skips the weights); numpy is the reference backend (materialises L x S, small sizes only).
FLOPs: 4 B H L S E per SDPA forward (two products; halved when causal), 2.5x that forward +
backward (five products, the score product recomputed)."""

from __future__ import annotations

import numpy as np

from . import Case, torch_or_none


def _sdpa(rng, b, h, l, s, e, causal, backward, torch, with_numpy):
    import seqblocks
    from seqblocks import ops

    q, k, v = (rng.standard_normal((b, h, n, e)).astype(np.float32) for n in (l, s, s))
    dout = rng.standard_normal((b, h, l, e)).astype(np.float32)

    def ours():
        if not backward:
            return ops.sdpa_forward(q, k, v, is_causal=causal, needs_grad=False)
        out, ws = ops.sdpa_forward(q, k, v, is_causal=causal)
        return ops.sdpa_backward(dout, ws)

    def numpy_impl():
        with seqblocks.backend("numpy"):
            return ours()

    impls = {"seqblocks": ours}
    if with_numpy:
        impls["numpy"] = numpy_impl
    if torch is not None:
        tq, tk, tv = (torch.tensor(a, requires_grad=backward) for a in (q, k, v))
        tdout = torch.from_numpy(dout)
        sdpa = torch.nn.functional.scaled_dot_product_attention

        def theirs():
            if not backward:
                with torch.no_grad():
                    return sdpa(tq, tk, tv, is_causal=causal)
            tq.grad = tk.grad = tv.grad = None
            sdpa(tq, tk, tv, is_causal=causal).backward(tdout)

        impls["torch"] = theirs
    flops = 4.0 * b * h * l * s * e * (0.5 if causal else 1.0) * (2.5 if backward else 1.0)
    what = "fwd+bwd" if backward else "fwd"
    return Case("attention", f"sdpa {what} float32 B={b} H={h} L={l} S={s} E={e}{' causal' if causal else ''}",
                flops, impls)


def _mha(rng, b, l, e, heads, torch):
    import seqblocks
    from seqblocks import nn

    x = rng.standard_normal((b, l, e)).astype(np.float32)
    dy = rng.standard_normal((b, l, e)).astype(np.float32)
    ours_m = nn.MultiheadAttention(e, heads, batch_first=True)

    def ours():
        xt = seqblocks.tensor(x, requires_grad=True)
        ours_m.zero_grad()  # as torch's closure does: fresh gradients, nothing accumulated
        out, _ = ours_m(xt, xt, xt, need_weights=False)
        out.backward(dy)

    impls = {"seqblocks": ours}
    if torch is not None:
        tm = torch.nn.MultiheadAttention(e, heads, batch_first=True)
        ours_m.load_state_dict(tm.state_dict())
        tdy = torch.from_numpy(dy)

        def theirs():
            xt = torch.tensor(x, requires_grad=True)
            tm.zero_grad()
            out, _ = tm(xt, xt, xt, need_weights=False)
            out.backward(tdy)

        impls["torch"] = theirs
    flops = 2.0 * b * l * e * e * 4 * 3 + 4.0 * b * l * l * e * 2.5
    return Case("attention", f"MultiheadAttention fwd+bwd float32 B={b} L={l} E={e} heads={heads}", flops, impls)


def _additive(rng, b, lq, s, h, torch, with_numpy):
    import seqblocks
    from seqblocks import ops

    qp, kp = rng.standard_normal((b, lq, h)).astype(np.float32), rng.standard_normal((b, s, h)).astype(np.float32)
    w = rng.standard_normal(h).astype(np.float32)
    ds = rng.standard_normal((b, lq, s)).astype(np.float32)

    def ours():
        scores, ws = ops.additive_scores_forward(qp, kp, w)
        return ops.additive_scores_backward(ds, ws)

    def numpy_impl():
        with seqblocks.backend("numpy"):
            return ours()

    impls = {"seqblocks": ours}
    if with_numpy:
        impls["numpy"] = numpy_impl
    if torch is not None:
        tq, tk, tw = (torch.tensor(a, requires_grad=True) for a in (qp, kp, w))
        tds = torch.from_numpy(ds)

        def theirs():
            tq.grad = tk.grad = tw.grad = None
            (torch.tanh(tq[:, :, None, :] + tk[:, None, :, :]) @ tw).backward(tds)

        impls["torch"] = theirs
    return Case("attention", f"additive scores fwd+bwd float32 B={b} Lq={lq} S={s} H={h}", 0.0, impls)


def _split_heads(rng, b, l, heads, d, torch):
    """The q/k/v head split of a packed (B, L, 3 H D) projection into three (B, H, L, D) arrays:
    seqblocks' native row copies (``_core.strided_copy``) vs NumPy's ``copyto`` of the transposed
    views vs torch's ``permute(...).contiguous()``."""
    from seqblocks import _core

    x = rng.standard_normal((b, l, 3 * heads * d)).astype(np.float32)
    parts = x.reshape(b, l, 3, heads, d)
    out = np.empty((3, b, heads, l, d), np.float32)

    def ours():
        for i in range(3):
            _core.strided_copy(out[i], parts[:, :, i].transpose(0, 2, 1, 3))

    def numpy_impl():
        for i in range(3):
            np.copyto(out[i], parts[:, :, i].transpose(0, 2, 1, 3))

    impls = {"seqblocks": ours, "numpy": numpy_impl}
    if torch is not None:
        tparts = torch.from_numpy(parts)
        impls["torch"] = lambda: tparts.permute(2, 0, 3, 1, 4).contiguous()
    return Case("attention", f"head split copy float32 B={b} L={l} 3x{heads}x{d}", 0.0, impls)


def cases(quick: bool) -> list[Case]:
    torch = torch_or_none()
    rng = np.random.default_rng(0)
    if quick:
        return [_sdpa(rng, 2, 4, 128, 128, 64, False, False, torch, True),
                _sdpa(rng, 2, 4, 128, 128, 64, True, True, torch, True),
                _mha(rng, 4, 64, 256, 8, torch),
                _additive(rng, 4, 16, 32, 64, torch, True), _split_heads(rng, 2, 32, 4, 16, torch)]
    out = []
    for causal in (False, True):
        out.append(_sdpa(rng, 4, 8, 512, 512, 64, causal, False, torch, False))
        out.append(_sdpa(rng, 4, 8, 512, 512, 64, causal, True, torch, False))
    out.append(_mha(rng, 8, 128, 512, 8, torch))
    out.append(_additive(rng, 16, 32, 64, 256, torch, False))
    out.append(_split_heads(rng, 8, 128, 8, 64, torch))
    return out
