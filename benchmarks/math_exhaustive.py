"""Exhaustive accuracy check of the float32 math kernels: every one of the 2^32 float32 inputs.

    PYTHONPATH=<built package> python benchmarks/math_exhaustive.py [--isa avx512] [--funcs exp,tanh]

Uses the error policy of tests/test_math.py (ulp of the float64 reference value, subnormal
inputs read as zero, absolute error up to FLT_MIN where the reference is below FLT_MIN,
overflow boundary at 2^128). The float64 reference of GELU's erf form needs erfc on arrays:
scipy.special.erfc if importable (fast), else math.erfc per element (hours). Not run in tests;
prints the maximum error per function and where it occurs.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

import seqblocks
from seqblocks import ops, reference

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_math import _daz, ulp_error  # noqa: E402  (the one error policy)

try:
    from scipy.special import erfc as _erfc_vec
except ImportError:  # pragma: no cover
    _erfc_vec = np.vectorize(math.erfc, otypes=[np.float64])


def _gelu_erf_ref(w: np.ndarray) -> np.ndarray:
    # float64 inputs that came from float32: the rounding of -w/sqrt(2) (2^-53 relative) costs
    # at most ~2 z^2 2^-53 relative, below 2^-40 for |z| < 10 (where float32 results are normal).
    with np.errstate(invalid="ignore", under="ignore"):
        out = w * (0.5 * _erfc_vec(-w / math.sqrt(2.0)))
    return np.where(w == -np.inf, -0.0, out)


REFS = {
    "exp": reference.exp,
    "tanh": reference.tanh,
    "sigmoid": reference.sigmoid,
    "gelu": _gelu_erf_ref,
    "gelu_tanh": lambda w: reference.gelu(w, approximate="tanh"),
}
OPS = {
    "exp": ops.exp,
    "tanh": ops.tanh,
    "sigmoid": ops.sigmoid,
    "gelu": ops.gelu,
    "gelu_tanh": lambda x: ops.gelu(x, approximate="tanh"),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--isa", default=seqblocks.available_isas()[0])
    ap.add_argument("--funcs", default=",".join(OPS))
    ap.add_argument("--chunk-bits", type=int, default=24)
    args = ap.parse_args()
    funcs = args.funcs.split(",")
    seqblocks.set_isa(args.isa)
    worst = {f: (0.0, None) for f in funcs}
    chunk = 1 << args.chunk_bits
    t0 = time.time()
    for start in range(0, 1 << 32, chunk):
        x = np.arange(start, start + chunk, dtype=np.uint64).astype(np.uint32).view(np.float32)
        with np.errstate(invalid="ignore"):
            x64 = _daz(x).astype(np.float64)
        for f in funcs:
            y = OPS[f](x)
            with np.errstate(all="ignore"):
                err = ulp_error(y, REFS[f](x64), np.float32)
            i = int(np.argmax(err))
            if err[i] > worst[f][0]:
                worst[f] = (float(err[i]), (float(x[i]), float(y[i])))
        if (start // chunk) % 32 == 31:
            print(f"{(start + chunk) / 2**32:6.1%}  {time.time() - t0:6.0f}s  "
                  + "  ".join(f"{f}={worst[f][0]:.3f}" for f in funcs), flush=True)
    print(f"isa={args.isa}  all 2^32 float32 inputs  ({time.time() - t0:.0f}s)")
    for f in funcs:
        e, where = worst[f]
        print(f"  {f:10s} max {e:.3f} ulp" + (f"  at x={where[0]!r} (y={where[1]!r})" if where else ""))


if __name__ == "__main__":
    main()
