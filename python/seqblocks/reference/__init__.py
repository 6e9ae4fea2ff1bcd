"""Pure-NumPy twins of ``seqblocks.ops`` with the same signatures: the numbers every native
kernel is checked against."""

from .gemm import gemm, linear, matmul
from .math import exp, gelu, sigmoid, tanh

__all__ = ["exp", "gelu", "gemm", "linear", "matmul", "sigmoid", "tanh"]
from .layer_norm import layer_norm_backward, layer_norm_forward
from .softmax import log_softmax_backward, log_softmax_forward, softmax_backward, softmax_forward
from .cross_entropy import cross_entropy_backward, cross_entropy_forward

__all__ += ["layer_norm_forward", "layer_norm_backward", "softmax_forward", "softmax_backward",
            "log_softmax_forward", "log_softmax_backward", "cross_entropy_forward", "cross_entropy_backward"]
