"""Ops pairs (activations, dropout, add, embedding: forward + backward) and optimizer steps:
seqblocks vs NumPy vs PyTorch."""

from conftest import parametrize_cases, run

from seqblocks._bench.cases_nnops import cases


@parametrize_cases(cases(quick=False))
def test_nnops(benchmark, case, impl):
    run(benchmark, case, impl)
