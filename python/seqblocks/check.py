"""``seqblocks.compare`` and ``python -m seqblocks check``: every registered op, forward and
(where it exists) backward, on the numpy backend and on the native backend with every available
ISA, against the float64 reference.

The expected values are ``seqblocks.reference`` run in float64 on the same (upcast) inputs. A
result passes under ``seqblocks.testing.assert_close``'s policy with

    magnitude = |expected| + rms(expected),   factor = the entry's factor

(the rms term stands for the size of the terms a reduction adds up, which is what rounding errors
scale with when the result cancels). The table reports max abs error, max rel error
(|error| / max(|expected|, tiny)), the worst error / tolerance ratio (<= 1 passes) and, for native
rows, time(numpy backend) / time(native) on the same inputs.

Adding an op = adding one ``OpCheck`` to ``REGISTRY`` (see ``register``): a name, the ops
attribute(s), a builder of sample inputs and a tolerance factor.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import sys
import time
from typing import Callable

import numpy as np

from . import ops, reference
from ._backend import backend
from ._runtime import available_isas, use_isa
from .testing import assert_close, sum_factor

__all__ = ["OpCheck", "REGISTRY", "Row", "compare", "main", "register"]


@dataclasses.dataclass
class OpCheck:
    """One op to check.

    build(rng, dtype) -> (args, kwargs): sample inputs (float arrays in ``dtype``).
    kind: "pair" (``<op>_forward``/``<op>_backward``), "plain" (``op(*args) -> array``) or
    "inplace" (``op(*args)`` writes into the arrays at positions ``mutated``).
    """

    name: str
    op: str
    build: Callable
    factor: float
    kind: str = "pair"
    grad_factor: float | None = None
    mutated: tuple = ()
    #: grad_magnitude(grad_out, expected_grad) -> what a gradient's rounding errors scale with,
    #: when that is not its own size (e.g. tanh': g * (1 - y*y) cancels as |y| -> 1, its error
    #: scales with |g|). Default: |expected| + rms(expected).
    grad_magnitude: Callable | None = None


REGISTRY: list[OpCheck] = []


def register(check: OpCheck) -> OpCheck:
    REGISTRY.append(check)
    return check


@dataclasses.dataclass
class Row:
    op: str
    direction: str  # "forward" / "backward" / "update"
    dtype: str
    impl: str  # "numpy" or "native/<isa>"
    max_abs: float = float("nan")
    max_rel: float = float("nan")
    err_over_tol: float = float("nan")
    speed_ratio: float = float("nan")  # numpy time / native time
    status: str = "ok"  # ok / FAIL / absent / error
    message: str = ""


# -------------------------------------------------------------------------- sample inputs


def _u(rng, shape, dtype, lo=-1.0, hi=1.0):
    return rng.uniform(lo, hi, shape).astype(dtype)


def _n(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


for _name in ("exp", "tanh", "sigmoid"):
    register(OpCheck(_name, _name, lambda r, d: ((_u(r, (1031,), d, -6, 6),), {}), 8.0, kind="plain"))
register(OpCheck("gelu", "gelu", lambda r, d: ((_u(r, (1031,), d, -6, 6),), {}), 8.0, kind="plain"))
register(OpCheck("gelu(tanh)", "gelu", lambda r, d: ((_u(r, (1031,), d, -6, 6), "tanh"), {}), 8.0, kind="plain"))
register(OpCheck("matmul", "matmul", lambda r, d: ((_n(r, (33, 65), d), _n(r, (65, 17), d)), {}),
                 sum_factor(65), kind="plain"))
register(OpCheck("gemm", "gemm", lambda r, d: ((_n(r, (65, 33), d), _n(r, (17, 65), d), _n(r, (33, 17), d)),
                                               dict(alpha=0.5, beta=2.0, trans_a=True, trans_b=True)),
                 sum_factor(65), kind="plain"))
register(OpCheck("linear(plain)", "linear", lambda r, d: ((_n(r, (5, 7, 65), d), _n(r, (33, 65), d), _n(r, (33,), d)), {}),
                 sum_factor(65), kind="plain"))
register(OpCheck("linear", "linear", lambda r, d: ((_n(r, (5, 7, 65), d), _n(r, (33, 65), d), _n(r, (33,), d)), {}),
                 sum_factor(65), grad_factor=sum_factor(35)))
for _act in ("relu", "gelu", "gelu_tanh"):
    register(OpCheck(f"linear_act({_act})", "linear_act",
                     lambda r, d, a=_act: ((_n(r, (5, 7, 65), d), _n(r, (33, 65), d) / 8, _n(r, (33,), d), a), {}),
                     sum_factor(65) + 8.0, grad_factor=sum_factor(35) + sum_factor(65)))
for _act in ("relu", "gelu", "gelu_tanh"):
    register(OpCheck(f"feed_forward({_act})", "feed_forward",
                     lambda r, d, a=_act: ((_n(r, (5, 7, 65), d), _n(r, (48, 65), d) / 8, _n(r, (48,), d),
                                            _n(r, (33, 48), d) / 8, _n(r, (33,), d), a), {}),
                     sum_factor(65) + sum_factor(48) + 8.0,
                     grad_factor=sum_factor(35) + sum_factor(65) + sum_factor(48)))
register(OpCheck("embedding", "embedding",
                 lambda r, d: ((r.integers(0, 50, (4, 9)), _n(r, (50, 33), d), 3), {}), 1.0,
                 grad_factor=sum_factor(36)))
register(OpCheck("layer_norm", "layer_norm",
                 lambda r, d: ((_n(r, (7, 65), d) * 3 + 1, (65,), _n(r, (65,), d), _n(r, (65,), d)), {}),
                 2 * sum_factor(65)))
register(OpCheck("add_layer_norm", "add_layer_norm",
                 lambda r, d: ((_n(r, (7, 65), d) * 3 + 1, _n(r, (7, 65), d), (65,), _n(r, (65,), d), _n(r, (65,), d)),
                               {}),
                 2 * sum_factor(65)))
register(OpCheck("softmax", "softmax", lambda r, d: ((_n(r, (7, 65), d) * 3,), dict(dim=-1)), sum_factor(65)))
register(OpCheck("log_softmax", "log_softmax", lambda r, d: ((_n(r, (7, 65), d) * 3,), dict(dim=-1)),
                 sum_factor(65)))
register(OpCheck("cross_entropy", "cross_entropy",
                 lambda r, d: ((_n(r, (16, 33), d) * 2, np.where(r.random(16) < 0.2, -100, r.integers(0, 33, 16)),
                                r.uniform(0.5, 2, 33).astype(d)), dict(label_smoothing=0.1)),
                 sum_factor(16 * 33)))
register(OpCheck("dropout", "dropout", lambda r, d: ((_n(r, (1031,), d),), dict(p=0.3, seed=1234)), 2.0))
# scores of size ~sqrt(16)/4 = 1, so each output is a sum of 65 probability-weighted terms
register(OpCheck("sdpa", "sdpa", lambda r, d: ((_n(r, (2, 3, 33, 16), d), _n(r, (2, 3, 65, 16), d),
                                                _n(r, (2, 3, 65, 8), d)), dict(is_causal=True)),
                 2 * sum_factor(65)))
# tanh within 2 ulp, each score a sum of 33 terms; dw sums over all 2 * 9 * 17 (i, j) pairs
register(OpCheck("additive_scores", "additive_scores",
                 lambda r, d: ((_n(r, (2, 9, 33), d), _n(r, (2, 17, 33), d), _n(r, (33,), d)), {}),
                 2 * sum_factor(33), grad_factor=2 * sum_factor(2 * 9 * 17)))
register(OpCheck("sdpa(mask,dropout)", "sdpa",
                 lambda r, d: ((_n(r, (2, 33, 16), d), _n(r, (2, 65, 16), d), _n(r, (2, 65, 8), d),
                                r.random((33, 65)) < 0.7), dict(dropout_p=0.2, seed=99)),
                 2 * sum_factor(65)))

# Recurrent layers (T=7, B=3, I=17, H=33, mixed lengths): every step sums I + H + 2 products and a
# step's rounding error is carried through up to T steps (tests/test_rnn_ops.py, `tolerance`);
# weight gradients add T * B such terms.
def _rnn_args(r, d, G, lstm=False):
    T, B, I, H = 7, 3, 17, 33
    k = 1 / math.sqrt(H)
    states = (_n(r, (B, H), d), _n(r, (B, H), d)) if lstm else (_n(r, (B, H), d),)
    weights = (_u(r, (G * H, I), d, -k, k), _u(r, (G * H, H), d, -k, k), _u(r, (G * H,), d, -k, k),
               _u(r, (G * H,), d, -k, k))
    return (_n(r, (T, B, I), d),) + states + weights + ((None,) if lstm else ())


_RNN_FACTOR = sum_factor(17 + 33 + 2) * 8
_RNN_LENGTHS = np.array([7, 1, 4])
register(OpCheck("lstm_layer", "lstm_layer",
                 lambda r, d: (_rnn_args(r, d, 4, lstm=True), dict(lengths=_RNN_LENGTHS, reverse=True)),
                 _RNN_FACTOR, grad_factor=_RNN_FACTOR * sum_factor(21)))
register(OpCheck("gru_layer", "gru_layer", lambda r, d: (_rnn_args(r, d, 3), dict(lengths=_RNN_LENGTHS)),
                 _RNN_FACTOR, grad_factor=_RNN_FACTOR * sum_factor(21)))
register(OpCheck("rnn_layer", "rnn_layer", lambda r, d: (_rnn_args(r, d, 1), dict(lengths=_RNN_LENGTHS)),
                 _RNN_FACTOR, grad_factor=_RNN_FACTOR * sum_factor(21)))


def _pointwise_grad(grad_out, expected):
    # d/dx of tanh, sigmoid and gelu is computed as a difference of O(1) terms times g
    # (1 - y*y, y - y*y, Phi + x*phi): its rounding error scales with |g|, not with the result.
    return grad_out


for _name in ("relu", "tanh", "sigmoid"):
    register(OpCheck(f"{_name}(pair)", _name, lambda r, d: ((_u(r, (1031,), d, -6, 6),), {}), 8.0,
                     grad_magnitude=_pointwise_grad))
register(OpCheck("gelu(pair)", "gelu", lambda r, d: ((_u(r, (1031,), d, -6, 6),), {}), 8.0,
                 grad_magnitude=_pointwise_grad))
register(OpCheck("gelu(pair,tanh)", "gelu", lambda r, d: ((_u(r, (1031,), d, -6, 6), "tanh"), {}), 8.0,
                 grad_magnitude=_pointwise_grad))
register(OpCheck("add", "add", lambda r, d: ((_n(r, (7, 65), d), _n(r, (65,), d)), {}), 2.0, grad_factor=sum_factor(7)))
# Sums of at least 16384 elements (the native path's threshold): all of them (positive terms, so
# the result is not a cancellation), and two of three axes kept as one.
register(OpCheck("sum", "sum", lambda r, d: ((_u(r, (9, 33, 65), d, 0.5, 1.5),), {}), sum_factor(9 * 33 * 65)))
register(OpCheck("sum(dims)", "sum", lambda r, d: ((_n(r, (9, 33, 65), d),), dict(dims=(0, 2), keepdim=True)),
                 sum_factor(9 * 65)))
register(OpCheck("sgd_step_", "sgd_step_",
                 lambda r, d: ((_n(r, (1031,), d), _n(r, (1031,), d), _n(r, (1031,), d)),
                               dict(lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.01, nesterov=True,
                                    first_step=False)),
                 8.0, kind="inplace", mutated=(0, 2)))
register(OpCheck("adam_step_", "adam_step_",
                 lambda r, d: ((_n(r, (1031,), d), _n(r, (1031,), d), _n(r, (1031,), d) * 0.1,
                                _u(r, (1031,), d, 0.001, 0.1), _u(r, (1031,), d, 0.05, 0.2)),
                               dict(step=3, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01,
                                    amsgrad=True, decoupled_weight_decay=True)),
                 16.0, kind="inplace", mutated=(0, 2, 3, 4)))


# -------------------------------------------------------------------------------- running


def _upcast(args):
    return tuple(np.array(a, np.float64) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a for a in args)


def _copy(args):
    return tuple(np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in args)


def _functions(check: OpCheck, module):
    if check.kind == "pair":
        fwd = getattr(module, check.op + "_forward", None)
        bwd = getattr(module, check.op + "_backward", None)
        return (fwd, bwd) if fwd is not None and bwd is not None else None
    fn = getattr(module, check.op, None)
    return None if fn is None else (fn, None)


def _run(check: OpCheck, module, args, kwargs, grad_out=None):
    """(outputs, grads) of one run: outputs is a tuple of arrays, grads a tuple (or None)."""
    fwd, bwd = _functions(check, module)
    if check.kind == "plain":
        return (np.asarray(fwd(*args, **kwargs)),), None
    if check.kind == "inplace":
        args = _copy(args)
        fwd(*args, **kwargs)
        return tuple(args[i] for i in check.mutated), None
    out, ws = fwd(*args, **kwargs)
    outs = out if isinstance(out, tuple) else (out,)  # multi-output pairs
    grads = None
    if grad_out is not None:
        grads = tuple(bwd(_grad_arg(out, grad_out, outs[0].dtype), ws))
    return outs, grads


def _grad_arg(out, grad_out, dtype):
    """The backward's grad_output in the forward's dtype: a tuple stays one gradient per output
    (recurrent layers); one array for a multi-output pair is used for each of its outputs, which
    then share one shape (add_layer_norm)."""
    if isinstance(grad_out, tuple):
        return tuple(g.astype(dtype) for g in grad_out)
    g = grad_out.astype(dtype)
    return tuple(g for _ in out) if isinstance(out, tuple) else g


def _errors(actual, expected, factor, dtype, magnitude=None):
    actual64 = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    finite = np.isfinite(expected)
    rms = float(np.sqrt(np.mean(expected[finite] ** 2))) if finite.any() else 0.0
    magnitude = np.abs(expected) + rms if magnitude is None else np.abs(expected) + np.abs(magnitude)
    err = np.abs(actual64 - expected)
    err = np.where(finite, err, 0.0)
    tiny = float(np.finfo(dtype).tiny)
    max_abs = float(err.max(initial=0.0))
    max_rel = float((err / np.maximum(np.abs(expected), tiny)).max(initial=0.0))
    bound = factor * float(np.finfo(dtype).eps) * magnitude + tiny
    ratio = float((err / bound).max(initial=0.0))
    try:
        assert_close(actual, expected, magnitude=magnitude, factor=factor, dtype=dtype)
        ok, message = True, ""
    except AssertionError as exc:
        ok, message = False, str(exc)
    return max_abs, max_rel, ratio, ok, message


def _time(fn, repeats: int = 5) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def compare(names=None, dtypes=("float32", "float64"), isas=None, backends=("native", "numpy"),
            timing: bool = True, seed: int = 0, show: bool = False) -> list[Row]:
    """Check the registered ops (all, or those whose name or op is in ``names``) and return one
    ``Row`` per op, direction, dtype and implementation (``show=True`` also prints the table). A
    row's ``status`` is "ok", "FAIL" (out of tolerance), "error" (raised) or "absent" (the op is
    not in ``seqblocks.ops`` yet)."""
    rows = _compare(names, dtypes, isas, backends, timing, seed)
    if show:
        print(format_table(rows))
    return rows


def _compare(names, dtypes, isas, backends, timing, seed) -> list[Row]:
    isas = list(available_isas() if isas is None else isas)
    rows: list[Row] = []
    for check in REGISTRY:
        if names is not None and check.name not in names and check.op not in names:
            continue
        for dtype_name in dtypes:
            dtype = np.dtype(dtype_name)
            rng = np.random.default_rng(seed)
            args, kwargs = check.build(rng, dtype)
            if _functions(check, ops) is None or _functions(check, reference) is None:
                rows.append(Row(check.name, "-", dtype.name, "-", status="absent",
                                message="not in seqblocks.ops/reference"))
                continue
            args64 = _upcast(args)
            expected_outs, _ = _run(check, reference, args64, kwargs)
            grad_out = None
            expected_grads = None
            if check.kind == "pair":
                grng = np.random.default_rng(seed + 1)
                grad_out = grng.standard_normal(expected_outs[0].shape) if len(expected_outs) == 1 else \
                    tuple(grng.standard_normal(o.shape) for o in expected_outs)
                _, expected_grads = _run(check, reference, args64, kwargs, grad_out)
            impls = []
            if "numpy" in backends:
                impls.append(("numpy", "numpy", None))
            if "native" in backends:
                impls.extend((f"native/{isa}", "native", isa) for isa in isas)
            numpy_time = numpy_bwd_time = None
            for label, backend_name, isa in impls:
                direction = "update" if check.kind == "inplace" else "forward"
                try:
                    with backend(backend_name), (use_isa(isa) if isa else _null()):
                        outs, grads = _run(check, ops, args, kwargs, grad_out)
                        elapsed = _time(lambda: _run(check, ops, args, kwargs)) if timing else None
                        bwd_elapsed = None
                        if timing and grads is not None:
                            fwd, bwd = _functions(check, ops)
                            out0, ws = fwd(*args, **kwargs)
                            g = _grad_arg(out0, grad_out, outs[0].dtype)
                            bwd_elapsed = _time(lambda: bwd(g, ws))
                except Exception as exc:  # noqa: BLE001 - reported as a row
                    rows.append(Row(check.name, direction, dtype.name, label, status="error",
                                    message=f"{type(exc).__name__}: {exc}"))
                    continue
                if backend_name == "numpy":
                    numpy_time, numpy_bwd_time = elapsed, bwd_elapsed
                fwd_row = Row(check.name, direction, dtype.name, label)
                worst = (0.0, 0.0, 0.0, True, "")
                for actual, expected in zip(outs, expected_outs):
                    res = _errors(actual, expected, check.factor, dtype)
                    worst = tuple(max(a, b) for a, b in zip(worst[:3], res[:3])) + (worst[3] and res[3],
                                                                                    worst[4] or res[4])
                fwd_row.max_abs, fwd_row.max_rel, fwd_row.err_over_tol = worst[:3]
                fwd_row.status = "ok" if worst[3] else "FAIL"
                fwd_row.message = worst[4]
                if timing and backend_name == "native" and numpy_time is not None and elapsed:
                    fwd_row.speed_ratio = numpy_time / elapsed
                rows.append(fwd_row)
                if grads is not None:
                    bwd_row = Row(check.name, "backward", dtype.name, label)
                    worst = (0.0, 0.0, 0.0, True, "")
                    for i, (actual, expected) in enumerate(zip(grads, expected_grads)):
                        if expected is None or actual is None:
                            if (expected is None) != (actual is None):
                                worst = worst[:3] + (False, f"gradient {i}: None on one side only")
                            continue
                        mag = None if check.grad_magnitude is None else check.grad_magnitude(grad_out, expected)
                        res = _errors(actual, expected, check.grad_factor or check.factor, dtype, mag)
                        worst = tuple(max(a, b) for a, b in zip(worst[:3], res[:3])) + (worst[3] and res[3],
                                                                                        worst[4] or res[4])
                    bwd_row.max_abs, bwd_row.max_rel, bwd_row.err_over_tol = worst[:3]
                    bwd_row.status = "ok" if worst[3] else "FAIL"
                    bwd_row.message = worst[4]
                    if bwd_elapsed and backend_name == "native" and numpy_bwd_time:
                        bwd_row.speed_ratio = numpy_bwd_time / bwd_elapsed
                    rows.append(bwd_row)
    return rows


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def format_table(rows: list[Row]) -> str:
    """The rows as a text table; err/tol <= 1 passes; speedup = numpy-backend time / native time."""
    header = f"{'op':<16} {'dir':<8} {'dtype':<7} {'impl':<14} {'max abs':>9} {'max rel':>9} {'err/tol':>8} " \
             f"{'speedup':>9}  status"
    lines = ["errors vs the float64 reference; err/tol <= 1 passes (seqblocks.testing.assert_close policy); "
             "speedup = numpy-backend time / native time", header, "-" * len(header)]
    for r in rows:
        def num(x, fmt):
            return format(x, fmt) if not math.isnan(x) else "-"
        lines.append(f"{r.op:<16} {r.direction:<8} {r.dtype:<7} {r.impl:<14} {num(r.max_abs, '9.2e'):>9} "
                     f"{num(r.max_rel, '9.2e'):>9} {num(r.err_over_tol, '8.3f'):>8} {num(r.speed_ratio, '9.2f'):>9}  "
                     f"{r.status}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m seqblocks check [--only NAME ...] [--dtype float32|float64] [--no-time]``;
    exit status 1 if any op is out of tolerance or raised."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m seqblocks check",
                                     description="every registered op on every backend and ISA vs the float64 reference")
    parser.add_argument("--only", nargs="*", default=None, help="op names (default: all)")
    parser.add_argument("--dtype", action="append", choices=("float32", "float64"), default=None)
    parser.add_argument("--no-time", action="store_true", help="skip the speed ratio")
    ns = parser.parse_args(argv)
    rows = compare(names=ns.only, dtypes=tuple(ns.dtype or ("float32", "float64")), timing=not ns.no_time)
    print(format_table(rows))
    bad = [r for r in rows if r.status in ("FAIL", "error")]
    absent = sorted({r.op for r in rows if r.status == "absent"})
    if absent:
        print(f"\nnot available yet (skipped): {', '.join(absent)}")
    if bad:
        print(f"\n{len(bad)} row(s) failed:", file=sys.stderr)
        for r in bad:
            print(f"  {r.op} {r.direction} {r.dtype} {r.impl}: {r.message}", file=sys.stderr)
        return 1
    print(f"\nall {len(rows) - sum(r.status == 'absent' for r in rows)} checks within tolerance")
    return 0
