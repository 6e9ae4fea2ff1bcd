"""CPU detection, ISA dispatch, SEQBLOCKS_ISA, thread control, fork safety, coexistence with torch."""

import importlib.util
import multiprocessing
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import seqblocks
from seqblocks import _runtime

HAS_TORCH = importlib.util.find_spec("torch") is not None


def run_python(code: str, env_updates: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("SEQBLOCKS_ISA", None)
    env.update(env_updates or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_cpu_info_reports_features_and_isa():
    info = seqblocks.cpu_info()
    assert set(info) >= {"vendor", "brand", "features", "isa", "available_isas", "compiled_isas", "num_threads"}
    assert info["compiled_isas"] == ["avx512", "avx2", "scalar"]
    assert info["available_isas"][-1] == "scalar"
    assert info["isa"] in info["available_isas"]
    assert all(isinstance(v, bool) for v in info["features"].values())
    if "avx512" in info["available_isas"]:
        assert info["features"]["avx512f"] and info["features"]["os_saves_zmm"]
    if "avx2" in info["available_isas"]:
        assert info["features"]["avx2"] and info["features"]["fma"]


def test_default_isa_is_the_best_available():
    result = run_python("import seqblocks; print(seqblocks.get_isa())")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == seqblocks.available_isas()[0]


def test_set_isa_and_use_isa_restore():
    before = seqblocks.get_isa()
    for name in seqblocks.available_isas():
        with seqblocks.use_isa(name):
            assert seqblocks.get_isa() == name
        assert seqblocks.get_isa() == before
    with pytest.raises(RuntimeError):
        with seqblocks.use_isa("scalar"):
            raise RuntimeError("inside")
    assert seqblocks.get_isa() == before


def test_set_isa_rejects_unknown_names():
    with pytest.raises(ValueError, match=r"name: expected one of 'avx512', 'avx2', 'scalar', got 'sse9'"):
        seqblocks.set_isa("sse9")
    with pytest.raises(ValueError, match="expected one of"):
        seqblocks.set_isa(3)


@pytest.mark.parametrize("name", ["scalar", "avx2", "avx512"])
def test_environment_variable_selects_isa(name):
    result = run_python("import seqblocks; print(seqblocks.get_isa())", {"SEQBLOCKS_ISA": name})
    if name in seqblocks.available_isas():
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == name
    else:  # falls back with a warning
        assert "cannot run" in result.stderr


def test_environment_variable_unknown_value_raises():
    result = run_python("import seqblocks", {"SEQBLOCKS_ISA": "avx1024"})
    assert result.returncode != 0
    assert "SEQBLOCKS_ISA: expected one of 'avx512', 'avx2', 'scalar', got 'avx1024'" in result.stderr


def test_environment_variable_falls_back_when_cpu_lacks_isa(monkeypatch):
    """On a CPU without AVX-512, SEQBLOCKS_ISA=avx512 warns and takes the best ISA below it."""
    monkeypatch.setenv("SEQBLOCKS_ISA", "avx512")
    monkeypatch.setattr(_runtime, "available_isas", lambda: ["avx2", "scalar"])
    before = seqblocks.get_isa()
    try:
        with pytest.warns(RuntimeWarning, match=r"cannot run 'avx512'; using 'avx2'"):
            _runtime._apply_isa_from_environment()
        assert seqblocks.get_isa() == "avx2"
        monkeypatch.setattr(_runtime, "available_isas", lambda: ["scalar"])
        with pytest.warns(RuntimeWarning, match=r"using 'scalar'"):
            _runtime._apply_isa_from_environment()
        assert seqblocks.get_isa() == "scalar"
    finally:
        seqblocks._core.set_isa(before)


def test_thread_count_control():
    seqblocks.set_num_threads(1)
    assert seqblocks.get_num_threads() == 1
    seqblocks.set_num_threads(3)
    assert seqblocks.get_num_threads() == 3
    with pytest.raises(ValueError, match=r"n: expected an int >= 1, got 0"):
        seqblocks.set_num_threads(0)
    with pytest.raises(TypeError, match=r"n: expected an int >= 1, got float"):
        seqblocks.set_num_threads(2.5)
    with pytest.raises(TypeError):
        seqblocks.set_num_threads(True)


def test_omp_num_threads_is_honoured():
    result = run_python("import seqblocks; print(seqblocks.get_num_threads())", {"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"


def _child_matmul(queue):
    a = np.ones((256, 256), np.float32)
    queue.put((seqblocks.get_num_threads(), float(seqblocks.ops.matmul(a, a)[0, 0]),
               float(seqblocks.ops.exp(np.zeros(1 << 18, np.float32)).sum())))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_fork_after_parallel_op_does_not_hang():
    seqblocks.set_num_threads(2)
    a = np.ones((512, 512), np.float32)
    seqblocks.ops.matmul(a, a)  # starts the OpenMP thread pool in the parent
    seqblocks.ops.exp(np.zeros(1 << 20, np.float32))
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_matmul, args=(queue,))
    child.start()
    child.join(timeout=60)
    hung = child.is_alive()
    if hung:
        child.kill()
    assert not hung, "child process hung in a parallel region after fork()"
    assert child.exitcode == 0
    threads, value, total = queue.get(timeout=10)
    assert threads == 1 and value == 256.0 and total == float(1 << 18)
    # the parent keeps its threads
    assert seqblocks.get_num_threads() == 2
    np.testing.assert_array_equal(seqblocks.ops.matmul(a, a), np.full((512, 512), 512.0, np.float32))


_TORCH_AND_SEQBLOCKS = """
import numpy as np
{first}
{second}
torch.set_num_threads(2)
seqblocks.set_num_threads(2)
a = np.random.default_rng(0).standard_normal((300, 300)).astype(np.float32)
for _ in range(3):
    ours = seqblocks.ops.matmul(a, a)
    theirs = torch.from_numpy(a) @ torch.from_numpy(a)
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-4, atol=1e-3)
    seqblocks.ops.tanh(a)
    torch.tanh(torch.from_numpy(a))
print("ok")
"""


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
@pytest.mark.parametrize("torch_first", [True, False])
def test_works_with_torch_imported_before_or_after(torch_first):
    imports = ["import torch", "import seqblocks"]
    if not torch_first:
        imports.reverse()
    result = run_python(_TORCH_AND_SEQBLOCKS.format(first=imports[0], second=imports[1]), timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_backend_switch_and_context():
    import threading

    a = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    assert seqblocks.get_backend() == "native"
    with seqblocks.backend("numpy"):
        assert seqblocks.get_backend() == "numpy"
        np.testing.assert_array_equal(seqblocks.ops.matmul(a, a.T), a @ a.T)
        seen = []
        thread = threading.Thread(target=lambda: seen.append(seqblocks.get_backend()))
        thread.start()
        thread.join()
        assert seen == ["native"]  # the choice is per thread
    assert seqblocks.get_backend() == "native"
    with pytest.raises(ValueError, match=r"name: expected one of 'native', 'numpy', got 'cuda'"):
        seqblocks.set_backend("cuda")
    seqblocks.set_backend("numpy")
    try:
        assert seqblocks.get_backend() == "numpy"
    finally:
        seqblocks.set_backend("native")


_NO_AVX512_SMOKE = """
import numpy as np
import seqblocks
from seqblocks import ops
info = seqblocks.cpu_info()
assert "avx512" not in info["available_isas"], info
rng = np.random.default_rng(0)
for dtype in (np.float32, np.float64):
    for m, n, k in [(1, 2048, 512), (70, 50, 33), (130, 150, 140)]:
        a = rng.standard_normal((m, k)).astype(dtype)
        b = rng.standard_normal((k, n)).astype(dtype)
        assert np.allclose(ops.matmul(a, b), a @ b, rtol=1e-3, atol=1e-3)
        assert np.allclose(ops.linear(a, b.T), a @ b, rtol=1e-3, atol=1e-3)
    x = np.linspace(-5, 5, 1001).astype(dtype)
    assert np.allclose(ops.exp(x), np.exp(x), rtol=1e-5)
    assert np.allclose(ops.tanh(x), np.tanh(x), rtol=1e-5, atol=1e-6)
    for f in (ops.sigmoid, ops.gelu):
        f(x)
    ops.gelu(x, approximate="tanh")
print(info["isa"])
"""


def _valgrind_python(code, env_updates=None):
    import shutil

    valgrind = shutil.which("valgrind")
    if valgrind is None:
        pytest.skip("valgrind is not installed")
    env = dict(os.environ)
    env.pop("SEQBLOCKS_ISA", None)
    env.update(env_updates or {})
    return subprocess.run([valgrind, "--tool=none", "-q", sys.executable, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, env=env, timeout=600)


def test_same_build_runs_on_a_cpu_without_avx512():
    """valgrind reports a CPU without AVX-512 (and traps on any AVX-512 instruction), so this runs the
    shipped module as it would run on an AVX2-only machine: dispatch must pick avx2 and no AVX-512
    code may leak into shared functions."""
    result = _valgrind_python(_NO_AVX512_SMOKE)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "avx2"


def test_isa_env_falls_back_on_a_cpu_without_avx512():
    code = "import seqblocks; print(seqblocks.get_isa())"
    result = _valgrind_python(code, {"SEQBLOCKS_ISA": "avx512"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "avx2"
    assert "SEQBLOCKS_ISA='avx512': this CPU cannot run 'avx512'; using 'avx2'" in result.stderr
