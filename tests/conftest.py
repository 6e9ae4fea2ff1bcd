import numpy as np
import pytest

import seqblocks


@pytest.fixture(params=seqblocks.available_isas())
def isa(request):
    """Runs the test once per ISA this CPU supports, with that ISA's kernels."""
    with seqblocks.use_isa(request.param):
        yield request.param


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _restore_threads():
    n = seqblocks.get_num_threads()
    yield
    seqblocks.set_num_threads(n)
