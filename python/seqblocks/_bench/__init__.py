"""``python -m seqblocks bench``: seqblocks vs NumPy vs PyTorch, same thread count, as a table.

The cases live in ``cases_<family>.py`` modules of this package (each defines
``cases(quick: bool) -> list[Case]``); ``benchmarks/bench_<family>.py`` runs the same cases under
pytest-benchmark.

Every thread count runs in its own child process, with ``OMP_NUM_THREADS``,
``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS`` set to it (BLAS libraries read them once at load)
and with ``OPENBLAS_CORETYPE``/``OPENBLAS_L2_SIZE`` removed (they slow NumPy's OpenBLAS on some
machines; see shared/BENCHMARKING.md). In the child, seqblocks and torch are set to the same count.

Timing: each implementation is warmed up, then the implementations are run in alternation
(A B C A B C ...), so a slow minute hurts all of them. The time columns are medians of the rounds.
The ratio columns are other_time / seqblocks_time (above 1 means seqblocks is faster), taken round
by round: the median of the per-round ratios, and with 3 or more rounds their quartiles in
brackets, e.g. ``1.05x [0.98-1.12]``. A ratio whose quartiles straddle a target has not settled it.
Before and after each table the worker probes the float FMA throughput of all its threads
(``fma_probe_line``), so that a table taken on a busy or throttled host says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import os
import pkgutil
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable

import numpy as np


@dataclasses.dataclass
class Case:
    """One benchmark: the same work done by each implementation."""

    family: str
    name: str
    flops: float  # 0 when not meaningful
    impls: dict[str, Callable[[], object]]  # "seqblocks", "numpy", "torch" -> zero-arg callable


def torch_or_none():
    """torch if installed, else None (benchmark columns for torch are then left out)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def families() -> dict[str, Callable[[bool], list[Case]]]:
    """Every ``cases_<family>.py`` in this package, as family -> cases(quick)."""
    found = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("cases_"):
            module = importlib.import_module(f"{__name__}.{info.name}")
            found[info.name[len("cases_"):]] = module.cases
    return dict(sorted(found.items()))


#: Pause between implementations when threads > 1 (see time_case).
SETTLE_S = 0.25
#: Default shortest sample: calls of one implementation are repeated until a sample lasts this long.
MIN_SAMPLE_MS = 20.0


def time_case(case: Case, rounds: int, min_sample_s: float = MIN_SAMPLE_MS / 1e3,
              settle_s: float = 0.0) -> dict[str, list[float]]:
    """Seconds per call of each implementation, one sample per round, measured in alternation.

    ``settle_s`` is a pause before each implementation's sample. With several threads, the
    libraries' idle worker threads busy-wait after a call (GNU OpenMP for a while, OpenBLAS for
    up to ~0.1 s), and on a machine with as many cores as threads they would steal a core from
    whichever library runs next; the pause lets them go to sleep, so each sample measures one
    library, not the interference between them.
    """
    calls = {}
    for name, fn in case.impls.items():
        fn()  # warm-up (allocations, thread pools, lazy init)
        start = time.perf_counter()
        fn()
        once = max(time.perf_counter() - start, 1e-7)
        calls[name] = max(1, int(min_sample_s / once))
    samples: dict[str, list[float]] = {name: [] for name in case.impls}
    for _ in range(rounds):
        for name, fn in case.impls.items():
            if settle_s:
                time.sleep(settle_s)
                fn()  # the first call after a pause wakes the sleeping pool; not timed
            start = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            samples[name].append((time.perf_counter() - start) / calls[name])
    return samples


def paired_ratio(theirs: list[float], ours: list[float]) -> tuple[float, float, float]:
    """(median, first quartile, third quartile) of theirs[r] / ours[r] over the rounds r.

    The two samples of a round were taken seconds apart, so their ratio cancels most of what
    the host did in that minute; the quartiles say how much the rest still moved it."""
    if len(theirs) != len(ours) or not ours:
        raise ValueError(f"paired_ratio: expected two equal, non-empty lists of round times, got "
                         f"{len(theirs)} and {len(ours)} samples")
    ratios = np.asarray(theirs, dtype=float) / np.asarray(ours, dtype=float)
    q1, median, q3 = np.percentile(ratios, [25, 50, 75])
    return float(median), float(q1), float(q3)


def ratio_cell(theirs: list[float], ours: list[float]) -> str:
    """"1.05x", or with 3 or more rounds "1.05x [0.98-1.12]" (median [quartiles] of the
    per-round ratios)."""
    median, q1, q3 = paired_ratio(theirs, ours)
    if len(ours) < 3:
        return f"{median:.2f}x"
    return f"{median:.2f}x [{q1:.2f}-{q3:.2f}]"


def _cache_sizes(cache_bytes: dict) -> str:
    """"L1d 48 KiB, L2 1.25 MiB, L3 48 MiB" (levels the CPU does not report are left out)."""
    def size(n: int) -> str:
        return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n / 2**10:g} KiB"
    return ", ".join(f"{name} {size(cache_bytes[key])}" for name, key in (("L1d", "l1d"), ("L2", "l2"), ("L3", "l3"))
                     if cache_bytes[key])


