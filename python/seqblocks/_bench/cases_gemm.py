"""Benchmark cases: square matmul (float32, float64) and linear on RNN-step shapes."""

from __future__ import annotations

import numpy as np

from . import Case, torch_or_none


def cases(quick: bool) -> list[Case]:
    import seqblocks

    torch = torch_or_none()
    rng = np.random.default_rng(0)
    cases = []
    sizes32 = [256, 512] if quick else [256, 512, 1024, 2048]
    sizes64 = [256] if quick else [256, 512, 1024]
    for dtype, sizes in ((np.float32, sizes32), (np.float64, sizes64)):
        for n in sizes:
            a = rng.standard_normal((n, n)).astype(dtype)
            b = rng.standard_normal((n, n)).astype(dtype)
            impls = {"seqblocks": lambda a=a, b=b: seqblocks.ops.matmul(a, b), "numpy": lambda a=a, b=b: a @ b}
            if torch is not None:
                ta, tb = torch.from_numpy(a), torch.from_numpy(b)
                impls["torch"] = lambda ta=ta, tb=tb: ta @ tb
            cases.append(Case("gemm", f"matmul {np.dtype(dtype).name} {n}x{n}x{n}", 2.0 * n**3, impls))
    for rows in [1, 4, 16, 64]:
        x = rng.standard_normal((rows, 512)).astype(np.float32)
        w = rng.standard_normal((2048, 512)).astype(np.float32)
        bias = rng.standard_normal(2048).astype(np.float32)
        impls = {"seqblocks": lambda x=x, w=w, b=bias: seqblocks.ops.linear(x, w, b),
                 "numpy": lambda x=x, w=w, b=bias: x @ w.T + b}
        if torch is not None:
            tx, tw, tbias = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(bias)
            impls["torch"] = lambda tx=tx, tw=tw, tb=tbias: torch.nn.functional.linear(tx, tw, tb)
        cases.append(Case("linear", f"linear float32 x({rows},512) W(2048,512)+b", 2.0 * rows * 512 * 2048, impls))
    return cases
