"""Autograd tape overhead on tiny ops: seqblocks vs bare NumPy vs PyTorch."""

from conftest import parametrize_cases, run

from seqblocks._bench.cases_autograd import cases


@parametrize_cases(cases(quick=False))
def test_autograd(benchmark, case, impl):
    run(benchmark, case, impl)
