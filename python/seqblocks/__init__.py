"""seqblocks: sequence-model building blocks with a SIMD + OpenMP C++ core.

Layers (each talks only to the one below): ``seqblocks.ops`` (kernels over NumPy arrays),
``seqblocks.reference`` (pure-NumPy twins with the same signatures), ``seqblocks._core``
(the compiled module).
"""

from . import _core
from ._backend import backend, get_backend, set_backend
from ._runtime import (
    available_isas,
    cpu_info,
    empty_cache,
    get_isa,
    get_num_threads,
    set_isa,
    set_num_threads,
    use_isa,
)
from . import ops, reference
from ._random import get_rng_state, initial_seed, manual_seed, set_rng_state
from .autograd import Tensor, cat, enable_grad, is_grad_enabled, no_grad, set_grad_enabled, stack, tensor
from .serialization import CheckpointError, load, save
from . import nn, optim
from .check import compare

__version__ = getattr(_core, "__version__", "0.0.0")

__all__ = [
    "CheckpointError",
    "Tensor",
    "available_isas",
    "cat",
    "compare",
    "empty_cache",
    "enable_grad",
    "get_rng_state",
    "initial_seed",
    "is_grad_enabled",
    "load",
    "manual_seed",
    "nn",
    "no_grad",
    "optim",
    "save",
    "set_grad_enabled",
    "set_rng_state",
    "stack",
    "tensor",
    "backend",
    "get_backend",
    "set_backend",
    "cpu_info",
    "get_isa",
    "get_num_threads",
    "ops",
    "reference",
    "set_isa",
    "set_num_threads",
    "use_isa",
]
