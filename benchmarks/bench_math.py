"""exp / tanh / sigmoid / gelu on 2^20 float32: seqblocks vs NumPy vs PyTorch."""

from conftest import parametrize_cases, run

from seqblocks._bench.cases_math import cases


@parametrize_cases(cases(quick=False))
def test_math(benchmark, case, impl):
    run(benchmark, case, impl)
