"""Accuracy and behaviour of the element-wise math kernels (cpp/math/) on every ISA.

Error policy (one helper, ``ulp_error``; the bounds are in ``MAX_ULP``):
- The error is |y - ref| in units in the last place of the output dtype, where ref is the
  float64 reference value (``seqblocks.reference`` evaluated on float64 inputs, NOT rounded to
  float32) and ulp(v) = 2^(e - p) for 2^(e-1) <= |v| < 2^e, p = 24 (float32) or 53 (float64).
- FTZ/DAZ: kernels run with denormals flushed. Subnormal inputs are read as (signed) zero, so
  the reference is evaluated at zero for them; where |ref| < smallest normal (FLT_MIN /
  DBL_MIN), any y with |y - ref| <= smallest normal is accepted (a flushed or gradual result).
- Overflow: float32 values beyond FLT_MAX (and y = +-inf) are compared as +-2^128, the point
  where rounding goes to infinity, with the ulp of the top binade: a reference just past the
  threshold accepts inf or FLT_MAX, and inf where the reference is far below FLT_MAX fails.
- NaN: y must be NaN exactly where the reference is NaN (any payload or sign).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import seqblocks
from seqblocks import ops, reference

ISAS = seqblocks.available_isas()

FUNCS = {
    "exp": (ops.exp, reference.exp),
    "tanh": (ops.tanh, reference.tanh),
    "sigmoid": (ops.sigmoid, reference.sigmoid),
    "gelu": (ops.gelu, reference.gelu),
    "gelu_tanh": (
        functools.partial(ops.gelu, approximate="tanh"),
        functools.partial(reference.gelu, approximate="tanh"),
    ),
}

# Bounds in ulp (policy above). Measured maxima are in the comments next to each function in
# cpp/math/ (float32: exhaustive over all 2^32 inputs with benchmarks/math_exhaustive.py).
# float64: the reference is float64 arithmetic too, itself up to ~1 ulp (tanh), 2 ulp (sigmoid)
# and 3.3 ulp (gelu, through libm erfc) from the exact value (mpmath spot check of 4000
# points), so the float64 bounds are the kernels' own error (<= 3 ulp by the same check) plus
# the reference's.
MAX_ULP = {
    np.float32: {"exp": 4, "tanh": 4, "sigmoid": 4, "gelu": 4, "gelu_tanh": 4},
    np.float64: {"exp": 2, "tanh": 4, "sigmoid": 5, "gelu": 6, "gelu_tanh": 4},
}


def _daz(x: np.ndarray) -> np.ndarray:
    """x with subnormals replaced by signed zero (what the kernels read)."""
    tiny = np.finfo(x.dtype).tiny
    return np.where(np.abs(x) < tiny, np.copysign(np.zeros_like(x), x), x)


def reference64(name: str, x: np.ndarray) -> np.ndarray:
    """The float64 reference value of FUNCS[name] at x (policy: subnormal x read as zero)."""
    with np.errstate(invalid="ignore"):  # signalling NaNs quieten in the cast
        return FUNCS[name][1](_daz(x).astype(np.float64))


def ulp_error(y: np.ndarray, ref: np.ndarray, dtype) -> np.ndarray:
    """Error of y against the float64 value ref, in ulps of dtype (see the module docstring)."""
    fi = np.finfo(dtype)
    p = fi.nmant + 1
    with np.errstate(invalid="ignore"):
        y = np.asarray(y, dtype=np.float64)
        ref = np.asarray(ref, dtype=np.float64)
    nan_y, nan_r = np.isnan(y), np.isnan(ref)
    if dtype == np.float32:
        edge = 2.0**fi.maxexp  # float32 overflow boundary, representable in float64
        y = np.clip(y, -edge, edge)
        ref = np.clip(ref, -edge, edge)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore", under="ignore"):
        diff = np.where(y == ref, 0.0, np.abs(y - ref))  # equal infinities: 0
        _, e = np.frexp(np.abs(ref))
        ulp = np.ldexp(1.0, np.minimum(e, fi.maxexp) - p)
        err = np.where(diff == 0, 0.0, diff / ulp)
    small = np.abs(ref) < fi.tiny
    err = np.where(small, np.where(diff <= fi.tiny, 0.0, np.inf), err)
    err = np.where(nan_y | nan_r, np.where(nan_y & nan_r, 0.0, np.inf), err)
    return np.where(np.isnan(err), np.inf, err)


def check(name: str, x: np.ndarray, y: np.ndarray, ref: np.ndarray, isa: str) -> float:
    dtype = x.dtype.type
    err = ulp_error(y, ref, dtype)
    worst = int(np.argmax(err))
    assert err[worst] <= MAX_ULP[dtype][name], (
        f"{name} {isa} {x.dtype}: {err[worst]:.3g} ulp at x={x[worst]!r} "
        f"({x[worst:worst + 1].view(np.uint32 if dtype == np.float32 else np.uint64)[0]:#x}): "
        f"y={y[worst]!r}, reference={ref[worst]!r}"
    )
    return float(err.max())


def _f32_sweep() -> np.ndarray:
    """Every 2039th float32 bit pattern (both signs, every binade, NaNs and infinities), plus
    dense grids where the functions change regime."""
    strided = np.arange(0, 2**32, 2039, dtype=np.uint64).astype(np.uint32).view(np.float32)
    dense = [
        np.linspace(-16, 16, 400_001, dtype=np.float32),  # the bulk of every function
        np.linspace(-105, 90, 100_001, dtype=np.float32),  # exp: whole finite-result range
        -np.geomspace(1e-8, 14, 100_000).astype(np.float32),  # GELU/sigmoid left tails
        np.geomspace(1e-30, 1, 20_000).astype(np.float32),
    ]
    # Around the thresholds: exp overflow (88.72) and underflow (-87.34 normal, -103.97 zero),
    # GELU's clamp (13.25), the switch between its two paths (-6.5; 6.5 clamps the fast one) and
    # the edges of the first intervals of its tables (fast: k = round(4.84375 |x|), 0.1032 and
    # 0.3097; tail: k = round(2.375 |x|), 0.2105 and 0.6316), tanh/sigmoid saturation.
    for c in (88.72283, -87.33654, -103.97208, 13.25, -13.25, 6.5, -6.5, 0.1032258, -0.1032258,
              0.3096774, -0.3096774, 0.2105263, -0.2105263, 0.6315789, -0.6315789, 9.01, -9.01,
              16.64, -16.64):
        c32 = np.float32(c)
        steps = np.arange(-2000, 2001)
        dense.append((c32.view(np.int32) + steps).astype(np.int32).view(np.float32))
    return np.concatenate([strided] + dense)


def _f64_sweep() -> np.ndarray:
    mags = np.geomspace(1e-310, 1e4, 100_000)
    return np.concatenate([
        mags, -mags, np.linspace(-40, 40, 200_001),
        np.linspace(-750, 712, 50_001),  # exp's whole finite-result range
        np.array([709.782712893384, 709.7827128933841, -708.3964185322641, -745.1332191019411,
                  -745.1332191019412, 0.5, -0.5, 24.0, -24.0, 40.0, -40.0]),
    ])


@functools.lru_cache(maxsize=None)
def _sweep(dtype_name: str):
    x = _f32_sweep() if dtype_name == "float32" else _f64_sweep()
    return x, {name: reference64(name, x) for name in FUNCS}


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", list(FUNCS))
@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_accuracy_sweep(isa, name, dtype_name):
    x, refs = _sweep(dtype_name)
    if isa == "scalar":
        x, ref = x[::4], refs[name][::4]  # the scalar path is slow: a quarter of the points
    else:
        ref = refs[name]
    with seqblocks.use_isa(isa):
        y = FUNCS[name][0](x)
    assert y.dtype == x.dtype and y.shape == x.shape
    check(name, x, y, ref, isa)


def _specials(dtype) -> np.ndarray:
    fi = np.finfo(dtype)
    uint = np.uint32 if dtype == np.float32 else np.uint64
    if dtype == np.float32:
        nans = np.array([0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF, 0x7FC12345],
                        dtype=uint).view(dtype)
    else:
        nans = np.array([0x7FF8000000000000, 0xFFF8000000000000, 0x7FF0000000000001,
                         0x7FFFFFFFFFFFFFFF], dtype=uint).view(dtype)
    sub = np.array([fi.smallest_subnormal, fi.tiny / 2, fi.tiny * (1 - fi.eps)], dtype=dtype)
    vals = np.array([0.0, -0.0, np.inf, -np.inf, fi.max, -fi.max, fi.tiny, -fi.tiny, 1.0, -1.0,
                     fi.eps, -fi.eps], dtype=dtype)
    return np.concatenate([vals, sub, -sub, nans])


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", list(FUNCS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_values(isa, name, dtype):
    x = _specials(dtype)
    with seqblocks.use_isa(isa):
        y = FUNCS[name][0](x)
    check(name, x, y, reference64(name, x), isa)
    # Exact values and signs of zero where the function defines them.
    s = {v: i for i, v in enumerate(["0", "-0", "inf", "-inf", "max", "-max"])}
    want = {
        "exp": [1, 1, np.inf, 0, np.inf, 0],
        "tanh": [0.0, -0.0, 1, -1, 1, -1],
        "sigmoid": [0.5, 0.5, 1, 0, 1, 0],
        "gelu": [0.0, -0.0, np.inf, -0.0, x[s["max"]], -0.0],
        "gelu_tanh": [0.0, -0.0, np.inf, -0.0, x[s["max"]], -0.0],
    }[name]
    got = y[:6]
    np.testing.assert_array_equal(got, np.array(want, dtype=dtype))
    np.testing.assert_array_equal(np.signbit(got), np.signbit(np.array(want, dtype=dtype)))
    assert np.isnan(y[np.isnan(x)]).all()


TAIL_LENGTHS = [1, 3, 7, 15, 16, 17, 31, 33, 63, 65, 127, 129, 1000]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tail_lengths_and_layouts(isa, dtype):
    rng = np.random.default_rng(7)
    base = (rng.standard_normal(4096) * 4).astype(dtype)
    with seqblocks.use_isa(isa):
        for name, (op, _) in FUNCS.items():
            full = op(base)
            for n in TAIL_LENGTHS:
                # A slice ending anywhere, and one starting at an odd offset (misaligned).
                np.testing.assert_array_equal(op(base[:n]), full[:n], err_msg=f"{name} n={n}")
                np.testing.assert_array_equal(op(base[5:5 + n]), full[5:5 + n], err_msg=f"{name} n={n}")
            # Non-contiguous inputs and shapes: strided, reversed, transposed 2-D, 0-d, empty.
            np.testing.assert_array_equal(op(base[::3]), full[::3])
            np.testing.assert_array_equal(op(base[::-1]), full[::-1])
            m = base[:4000].reshape(40, 100)
            np.testing.assert_array_equal(op(m.T), full[:4000].reshape(40, 100).T)
            assert op(base[:0]).shape == (0,)
            assert op(np.asarray(base[3])).shape == ()
            assert op(np.asarray(base[3])) == full[3]
            # The input is never written (outputs are fresh arrays).
            copy = base.copy()
            op(base)
            np.testing.assert_array_equal(base, copy)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_thread_count_does_not_change_results(isa, dtype):
    rng = np.random.default_rng(11)
    x = (rng.standard_normal(300_007) * 5).astype(dtype)
    saved = seqblocks.get_num_threads()
    try:
        with seqblocks.use_isa(isa):
            for name, (op, _) in FUNCS.items():
                seqblocks.set_num_threads(1)
                one = op(x)
                for nt in (2, 3):
                    seqblocks.set_num_threads(nt)
                    np.testing.assert_array_equal(op(x), one, err_msg=f"{name} threads={nt}")
    finally:
        seqblocks.set_num_threads(saved)


@pytest.mark.parametrize("isa", ISAS)
def test_gelu_each_lane_takes_its_own_path(isa):
    # float32 GELU evaluates x >= -6.5 by one polynomial and x < -6.5 through e^(-x^2/2); a
    # register (or block of four) holding both kinds computes both and selects per lane. Each
    # value must come out the same whatever its neighbours: alone, among its own kind, or mixed.
    rng = np.random.default_rng(5)
    edge = np.float32(-6.5)
    near = (edge.view(np.int32) + np.arange(-40, 41)).astype(np.int32).view(np.float32)
    x = np.concatenate([near, rng.uniform(-13.5, 8, 3000).astype(np.float32),
                        np.array([np.nan, -np.inf, np.inf, -0.0, 0.0], np.float32)])
    x = x[rng.permutation(x.size)]
    with seqblocks.use_isa(isa):
        mixed = ops.gelu(x)
        alone = np.array([ops.gelu(np.asarray(v)) for v in x], np.float32)
        tail = x < edge
        sorted_ = np.empty_like(x)
        sorted_[tail], sorted_[~tail] = ops.gelu(x[tail]), ops.gelu(x[~tail])
    np.testing.assert_array_equal(mixed, alone)
    np.testing.assert_array_equal(mixed, sorted_)
    check("gelu", x, mixed, reference64("gelu", x), isa)


def test_gelu_rejects_unknown_approximation():
    with pytest.raises(ValueError, match="approximate"):
        ops.gelu(np.zeros(3, np.float32), approximate="fast")


def test_ulp_error_policy():
    f32 = np.float32
    # 1 ulp of 1.0 in float32 is 2^-23 above 1 and 2^-24 below.
    assert ulp_error(np.array([1 + 2**-23], f32), np.array([1.0]), f32)[0] == 1
    assert ulp_error(np.array([1 - 2**-24], f32), np.array([1.0 - 2**-26]), f32)[0] == 0.75
    # below FLT_MIN: absolute error up to FLT_MIN accepted, more is not
    tiny = float(np.finfo(f32).tiny)
    assert ulp_error(np.array([0.0], f32), np.array([tiny * 0.9]), f32)[0] == 0
    assert ulp_error(np.array([2 * tiny], f32), np.array([tiny * 0.5]), f32)[0] == np.inf
    # overflow: inf is right just past FLT_MAX, wrong far below it
    big = float(np.finfo(f32).max)
    assert ulp_error(np.array([np.inf], f32), np.array([big * 1.01]), f32)[0] == 0
    assert ulp_error(np.array([np.inf], f32), np.array([big * 0.5]), f32)[0] > 1e6
    # NaN only where expected
    assert ulp_error(np.array([np.nan], f32), np.array([np.nan]), f32)[0] == 0
    assert ulp_error(np.array([1.0], f32), np.array([np.nan]), f32)[0] == np.inf
    assert ulp_error(np.array([np.nan], f32), np.array([1.0]), f32)[0] == np.inf
