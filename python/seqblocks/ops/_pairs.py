"""Helpers shared by the ops pairs: grad_output checks and C-order views."""

from __future__ import annotations

import numpy as np

from ._checks import float_array, shape_str


def check_grad_output(grad_output, shape: tuple, dtype: np.dtype) -> np.ndarray:
    """grad_output as an array of the forward output's shape and dtype, else TypeError/ValueError."""
    dy = float_array(grad_output, "grad_output")
    if dy.dtype != dtype:
        raise TypeError(f"grad_output: expected dtype {dtype} (the forward's), got {dy.dtype}")
    if dy.shape != tuple(shape):
        raise ValueError(f"grad_output: expected shape {shape_str(tuple(shape))} (the forward output's), "
                         f"got {shape_str(dy.shape)}")
    return dy


def c_order(x: np.ndarray) -> np.ndarray:
    """x itself if C-contiguous, else a C-ordered copy (unlike np.ascontiguousarray, 0-d stays 0-d)."""
    return x if x.flags.c_contiguous else np.ascontiguousarray(x)
