"""One training step of a small classifier (forward, backward, Adam): seqblocks vs PyTorch."""

from conftest import parametrize_cases, run

from seqblocks._bench.cases_nn import cases


@parametrize_cases(cases(quick=False))
def test_nn(benchmark, case, impl):
    run(benchmark, case, impl)
