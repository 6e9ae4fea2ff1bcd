"""Argument checks shared by the ops: every failure names the argument, the expected and the
actual value."""

from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def shape_str(shape: tuple) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def float_array(x: object, name: str) -> np.ndarray:
    """``x`` as an ndarray of float32 or float64 (no copy for an ndarray); TypeError otherwise."""
    arr = x if isinstance(x, np.ndarray) else np.asarray(x)
    if arr.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected a float32 or float64 array, got dtype {arr.dtype}")
    return arr


def same_dtype(arrays: dict[str, np.ndarray]) -> np.dtype:
    dtypes = {name: a.dtype for name, a in arrays.items()}
    if len(set(dtypes.values())) > 1:
        listing = ", ".join(f"{name} is {dt}" for name, dt in dtypes.items())
        raise TypeError(f"expected arrays of one dtype, got {listing}")
    return next(iter(dtypes.values()))


def ndim_in(arr: np.ndarray, name: str, allowed: tuple[int, ...]) -> None:
    if arr.ndim not in allowed:
        want = " or ".join(f"{d}-D" for d in allowed)
        raise ValueError(f"{name}: expected a {want} array, got shape {shape_str(arr.shape)}")
