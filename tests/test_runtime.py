"""CPU detection, ISA dispatch, SEQBLOCKS_ISA, thread control, fork safety, coexistence with torch."""

import importlib.util
import multiprocessing
import os
import re
import subprocess
import sys
import textwrap
import time

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


def test_cpu_info_reports_model_and_caches_as_the_os_does():
    info = seqblocks.cpu_info()
    caches = info["cache_bytes"]
    assert set(caches) == {"l1d", "l2", "l3"}
    assert all(isinstance(info[k], int) and info[k] >= 0 for k in ("family", "model", "stepping"))
    if info["vendor"] in ("GenuineIntel", "AuthenticAMD"):
        assert info["family"] > 0 and caches["l1d"] > 0 and caches["l2"] > caches["l1d"]
    # Linux says the same from its own reading of CPUID: /proc/cpuinfo and sysfs.
    try:
        with open("/proc/cpuinfo") as f:
            fields = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
    except OSError:
        fields = {}
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    for key, name in (("family", "cpu family"), ("model", "model"), ("stepping", "stepping")):
        if fields.get(name, "").isdigit():
            assert info[key] == int(fields[name]), (key, info[key], fields[name])
    sysfs = "/sys/devices/system/cpu/cpu0/cache"
    if os.path.isdir(sysfs):
        for index in sorted(os.listdir(sysfs)):
            path = os.path.join(sysfs, index)
            try:
                with open(os.path.join(path, "level")) as f:
                    level = int(f.read())
                with open(os.path.join(path, "type")) as f:
                    kind = f.read().strip()
                with open(os.path.join(path, "size")) as f:
                    text = f.read().strip()
            except (OSError, ValueError):
                continue
            if kind == "Instruction" or level > 3 or not text.endswith("K"):
                continue
            key = {1: "l1d", 2: "l2", 3: "l3"}[level]
            assert caches[key] == int(text[:-1]) * 1024, (key, caches[key], text)


def test_bench_header_names_the_machine():
    from seqblocks._bench import _cache_sizes, _machine_line

    assert _cache_sizes({"l1d": 48 * 1024, "l2": 1280 * 1024, "l3": 48 * 2**20}) == "L1d 48 KiB, L2 1.25 MiB, L3 48 MiB"
    assert _cache_sizes({"l1d": 32 * 1024, "l2": 0, "l3": 0}) == "L1d 32 KiB"
    info = seqblocks.cpu_info()
    assert f"family {info['family']} model {info['model']}" in _machine_line()


@pytest.mark.parametrize("isa", seqblocks.available_isas())
def test_fma_peak_probe_measures_every_isa(isa):
    from seqblocks import _core

    with seqblocks.use_isa(isa):
        one = _core.fma_peak_probe(1, 0.02)
        two = _core.fma_peak_probe(2, 0.02)
    # Positive and finite: the chains ran and were timed. Nothing about speed is asserted (no
    # timing in tests), so neither is how the two-thread sum compares with one thread.
    assert np.isfinite(one) and one > 0
    assert np.isfinite(two) and two > 0


@pytest.mark.parametrize("nthreads, seconds, name", [(0, 0.1, "nthreads"), (-3, 0.1, "nthreads"),
                                                     (1, 0.0, "seconds"), (1, -1.0, "seconds"),
                                                     (1, 11.0, "seconds"), (1, float("nan"), "seconds")])
def test_fma_peak_probe_rejects_bad_arguments(nthreads, seconds, name):
    from seqblocks import _core

    with pytest.raises(ValueError, match=name):
        _core.fma_peak_probe(nthreads, seconds)


def test_bench_worker_prints_the_probe_around_its_table(capsys, monkeypatch):
    import seqblocks._bench as bench

    monkeypatch.setattr(bench, "PROBE_S", 0.01)
    monkeypatch.setattr(bench, "families", lambda: {"none": lambda quick: []})
    before = seqblocks.get_num_threads()
    try:
        bench.run_worker(1, ["none"], quick=True, rounds=1)
    finally:
        seqblocks.set_num_threads(before)
    out = capsys.readouterr().out
    assert "machine: " in out and "| case |" in out
    assert "FMA probe (float, 0.01 s, all 1 thread(s) at once), GFLOP/s: " in out
    assert out.count("per thread)") == 2


