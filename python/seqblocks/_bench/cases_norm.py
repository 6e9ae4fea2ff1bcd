"""Benchmark cases: layer norm, softmax / log-softmax and fused cross-entropy, float32, forward +
backward (PyTorch: the autograd forward and ``backward()``, the same work; numpy: the reference
backend)."""

from __future__ import annotations

import numpy as np

from . import Case, torch_or_none


def _layer_norm(rng, rows, k, torch):
    import seqblocks
    from seqblocks import ops

    x = rng.standard_normal((rows, k)).astype(np.float32)
    w = rng.standard_normal(k).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    dy = rng.standard_normal((rows, k)).astype(np.float32)

    def ours():
        y, ws = ops.layer_norm_forward(x, k, w, b)
        return ops.layer_norm_backward(dy, ws)

    def numpy_impl():
        with seqblocks.backend("numpy"):
            return ours()

    impls = {"seqblocks": ours, "numpy": numpy_impl}
    if torch is not None:
        tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
        tdy = torch.from_numpy(dy)

        def theirs():
            tx.grad = tw.grad = tb.grad = None
            torch.nn.functional.layer_norm(tx, (k,), tw, tb).backward(tdy)

        impls["torch"] = theirs
    return Case("norm", f"layer_norm fwd+bwd float32 ({rows}, {k}) +w +b", 0.0, impls)


def _softmax(rng, rows, n, op, torch):
    import seqblocks
    from seqblocks import ops

    x = (rng.standard_normal((rows, n)) * 3).astype(np.float32)
    dy = rng.standard_normal((rows, n)).astype(np.float32)
    fwd, bwd = getattr(ops, f"{op}_forward"), getattr(ops, f"{op}_backward")

    def ours():
        y, ws = fwd(x, -1)
        return bwd(dy, ws)

    def numpy_impl():
        with seqblocks.backend("numpy"):
            return ours()

    impls = {"seqblocks": ours, "numpy": numpy_impl}
    if torch is not None:
        tx = torch.tensor(x, requires_grad=True)
        tdy = torch.from_numpy(dy)
        tf = getattr(torch, op)

        def theirs():
            tx.grad = None
            tf(tx, -1).backward(tdy)

        impls["torch"] = theirs
    return Case("norm", f"{op} fwd+bwd float32 ({rows}, {n}) dim=-1", 0.0, impls)


def _cross_entropy(rng, rows, classes, torch, with_numpy, smoothing=0.0):
    import seqblocks
    from seqblocks import ops

    x = rng.standard_normal((rows, classes)).astype(np.float32)
    t = rng.integers(0, classes, rows)

    def ours():
        loss, ws = ops.cross_entropy_forward(x, t, label_smoothing=smoothing)
        return ops.cross_entropy_backward(np.float32(1.0), ws)

    def numpy_impl():
        with seqblocks.backend("numpy"):
            return ours()

    impls = {"seqblocks": ours}
    if with_numpy:
        impls["numpy"] = numpy_impl
    if torch is not None:
        tx = torch.tensor(x, requires_grad=True)
        tt = torch.from_numpy(t)

        def theirs():
            tx.grad = None
            torch.nn.functional.cross_entropy(tx, tt, label_smoothing=smoothing).backward()

        impls["torch"] = theirs
    extra = f" smoothing={smoothing}" if smoothing else ""
    return Case("norm", f"cross_entropy fwd+bwd float32 ({rows}, {classes}) mean{extra}", 0.0, impls)


def cases(quick: bool) -> list[Case]:
    torch = torch_or_none()
    rng = np.random.default_rng(0)
    rows = 1024 if quick else 4096
    out = [
        _layer_norm(rng, rows, 512, torch),
        _softmax(rng, rows, 512, "softmax", torch),
        _softmax(rng, rows, 512, "log_softmax", torch),
        _cross_entropy(rng, 512 if quick else 4096, 8000, torch, with_numpy=quick),
    ]
    if not quick:
        out.append(_layer_norm(rng, 64, 512, torch))
        out.append(_softmax(rng, 4096, 33, "softmax", torch))
        out.append(_cross_entropy(rng, 4096, 8000, torch, with_numpy=False, smoothing=0.1))
    return out
