"""Pure-NumPy twins of ``seqblocks.ops`` with the same signatures: the numbers every native
kernel is checked against."""

from .gemm import gemm, linear, matmul
from .math import exp, gelu, sigmoid, tanh

__all__ = ["exp", "gelu", "gemm", "linear", "matmul", "sigmoid", "tanh"]
