"""Benchmark cases: ops pairs forward + backward and optimizer steps (float32).

The linear pair at a small size (its GEMM is being replaced; the size grows with it), activations
on 4096 x 512 (forward + backward, and backward alone), dropout and the residual add with a bias-shaped b on
the same size, an embedding of 4096 tokens into a 32000 x 512 table (forward + backward), and one
Adam / SGD-momentum step on 10M parameters. PyTorch runs its own kernels without the autograd tape
(the aten backward functions and the fused CPU Adam), so the comparison is kernel against kernel.
"""

from __future__ import annotations

import numpy as np

from . import Case, torch_or_none


def _activation_cases(rows, cols, torch):
    from seqblocks import ops

    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    dy = rng.standard_normal((rows, cols)).astype(np.float32)
    if torch is not None:
        tx, tdy = torch.from_numpy(x), torch.from_numpy(dy)
        aten = torch.ops.aten
    table = {
        "relu": (lambda: ops.relu_backward(dy, ops.relu_forward(x)[1]),
                 lambda: (np.maximum(x, 0), np.where(x > 0, dy, 0)),
                 lambda: aten.threshold_backward(tdy, torch.relu(tx), 0)),
        "gelu (erf)": (lambda: ops.gelu_backward(dy, ops.gelu_forward(x)[1]), None,
                       lambda: (torch.nn.functional.gelu(tx), aten.gelu_backward(tdy, tx))),
        "gelu (tanh)": (lambda: ops.gelu_backward(dy, ops.gelu_forward(x, approximate="tanh")[1]), None,
                        lambda: (torch.nn.functional.gelu(tx, approximate="tanh"),
                                 aten.gelu_backward(tdy, tx, approximate="tanh"))),
        "tanh": (lambda: ops.tanh_backward(dy, ops.tanh_forward(x)[1]),
                 lambda: dy * (1 - np.tanh(x) ** 2),
                 lambda: aten.tanh_backward(tdy, torch.tanh(tx))),
        "sigmoid": (lambda: ops.sigmoid_backward(dy, ops.sigmoid_forward(x)[1]),
                    lambda: (lambda y: dy * y * (1 - y))(1 / (1 + np.exp(-x))),
                    lambda: aten.sigmoid_backward(tdy, torch.sigmoid(tx))),
    }
    cases = []
    for name, (ours, numpy_impl, torch_impl) in table.items():
        impls = {"seqblocks": ours}
        if numpy_impl is not None:
            impls["numpy"] = numpy_impl
        if torch is not None:
            impls["torch"] = torch_impl
        cases.append(Case("nnops", f"{name} fwd+bwd {rows}x{cols}", 0.0, impls))
    # Backward alone (the fused kernels of cpp/ops/activation_isa.cpp; gelu (erf) also evaluates
    # gelu(x) with the math kernel inside its backward).
    saved = {name: fwd(x)[1] for name, fwd in (("relu", ops.relu_forward), ("tanh", ops.tanh_forward),
                                               ("sigmoid", ops.sigmoid_forward), ("gelu (erf)", ops.gelu_forward))}
    saved["gelu (tanh)"] = ops.gelu_forward(x, approximate="tanh")[1]
    backward = {"relu": ops.relu_backward, "tanh": ops.tanh_backward, "sigmoid": ops.sigmoid_backward,
                "gelu (erf)": ops.gelu_backward, "gelu (tanh)": ops.gelu_backward}
    if torch is not None:
        ty = {"relu": torch.relu(tx), "tanh": torch.tanh(tx), "sigmoid": torch.sigmoid(tx)}
        torch_bwd = {"relu": lambda: aten.threshold_backward(tdy, ty["relu"], 0),
                     "tanh": lambda: aten.tanh_backward(tdy, ty["tanh"]),
                     "sigmoid": lambda: aten.sigmoid_backward(tdy, ty["sigmoid"]),
                     "gelu (erf)": lambda: aten.gelu_backward(tdy, tx),
                     "gelu (tanh)": lambda: aten.gelu_backward(tdy, tx, approximate="tanh")}
    for name in table:
        impls = {"seqblocks": (lambda b=backward[name], w=saved[name]: b(dy, w))}
        if torch is not None:
            impls["torch"] = torch_bwd[name]
        cases.append(Case("nnops", f"{name} bwd {rows}x{cols}", 0.0, impls))
    return cases


