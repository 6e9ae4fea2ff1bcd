"""pytest-benchmark suites: ``python -m pytest benchmarks/bench_gemm.py benchmarks/bench_math.py``.

Each case is benchmarked once per implementation (seqblocks, numpy, torch when installed), grouped
by case, at the thread count given by ``--bench-threads`` (default 1) for all three. For NumPy,
set ``OPENBLAS_NUM_THREADS`` to the same count and unset ``OPENBLAS_CORETYPE``/``OPENBLAS_L2_SIZE``
on the command line (BLAS reads them at load time); the README shows the full command.
"""

import pytest


def pytest_addoption(parser):
    parser.addoption("--bench-threads", type=int, default=1, help="threads for seqblocks and torch")


@pytest.fixture(autouse=True)
def _same_threads(request):
    import seqblocks

    n = request.config.getoption("--bench-threads")
    seqblocks.set_num_threads(n)
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass


def parametrize_cases(cases):
    """(case, implementation) pairs as pytest params, grouped by case in the report."""
    params = []
    for case in cases:
        for impl in case.impls:
            params.append(pytest.param(case, impl, id=f"{case.name}-{impl}"))
    return pytest.mark.parametrize("case,impl", params)


def run(benchmark, case, impl):
    benchmark.group = case.name
    benchmark.extra_info["flops"] = case.flops
    fn = case.impls[impl]
    benchmark(fn)
