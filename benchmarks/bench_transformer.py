"""Transformer layers (encoder forward + backward and inference, decoder forward + backward) and one
cached decoding step vs PyTorch recomputing the prefix (the cases of
`python -m seqblocks bench --only transformer`)."""

from seqblocks._bench.cases_transformer import cases

from conftest import parametrize_cases, run


@parametrize_cases(cases(quick=False))
def test_transformer(benchmark, case, impl):
    run(benchmark, case, impl)