def _machine_line() -> str:
    import seqblocks

    info = seqblocks.cpu_info()
    return (f"{info['brand'] or platform.processor()} (family {info['family']} model {info['model']}; "
            f"{_cache_sizes(info['cache_bytes'])}) | isa {info['isa']} | "
            f"{datetime.date.today().isoformat()} | python {platform.python_version()} | numpy {np.__version__}"
            + (f" | torch {torch_or_none().__version__}" if torch_or_none() is not None else ""))


PROBE_S = 0.3


def fma_probe_line(threads: int) -> str:
    """The machine's float FMA throughput right now (``_core.fma_peak_probe``: independent
    multiply-add chains on every thread), e.g. "371.2 (185.8 per thread)". A busy or throttled
    host shows here: a table whose probes fell well below the calm figure was taken while the
    cores were shared, and its ratios carry that noise."""
    from seqblocks import _core

    total = _core.fma_peak_probe(threads, PROBE_S)
    return f"{total:.1f} ({total / threads:.1f} per thread)"


def run_worker(threads: int, selected: list[str], quick: bool, rounds: int,
               min_sample_ms: float = MIN_SAMPLE_MS) -> None:
    import seqblocks

    seqblocks.set_num_threads(threads)
    all_families = families()
    torch = torch_or_none()
    if torch is not None:
        torch.set_num_threads(threads)
    print(f"\n## threads = {threads}\n")
    print(f"machine: {_machine_line()}\n")
    probe_before = fma_probe_line(threads)
    header = "| case | seqblocks ms | GFLOP/s | numpy ms | numpy/ours | torch ms | torch/ours |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for family in selected:
        for case in all_families[family](quick):
            samples = time_case(case, rounds, min_sample_s=min_sample_ms / 1e3,
                                settle_s=SETTLE_S if threads > 1 else 0.0)
            ours = statistics.median(samples["seqblocks"])
            gflops = f"{case.flops / ours / 1e9:.1f}" if case.flops else "-"

            def cell(name):
                if name not in samples:
                    return "-", "-"
                return f"{statistics.median(samples[name]) * 1e3:.4g}", ratio_cell(samples[name], samples["seqblocks"])

            np_ms, np_ratio = cell("numpy")
            th_ms, th_ratio = cell("torch")
            print(f"| {case.name} | {ours * 1e3:.4g} | {gflops} | {np_ms} | {np_ratio} | {th_ms} | {th_ratio} |",
                  flush=True)
    print(f"\nFMA probe (float, {PROBE_S} s, all {threads} thread(s) at once), GFLOP/s: {probe_before} before the "
          f"cases, {fma_probe_line(threads)} after")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seqblocks bench", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--quick", action="store_true", help="small sizes and few rounds (about a minute)")
    all_families = families()
    parser.add_argument("--only", default=",".join(all_families), help=f"families to run: {', '.join(all_families)}")
    parser.add_argument("--rounds", type=int, default=None,
                        help="alternating rounds per case (medians and quartiles taken)")
    parser.add_argument("--min-sample-ms", type=float, default=MIN_SAMPLE_MS,
                        help=f"shortest sample: each implementation's calls are repeated until a sample lasts "
                             f"this long (default {MIN_SAMPLE_MS:g}; a layer step of 30-170 ms is then one call, "
                             f"so on a noisy host a few hundred ms gives steadier ratios)")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    selected = [f.strip() for f in args.only.split(",") if f.strip()]
    unknown = [f for f in selected if f not in all_families]
    if unknown:
        parser.error(f"--only: expected names from {', '.join(all_families)}, got {', '.join(unknown)}")
    rounds = args.rounds if args.rounds is not None else (5 if args.quick else 11)
    if rounds < 1:
        parser.error(f"--rounds: expected an int >= 1, got {rounds}")
    if not (0 < args.min_sample_ms <= 60_000):
        parser.error(f"--min-sample-ms: expected a number of milliseconds in (0, 60000], got {args.min_sample_ms}")
    if args.worker is not None:
        run_worker(args.worker, selected, args.quick, rounds, args.min_sample_ms)
        return 0
    try:
        thread_counts = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        parser.error(f"--threads: expected comma-separated ints >= 1, got {args.threads!r}")
    if not thread_counts or min(thread_counts) < 1:
        parser.error(f"--threads: expected comma-separated ints >= 1, got {args.threads!r}")

    print("# seqblocks bench\n")
    print("time columns: medians of alternating rounds; ratio columns: their time / our time (> 1: seqblocks "
          "faster), median of the per-round ratios [quartiles]")
    for threads in thread_counts:
        env = dict(os.environ)
        for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
            env.pop(var, None)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
        cmd = [sys.executable, "-m", "seqblocks", "bench", "--worker", str(threads), "--only", ",".join(selected),
               "--rounds", str(rounds), "--min-sample-ms", repr(args.min_sample_ms)]
        cmd += ["--quick"] if args.quick else []
        result = subprocess.run(cmd, env=env)
        if result.returncode != 0:
            return result.returncode
    return 0