def test_bench_ratio_is_the_median_of_per_round_ratios_with_quartiles():
    from seqblocks._bench import paired_ratio, ratio_cell

    # Round r: theirs / ours = 1.0, 2.0, 4.0, 0.5, 1.5 -> median 1.5, quartiles 1.0 and 2.0 (the
    # ratio of the two medians would read 2.0 / 1.0 = 2.0).
    ours = [1.0, 1.0, 1.0, 4.0, 2.0]
    theirs = [1.0, 2.0, 4.0, 2.0, 3.0]
    assert paired_ratio(theirs, ours) == pytest.approx((1.5, 1.0, 2.0))
    assert ratio_cell(theirs, ours) == "1.50x [1.00-2.00]"
    # A host that slowed down 2x half-way hurts both sides of a round alike.
    assert paired_ratio([2.0, 2.0, 4.0, 4.0], [1.0, 1.0, 2.0, 2.0]) == pytest.approx((2.0, 2.0, 2.0))
    assert ratio_cell([3.0, 3.0], [1.0, 2.0]) == "2.25x"  # fewer than 3 rounds: no quartiles
    with pytest.raises(ValueError, match="2 and 3 samples"):
        paired_ratio([1.0, 1.0], [1.0, 1.0, 1.0])


def test_bench_worker_prints_ratio_quartiles(capsys, monkeypatch):
    import seqblocks._bench as bench

    case = bench.Case("none", "noop", 0.0, {"seqblocks": lambda: None, "numpy": lambda: None})
    monkeypatch.setattr(bench, "PROBE_S", 0.01)
    monkeypatch.setattr(bench, "families", lambda: {"none": lambda quick: [case]})
    before = seqblocks.get_num_threads()
    try:
        bench.run_worker(1, ["none"], quick=True, rounds=3)
    finally:
        seqblocks.set_num_threads(before)
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| noop |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert re.fullmatch(r"\d+\.\d\dx \[\d+\.\d\d-\d+\.\d\d\]", cells[4]), row  # numpy/ours
    assert cells[5:] == ["-", "-"], row  # no torch column filled


def test_bench_min_sample_reaches_the_timer_and_repeats_calls(capsys, monkeypatch):
    import seqblocks._bench as bench

    calls = []
    case = bench.Case("none", "sleepy", 0.0, {"seqblocks": lambda: (calls.append(1), time.sleep(0.002))})
    seen = {}
    timer = bench.time_case

    def spy(case, rounds, min_sample_s=0.02, settle_s=0.0):
        seen["min_sample_s"] = min_sample_s
        return timer(case, rounds, min_sample_s=min_sample_s, settle_s=settle_s)

    monkeypatch.setattr(bench, "PROBE_S", 0.01)
    monkeypatch.setattr(bench, "families", lambda: {"none": lambda quick: [case]})
    monkeypatch.setattr(bench, "time_case", spy)
    before = seqblocks.get_num_threads()
    try:
        bench.run_worker(1, ["none"], quick=True, rounds=2, min_sample_ms=12.0)
    finally:
        seqblocks.set_num_threads(before)
    assert seen["min_sample_s"] == pytest.approx(0.012)
    # two untimed calls (warm-up, one to size the sample), then 2 rounds of >= 12 ms / ~2 ms calls
    assert 2 + 2 * 3 <= len(calls) <= 2 + 2 * 6
    assert "| sleepy |" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["0", "-5", "nan", "60001"])
def test_bench_rejects_a_bad_min_sample(capsys, value):
    import seqblocks._bench as bench

    with pytest.raises(SystemExit):
        bench.main(["--min-sample-ms", value, "--threads", "1"])
    err = capsys.readouterr().err
    assert "--min-sample-ms: expected a number of milliseconds in (0, 60000]" in err and value in err


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


