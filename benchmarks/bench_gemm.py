"""GEMM and linear: seqblocks vs NumPy (OpenBLAS) vs PyTorch (the cases of `python -m seqblocks bench`)."""

from conftest import parametrize_cases, run

from seqblocks._bench.cases_gemm import cases


@parametrize_cases(cases(quick=False))
def test_gemm(benchmark, case, impl):
    run(benchmark, case, impl)
