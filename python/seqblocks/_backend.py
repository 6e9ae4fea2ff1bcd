"""Backend choice for ``seqblocks.ops``: "native" (the C++ kernels) or "numpy" (the pure-NumPy
twins in ``seqblocks.reference``). Any model runs on either, which is how parity is checked from
one op up to a whole training step.

The choice is per thread (a ``contextvars.ContextVar``), so ``with seqblocks.backend("numpy"):``
in one thread does not change what another thread runs.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

BACKENDS = ("native", "numpy")

_current: contextvars.ContextVar[str] = contextvars.ContextVar("seqblocks_backend", default="native")


def _check(name: object) -> str:
    if name not in BACKENDS:
        raise ValueError(f"name: expected one of {', '.join(map(repr, BACKENDS))}, got {name!r}")
    return name  # type: ignore[return-value]


def get_backend() -> str:
    """The backend ``seqblocks.ops`` uses in this thread: "native" or "numpy"."""
    return _current.get()


def set_backend(name: str) -> None:
    """Use ``name`` ("native" or "numpy") for ``seqblocks.ops`` in this thread from now on."""
    _current.set(_check(name))


@contextlib.contextmanager
def backend(name: str) -> Iterator[None]:
    """``with seqblocks.backend("numpy"): ...`` runs the block on that backend, then restores."""
    token = _current.set(_check(name))
    try:
        yield
    finally:
        _current.reset(token)


def use_reference() -> bool:
    """True when ops should run their ``seqblocks.reference`` twin."""
    return _current.get() == "numpy"
