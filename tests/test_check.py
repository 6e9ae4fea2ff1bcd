"""seqblocks.compare / python -m seqblocks check: every registered op on both backends and every
ISA, failures detected (out of tolerance, raising), absent ops skipped, the registry is
data-driven, and the command line's exit status."""

import os
import subprocess
import sys

import numpy as np
import pytest

import seqblocks
from seqblocks import check, ops, reference


def test_every_registered_op_passes_on_every_backend_and_isa():
    rows = seqblocks.compare(timing=False)
    assert rows
    bad = [(r.op, r.direction, r.dtype, r.impl, r.message) for r in rows if r.status not in ("ok", "absent")]
    assert not bad
    impls = {r.impl for r in rows if r.status == "ok"}
    assert impls == {"numpy"} | {f"native/{isa}" for isa in seqblocks.available_isas()}
    checked = {r.op for r in rows if r.status == "ok"}
    assert {"linear", "layer_norm", "softmax", "cross_entropy", "adam_step_", "matmul"} <= checked
    directions = {(r.op, r.direction) for r in rows if r.status == "ok"}
    assert ("linear", "backward") in directions and ("sgd_step_", "update") in directions


def test_speed_ratio_reported_for_native_rows():
    rows = seqblocks.compare(names=["exp"], dtypes=("float32",), timing=True)
    native = [r for r in rows if r.impl.startswith("native")]
    assert native and all(r.speed_ratio > 0 for r in native)
    assert all(np.isnan(r.speed_ratio) for r in rows if r.impl == "numpy")


@pytest.fixture
def extra_entry():
    added = []

    def add(entry):
        check.register(entry)
        added.append(entry)
        return entry

    yield add
    for entry in added:
        check.REGISTRY.remove(entry)


def test_out_of_tolerance_is_a_failure(monkeypatch, extra_entry, capsys):
    real = ops.tanh

    def off_by_1e3(x):
        out = real(x)
        return out if seqblocks.get_backend() == "numpy" else out * (1 + 1e-3)

    monkeypatch.setattr(ops, "tanh", off_by_1e3)
    rows = [r for r in seqblocks.compare(names=["tanh"], dtypes=("float32",), timing=False) if r.op == "tanh"]
    status = {r.impl: r.status for r in rows}
    assert status.pop("numpy") == "ok" and set(status.values()) == {"FAIL"}
    failed = [r for r in rows if r.status == "FAIL"][0]
    assert failed.err_over_tol > 1 and failed.max_rel == pytest.approx(1e-3, rel=0.01)
    assert check.main(["--only", "tanh", "--dtype", "float32", "--no-time"]) == 1
    out, err = capsys.readouterr()
    assert "FAIL" in out and "tanh forward float32 native/" in err


def test_raising_op_is_an_error_row(extra_entry, monkeypatch):
    def broken(x):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(ops, "broken_op", broken, raising=False)
    monkeypatch.setattr(reference, "broken_op", lambda x: x, raising=False)
    extra_entry(check.OpCheck("broken", "broken_op", lambda r, d: ((r.standard_normal(4).astype(d),), {}), 1.0,
                              kind="plain"))
    rows = seqblocks.compare(names=["broken"], dtypes=("float64",), timing=False)
    assert {r.status for r in rows} == {"error"} and "kernel exploded" in rows[0].message


def test_new_op_is_one_registry_entry(extra_entry, monkeypatch):
    monkeypatch.setattr(ops, "square_forward", lambda x, *, needs_grad=True: (x * x, x if needs_grad else None),
                        raising=False)
    monkeypatch.setattr(ops, "square_backward", lambda g, ws: (2 * g * ws,), raising=False)
    monkeypatch.setattr(reference, "square_forward", lambda x, *, needs_grad=True: (x * x, x), raising=False)
    monkeypatch.setattr(reference, "square_backward", lambda g, ws: (2 * g * ws,), raising=False)
    extra_entry(check.OpCheck("square", "square", lambda r, d: ((r.standard_normal(9).astype(d),), {}), 4.0))
    rows = seqblocks.compare(names=["square"], timing=False)
    assert {r.direction for r in rows} == {"forward", "backward"} and {r.status for r in rows} == {"ok"}


def test_absent_op_is_skipped(extra_entry):
    extra_entry(check.OpCheck("future", "future_op", lambda r, d: ((np.ones(2, d),), {}), 1.0))
    rows = seqblocks.compare(names=["future"], timing=False)
    assert {r.status for r in rows} == {"absent"}
    assert check.main(["--only", "future", "--no-time"]) == 0


def test_command_line():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(seqblocks.__file__)),
                                         env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "seqblocks", "check", "--only", "softmax", "linear", "--no-time"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "max abs" in proc.stdout and "within tolerance" in proc.stdout
    assert "softmax" in proc.stdout and "backward" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "seqblocks"], capture_output=True, text=True, env=env, timeout=60)
    assert "check" in proc.stdout


def test_registry_covers_every_op():
    covered = set()
    for entry in check.REGISTRY:
        covered |= {entry.op + "_forward", entry.op + "_backward"} if entry.kind == "pair" else {entry.op}
    missing = sorted(set(ops.__all__) - covered)
    assert not missing, f"add an OpCheck entry to seqblocks/check.py for {missing}"