def _other_cases(rows, cols, tokens, vocab, params, torch):
    from seqblocks import ops

    rng = np.random.default_rng(1)
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    dy = rng.standard_normal((rows, cols)).astype(np.float32)
    bias = rng.standard_normal(cols).astype(np.float32)
    idx = rng.integers(0, vocab, tokens)
    table = rng.standard_normal((vocab, cols)).astype(np.float32)
    dout = rng.standard_normal((tokens, cols)).astype(np.float32)
    p = rng.standard_normal(params).astype(np.float32)
    g = rng.standard_normal(params).astype(np.float32)
    m, v, buf = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    adam_kw = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, decoupled_weight_decay=True)

    def numpy_embedding():
        out = table[idx]
        dw = np.zeros_like(table)
        np.add.at(dw, idx, dout)
        return out, dw

    cases = [
        Case("nnops", f"dropout p=0.1 fwd+bwd {rows}x{cols}", 0.0, {
            "seqblocks": lambda: ops.dropout_backward(dy, ops.dropout_forward(x, 0.1, seed=1)[1])}),
        Case("nnops", f"add bias fwd+bwd {rows}x{cols} + {cols}", 0.0, {
            "seqblocks": lambda: ops.add_backward(dy, ops.add_forward(x, bias)[1]),
            "numpy": lambda: (x + bias, dy.copy(), dy.sum(0))}),
        Case("nnops", f"embedding fwd+bwd {tokens} tokens {vocab}x{cols}", 0.0, {
            "seqblocks": lambda: ops.embedding_backward(dout, ops.embedding_forward(idx, table)[1]),
            "numpy": numpy_embedding}),
        Case("nnops", f"adamw step {params / 1e6:g}M params", 0.0, {
            "seqblocks": lambda: ops.adam_step_(p, g, m, v, None, step=10, **adam_kw)}),
        Case("nnops", f"sgd momentum step {params / 1e6:g}M params", 0.0, {
            "seqblocks": lambda: ops.sgd_step_(p, g, buf, lr=1e-3, momentum=0.9, first_step=False),
            "numpy": lambda: (buf.__imul__(np.float32(0.9)), buf.__iadd__(g), p.__isub__(np.float32(1e-3) * buf))}),
        # A scalar loss's sum and its gradient (the step of every training loop), and a sum over rows.
        Case("nnops", f"sum fwd+bwd {rows}x{cols} (all elements)", 0.0, {
            "seqblocks": lambda: ops.sum_backward(np.float32(1.0), ops.sum_forward(x)[1]),
            "numpy": lambda: (x.sum(), np.broadcast_to(np.float32(1.0), x.shape).copy())}),
        Case("nnops", f"sum fwd+bwd {rows}x{cols} over rows", 0.0, {
            "seqblocks": lambda: ops.sum_backward(bias, ops.sum_forward(x, 0)[1]),
            "numpy": lambda: (x.sum(0), np.broadcast_to(bias, x.shape).copy())}),
    ]
    if torch is not None:
        aten = torch.ops.aten
        tx, tdy, tb = torch.from_numpy(x), torch.from_numpy(dy), torch.from_numpy(bias)
        tidx, ttable, tdout = torch.from_numpy(idx), torch.from_numpy(table), torch.from_numpy(dout)
        cases[0].impls["torch"] = lambda: (lambda ym: aten.native_dropout_backward(tdy, ym[1], 1 / 0.9))(
            aten.native_dropout(tx, 0.1, True))
        cases[1].impls["torch"] = lambda: (tx + tb, tdy.clone(), tdy.sum(0))
        cases[2].impls["torch"] = lambda: (torch.nn.functional.embedding(tidx, ttable),
                                           aten.embedding_dense_backward(tdout, tidx, vocab, -1, False))
        tp = torch.nn.Parameter(torch.from_numpy(p.copy()))
        tp.grad = torch.from_numpy(g)
        adamw = torch.optim.AdamW([tp], lr=1e-3, weight_decay=0.01, fused=True)
        cases[3].impls["torch"] = adamw.step
        sp = torch.nn.Parameter(torch.from_numpy(p.copy()))
        sp.grad = torch.from_numpy(g)
        sgd = torch.optim.SGD([sp], lr=1e-3, momentum=0.9, fused=True)
        cases[4].impls["torch"] = sgd.step
        ones = torch.ones((), dtype=torch.float32)
        # sum's backward as autograd runs it: the gradient expanded to x's shape, then made
        # contiguous by the consumer (as a layer's backward kernel does)
        cases[5].impls["torch"] = lambda: (tx.sum(), ones.expand(tx.shape).contiguous())
        cases[6].impls["torch"] = lambda: (tx.sum(0), tb.expand(tx.shape).contiguous())
    return cases


def _linear_case(rows, n_in, n_out, torch):
    """Linear pair forward + backward (3 GEMMs: 6 * rows * in * out flops)."""
    from seqblocks import ops

    rng = np.random.default_rng(2)
    x = rng.standard_normal((rows, n_in)).astype(np.float32)
    w = rng.standard_normal((n_out, n_in)).astype(np.float32)
    b = rng.standard_normal(n_out).astype(np.float32)
    dy = rng.standard_normal((rows, n_out)).astype(np.float32)
    impls = {
        "seqblocks": lambda: ops.linear_backward(dy, ops.linear_forward(x, w, b)[1]),
        "numpy": lambda: (x @ w.T + b, dy @ w, dy.T @ x, dy.sum(0)),
    }
    if torch is not None:
        tx, tw, tb, tdy = (torch.from_numpy(a) for a in (x, w, b, dy))
        impls["torch"] = lambda: (torch.nn.functional.linear(tx, tw, tb), tdy @ tw, tdy.T @ tx, tdy.sum(0))
    return Case("nnops", f"linear fwd+bwd {rows}x{n_in} -> {n_out}", 6.0 * rows * n_in * n_out, impls)


def cases(quick: bool) -> list[Case]:
    torch = torch_or_none()
    rows, cols = (1024, 512) if quick else (4096, 512)
    params = 1_000_000 if quick else 10_000_000
    with np.errstate(over="ignore"):
        return ([_linear_case(64, 256, 256, torch)] + _activation_cases(rows, cols, torch)
                + _other_cases(rows, cols, rows, 32000, params, torch))
