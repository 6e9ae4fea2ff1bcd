"""Benchmark cases: element-wise math on 2^20 float32."""

from __future__ import annotations

import numpy as np

from . import Case, torch_or_none


def cases(quick: bool) -> list[Case]:
    import seqblocks

    torch = torch_or_none()
    n = 1 << 20
    x = np.random.default_rng(0).uniform(-6, 6, n).astype(np.float32)
    tx = torch.from_numpy(x) if torch is not None else None
    table = [
        ("exp", lambda: seqblocks.ops.exp(x), lambda: np.exp(x), lambda: torch.exp(tx)),
        ("tanh", lambda: seqblocks.ops.tanh(x), lambda: np.tanh(x), lambda: torch.tanh(tx)),
        ("sigmoid", lambda: seqblocks.ops.sigmoid(x), lambda: 1 / (1 + np.exp(-x)), lambda: torch.sigmoid(tx)),
        ("gelu (erf)", lambda: seqblocks.ops.gelu(x), None, lambda: torch.nn.functional.gelu(tx)),
        ("gelu (tanh)", lambda: seqblocks.ops.gelu(x, approximate="tanh"), None,
         lambda: torch.nn.functional.gelu(tx, approximate="tanh")),
    ]
    cases = []
    for name, ours, numpy_impl, torch_impl in table:
        impls = {"seqblocks": ours}
        if numpy_impl is not None:
            impls["numpy"] = numpy_impl
        if torch is not None:
            impls["torch"] = torch_impl
        cases.append(Case("math", f"{name} float32 n=2^20", 0.0, impls))
    return cases