def test_omp_thread_limit_caps_the_thread_count():
    result = run_python("import seqblocks; seqblocks.set_num_threads(4); print(seqblocks.get_num_threads())",
                        {"OMP_THREAD_LIMIT": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"


# Recurrent layers and the linear pair cut their work for exactly the threads they ask for;
# with a team short of them (OMP_DYNAMIC=true under load, a thread limit) they used to return
# NaN or garbage. SEQBLOCKS_TEST_SHORT_TEAM makes every such region behave as if short, so the
# fallback (the op run again on one thread) must give exactly the one-thread numbers.
_SHORT_TEAM_CODE = """
import numpy as np, seqblocks
from seqblocks import ops
rng = np.random.default_rng(0)
T, B, I, H, P = 5, 8, 24, 96, 40  # B G H^2 >= 2^16 multiply-adds per step: two threads
x = rng.standard_normal((T, B, I)).astype(np.float32)
lengths = np.array([5, 1, 3, 5, 2, 4, 5, 3])
# 11 rows: at two threads each takes whole rows (5 and 6) instead of a slice of the units.
xr = rng.standard_normal((T, 11, I)).astype(np.float32)
lengths_r = np.array([5, 1, 3, 5, 2, 4, 5, 3, 5, 4, 2])
def w(*shape):
    return (0.3 * rng.standard_normal(shape)).astype(np.float32)
cases = {
    "lstm": lambda: ops.lstm_layer_forward(x, None, None, w(4 * H, I), w(4 * H, H), w(4 * H), w(4 * H),
                                           lengths=lengths),
    "lstm_proj": lambda: ops.lstm_layer_forward(x, None, None, w(4 * H, I), w(4 * H, P), w(4 * H), w(4 * H),
                                                w_hr=w(P, H)),
    "gru": lambda: ops.gru_layer_forward(x, None, w(3 * H, I), w(3 * H, H), w(3 * H), w(3 * H), reverse=True),
    "rnn": lambda: ops.rnn_layer_forward(x, None, w(H, I), w(H, H), w(H), w(H)),
    "lstm_rows": lambda: ops.lstm_layer_forward(xr, None, None, w(4 * H, I), w(4 * H, H), w(4 * H), w(4 * H),
                                                lengths=lengths_r),
    "gru_rows": lambda: ops.gru_layer_forward(xr, None, w(3 * H, I), w(3 * H, H), w(3 * H), w(3 * H),
                                              lengths=lengths_r, reverse=True),
    "rnn_rows": lambda: ops.rnn_layer_forward(xr, None, w(H, I), w(H, H), w(H), w(H), nonlinearity="relu"),
}
backward = {"lstm": ops.lstm_layer_backward, "lstm_proj": ops.lstm_layer_backward,
            "gru": ops.gru_layer_backward, "rnn": ops.rnn_layer_backward}
backward.update({name + "_rows": backward[name] for name in ("lstm", "gru", "rnn")})
results = {}
for threads in (1, 2):
    seqblocks.set_num_threads(threads)
    rng = np.random.default_rng(1)
    for name, run in cases.items():
        outs, ws = run()
        grads = tuple(np.ones_like(o) for o in outs)
        results[name, threads] = [o for o in outs] + [g for g in backward[name](grads, ws) if g is not None]
    xs = rng.standard_normal((512, 256)).astype(np.float32)
    y, ws = ops.linear_forward(xs, w(256, 256), w(256))
    results["linear", threads] = [y] + [g for g in ops.linear_backward(np.ones_like(y), ws) if g is not None]
for key in [k for k in results if k[1] == 1]:
    one, two = results[key], results[key[0], 2]
    assert len(one) == len(two)
    for a, b in zip(one, two):
        assert np.isfinite(b).all(), key
        np.testing.assert_array_equal(a, b, err_msg=str(key))
print("ok")
"""


def test_short_team_fallback_gives_the_one_thread_numbers():
    result = run_python(_SHORT_TEAM_CODE, {"SEQBLOCKS_TEST_SHORT_TEAM": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_recurrent_layers_and_linear_pair_give_one_thread_bits_at_two_threads():
    """The same comparison without forcing the fallback: two threads give the one-thread bits."""
    result = run_python(_SHORT_TEAM_CODE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


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


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs os.sched_setaffinity")
def test_two_threads_pinned_to_one_core_finish_with_the_same_bits():
    """More threads than cores: two threads on one CPU. The waits of the two-thread products
    (one thread helping with the other's blocks, gemm.h PairShare) must not hang or change a bit
    while the thread they wait for needs the same core; forward products and the backward's pair."""
    cpu = min(os.sched_getaffinity(0))
    proc = run_python(f"""
        import os, hashlib
        os.sched_setaffinity(0, {{{cpu}}})  # before the first OpenMP thread starts: all inherit it
        import numpy as np
        import seqblocks
        from seqblocks import ops
        rng = np.random.default_rng(0)
        x = rng.standard_normal((700, 389)).astype(np.float32)
        w = rng.standard_normal((1157, 389)).astype(np.float32)
        dy = rng.standard_normal((700, 1157)).astype(np.float32)
        digests = []
        for threads in (1, 2, 2):
            seqblocks.set_num_threads(threads)
            y, ws = ops.linear_forward(x, w, None)
            h = hashlib.sha256(y.tobytes())
            for g in ops.linear_backward(dy, ws)[:2]:  # dx, dw (no bias)
                h.update(g.tobytes())
            digests.append(h.hexdigest())
        print(len(os.sched_getaffinity(0)), len(set(digests)))
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "1"]
