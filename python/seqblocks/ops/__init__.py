"""Raw kernels over NumPy arrays (native C++ backend).

Each function checks its arguments (clear ``TypeError``/``ValueError`` naming the argument,
the expected and the actual value) and calls the kernel of the ISA in use.
"""

from .gemm import gemm, linear, matmul
from .math import exp, gelu, sigmoid, tanh

__all__ = ["exp", "gelu", "gemm", "linear", "matmul", "sigmoid", "tanh"]
