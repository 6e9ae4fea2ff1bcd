"""Benchmark cases: RNN / LSTM / GRU layers, float32, seqblocks modules vs ``torch.nn`` with the same
weights. Forward cases run in inference mode on both sides (seqblocks ``no_grad``, torch ``eval()``
+ ``no_grad()``, which takes its oneDNN/fused path); forward+backward cases run one autograd
forward and ``backward()`` of ``output.sum() + h_n.sum()``. The mixed-lengths case runs the same
shape with lengths drawn from [1, T] (torch: a PackedSequence); compare its seqblocks time with the
fully padded case of the same shape. The cell cases run one inference step, as a decoding loop
calls them."""

from __future__ import annotations

import numpy as np

from . import Case, torch_or_none

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _case(cls, T, B, I, H, train, torch, lengths=False, label="", numpy=False):
    import seqblocks
    from seqblocks import nn

    rng = np.random.default_rng(0)
    seqblocks.manual_seed(0)
    m = getattr(nn, cls)(I, H)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    lens = np.sort(rng.integers(1, T + 1, B))[::-1].copy() if lengths else None
    if lens is not None:
        lens[0] = T
    flops = 2.0 * T * B * GATES[cls] * H * (I + H) * (3 if train else 1)

    def ours():
        if train:
            xt = seqblocks.tensor(x, requires_grad=True)
            out, h = m(xt, lengths=lens)
            h = h[0] if cls == "LSTM" else h
            (out.sum() + h.sum()).backward()
        else:
            with seqblocks.no_grad():
                m(x, lengths=lens)

    impls = {"seqblocks": ours}
    if numpy:  # the float64 NumPy reference: only at the quick sizes (a Python loop over steps)
        def numpy_impl():
            with seqblocks.backend("numpy"):
                ours()

        impls["numpy"] = numpy_impl
    if torch is not None:
        tm = getattr(torch.nn, cls)(I, H)
        tm.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in m.state_dict().items()})
        tx = torch.from_numpy(x)
        if not train:
            tm.eval()

        def theirs():
            inp = tx.clone().requires_grad_(True) if train else tx
            if lens is not None:
                inp = torch.nn.utils.rnn.pack_padded_sequence(inp, torch.from_numpy(lens))
            if train:
                out, h = tm(inp)
                out = out.data if lens is not None else out
                h = h[0] if cls == "LSTM" else h
                (out.sum() + h.sum()).backward()
            else:
                with torch.no_grad():
                    tm(inp)

        impls["torch"] = theirs
    what = "fwd+bwd" if train else "fwd"
    return Case("rnn", f"{cls} {what} T={T} B={B} I=H={H}{label}", flops, impls)


def _cell_case(cls, B, H, torch):
    """One step of a cell in inference mode (a decoding loop's call), the state fed back."""
    import seqblocks
    from seqblocks import nn

    rng = np.random.default_rng(0)
    seqblocks.manual_seed(0)
    m = getattr(nn, cls)(H, H)
    x = rng.standard_normal((B, H)).astype(np.float32)
    h = rng.standard_normal((B, H)).astype(np.float32)
    hx = (h, h) if cls == "LSTMCell" else h
    flops = 2.0 * B * GATES[cls[:-4]] * H * 2 * H

    def ours():
        with seqblocks.no_grad():
            m(x, hx)

    impls = {"seqblocks": ours}
    if torch is not None:
        tm = getattr(torch.nn, cls)(H, H)
        tm.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in m.state_dict().items()})
        tx, th = torch.from_numpy(x), torch.from_numpy(h)
        thx = (th, th) if cls == "LSTMCell" else th

        def theirs():
            with torch.no_grad():
                tm(tx, thx)

        impls["torch"] = theirs
    return Case("rnn", f"{cls} step B={B} I=H={H}", flops, impls)


def cases(quick: bool) -> list[Case]:
    torch = torch_or_none()
    if quick:
        return [_case("LSTM", 16, 8, 64, 64, False, torch, numpy=True),
                _case("LSTM", 16, 8, 64, 64, True, torch, numpy=True),
                _case("GRU", 16, 8, 64, 64, True, torch, numpy=True),
                _case("RNN", 16, 8, 64, 64, True, torch, numpy=True)]
    return [
        _case("LSTM", 64, 32, 256, 256, False, torch),
        _case("LSTM", 128, 1, 128, 128, False, torch),
        _case("LSTM", 64, 32, 256, 256, True, torch),
        _case("LSTM", 64, 64, 512, 512, True, torch),
        _case("GRU", 64, 32, 256, 256, True, torch),
        _case("RNN", 64, 32, 256, 256, True, torch),
        _case("LSTM", 64, 32, 256, 256, True, torch, lengths=True, label=" mixed lengths"),
        _cell_case("LSTMCell", 1, 1024, torch),
        _cell_case("GRUCell", 8, 512, torch),
    ]
