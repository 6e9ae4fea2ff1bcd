"""Benchmark cases: the Python-layer overhead of the autograd tape on tiny ops (2x2 float32),
where the arithmetic itself costs well under a microsecond, so the time is the tape's."""

from __future__ import annotations

import numpy as np

from . import Case, torch_or_none


def cases(quick: bool) -> list[Case]:
    import seqblocks
    import seqblocks.nn.functional as F

    torch = torch_or_none()
    a_np = np.ones((2, 2), np.float32)
    b_np = np.full((2, 2), 2.0, np.float32)
    a = seqblocks.tensor(a_np, requires_grad=True)
    b = seqblocks.tensor(b_np, requires_grad=True)

    def ours_step():
        (a * b).sum().backward()

    impls_add = {"seqblocks": lambda: a + b, "numpy": lambda: a_np + b_np}
    impls_step = {"seqblocks": ours_step}
    impls_relu = {"seqblocks": lambda: F.relu(a), "numpy": lambda: seqblocks.ops.relu_forward(a_np)}
    if torch is not None:
        ta = torch.ones(2, 2, requires_grad=True)
        tb = torch.full((2, 2), 2.0, requires_grad=True)

        def torch_step():
            (ta * tb).sum().backward()

        impls_add["torch"] = lambda: ta + tb
        impls_step["torch"] = torch_step
        impls_relu["torch"] = lambda: torch.relu(ta)
    return [
        Case("autograd", "tensor add with grad (2x2; numpy = bare np add)", 0.0, impls_add),
        Case("autograd", "(a*b).sum().backward() (3 nodes, 2 leaves)", 0.0, impls_step),
        Case("autograd", "F.relu with grad (numpy = bare ops.relu_forward)", 0.0, impls_relu),
    ]
