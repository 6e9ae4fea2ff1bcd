"""RNN / LSTM / GRU layers, forward (inference) and forward + backward: seqblocks vs PyTorch (the
cases of `python -m seqblocks bench --only rnn`)."""

from conftest import parametrize_cases, run

from seqblocks._bench.cases_rnn import cases


@parametrize_cases(cases(quick=False))
def test_rnn(benchmark, case, impl):
    run(benchmark, case, impl)
