"""Layer norm, softmax / log-softmax and fused cross-entropy, forward + backward: seqblocks vs the
NumPy reference vs PyTorch autograd (the cases of `python -m seqblocks bench --only norm`)."""

from conftest import parametrize_cases, run

from seqblocks._bench.cases_norm import cases


@parametrize_cases(cases(quick=False))
def test_norm(benchmark, case, impl):
    run(benchmark, case, impl)
