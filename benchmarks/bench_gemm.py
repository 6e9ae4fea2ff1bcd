"""GEMM and linear: seqblocks vs NumPy (OpenBLAS) vs PyTorch (the cases of `python -m seqblocks bench`)."""

from conftest import parametrize_cases, run

from seqblocks.bench import gemm_cases


@parametrize_cases(gemm_cases(quick=False))
def test_gemm(benchmark, case, impl):
    run(benchmark, case, impl)
