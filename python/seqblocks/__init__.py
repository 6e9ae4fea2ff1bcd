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
    get_isa,
    get_num_threads,
    set_isa,
    set_num_threads,
    use_isa,
)
from . import ops, reference

__version__ = getattr(_core, "__version__", "0.0.0")

__all__ = [
    "available_isas",
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
